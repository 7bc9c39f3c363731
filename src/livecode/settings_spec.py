"""How a setting is declared, read from the environment and written into `.env.example`.

A setting is a dataclass field whose metadata carries its environment variable, its doc, and
optionally a parser and the section of `.env.example` it opens (as Piston's config.js declares
its options: one table, read by the loader and by the generator alike). `livecode.config`
declares `Settings` this way, and includes the sandbox's own `SandboxConfig` (declared with the
same metadata inside the sandbox package) as a nested field.
"""

from __future__ import annotations

import ipaddress
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any


class ConfigError(RuntimeError):
    """A setting is missing or invalid; the message says which and how to fix it."""


# ---- parsers: an environment value in, a typed value out, a message a person can act on ---------

@dataclass(frozen=True)
class Parser:
    """Text, as given."""

    def convert(self, raw: str) -> Any:
        return raw

    def check(self, value: Any) -> None:
        """Raise ValueError("must ...") when `value` is not allowed."""

    def parse(self, raw: str) -> Any:
        value = self.convert(raw)
        self.check(value)
        return value

    def render(self, value: Any) -> str:
        return "" if value is None else str(value)


@dataclass(frozen=True)
class Text(Parser):
    choices: tuple[str, ...] = ()
    case: str = ""  # "lower" or "upper": the value is folded to it
    strip: bool = False

    def convert(self, raw: str) -> Any:
        raw = raw.strip() if self.strip else raw
        return raw.lower() if self.case == "lower" else raw.upper() if self.case == "upper" else raw

    def check(self, value: Any) -> None:
        if self.choices and value not in self.choices:
            raise ValueError("must be " + " or ".join(repr(c) for c in self.choices))


@dataclass(frozen=True)
class Integer(Parser):
    minimum: int | None = None
    no_cap: bool = False  # 0 switches the limit off (said in the message)
    at_least: int | None = None  # a smaller value is raised to this

    def convert(self, raw: str) -> Any:
        try:
            return int(raw)
        except ValueError:
            raise ValueError("must be an integer") from None

    def parse(self, raw: str) -> Any:
        value = super().parse(raw)
        return value if self.at_least is None else max(self.at_least, value)

    def check(self, value: Any) -> None:
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be {self.minimum}{' (no cap)' if self.no_cap else ''} or more")


@dataclass(frozen=True)
class Seconds(Parser):
    positive: bool = False

    def convert(self, raw: str) -> Any:
        try:
            return float(raw)
        except ValueError:
            raise ValueError("must be a number of seconds") from None

    def check(self, value: Any) -> None:
        if self.positive and value <= 0:
            raise ValueError("must be more than 0 seconds")

    def render(self, value: Any) -> str:
        return f"{value:g}"


@dataclass(frozen=True)
class Boolean(Parser):
    def convert(self, raw: str) -> Any:
        return raw.strip().lower() in {"1", "true", "yes", "on"}

    def render(self, value: Any) -> str:
        return "true" if value else "false"


@dataclass(frozen=True)
class PathValue(Parser):
    def convert(self, raw: str) -> Any:
        return Path(raw)


@dataclass(frozen=True)
class Networks(Parser):
    """A comma-separated list of addresses or networks, e.g. `10.0.0.5, 10.1.0.0/16`."""

    def convert(self, raw: str) -> Any:
        return tuple(a.strip() for a in raw.split(",") if a.strip())

    def check(self, value: Any) -> None:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"lists {network!r}, which is not an address or network "
                                 "(e.g. 10.0.0.5 or 10.0.0.0/8)") from None

    def render(self, value: Any) -> str:
        return ",".join(value)


def _inferred(default: Any) -> Parser:
    for kind, parser in ((bool, Boolean()), (int, Integer()), (float, Seconds()), (Path, PathValue())):
        if isinstance(default, kind):
            return parser
    return Parser()


# ---- declaring ------------------------------------------------------------------------------

def setting(env: str | None, default: Any, doc: str, *, parse: Parser | None = None, section: str = "",
            factory: Any = None, example: str | None = None, required: bool = False,
            keep_empty: bool = False, by_mode: Mapping[str, Any] | None = None) -> Any:
    """Declare one setting (a dataclass field).

    env: its environment variable (None: not read from the environment, only set in code).
    parse: how its text becomes the value (default: from the default's type).
    section: `.env.example` opens a section with this title before it.
    factory: computes the default when it depends on the host (then `default` is ignored).
    example: the value `.env.example` shows instead of the default; required: shown uncommented.
    keep_empty: an empty variable is the value "" (otherwise empty means unset: the default).
    by_mode: the default per mode ("embedded"/"distributed") where they differ.
    """
    meta = {"env": env, "doc": doc, "parse": parse, "section": section, "example": example,
            "required": required, "keep_empty": keep_empty, "by_mode": dict(by_mode or {})}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def nested(factory: Any, section: str = "") -> Any:
    """A group of settings declared by another dataclass (the sandbox's), read the same way."""
    return field(default_factory=factory, metadata={"nested": True, "section": section})


@dataclass(frozen=True)
class Declaration:
    """One setting as the loader and the generator see it."""

    name: str
    env: str | None
    doc: str
    parser: Parser
    default: Any
    section: str
    example: str | None
    required: bool
    keep_empty: bool
    by_mode: Mapping[str, Any]

    def shown(self) -> str:
        """The value `.env.example` shows."""
        return self.example if self.example is not None else self.parser.render(self.default)


def _declaration(f: Field[Any], section: str = "") -> Declaration:
    meta = f.metadata
    if f.default is not MISSING:
        default = f.default
    elif f.default_factory is not MISSING:
        default = f.default_factory()
    else:
        raise TypeError(f"setting {f.name} has no default")
    return Declaration(name=f.name, env=meta.get("env"), doc=meta.get("doc", ""),
                       parser=meta.get("parse") or _inferred(default), default=default, section=section,
                       example=meta.get("example"), required=bool(meta.get("required")),
                       keep_empty=bool(meta.get("keep_empty")), by_mode=meta.get("by_mode") or {})


def declarations(cls: type) -> Iterator[Declaration]:
    """Every setting of `cls`, nested groups included, in declaration order."""
    for f in fields(cls):
        section = f.metadata.get("section") or ""
        if not f.metadata.get("nested"):
            yield _declaration(f, section)
            continue
        for i, d in enumerate(declarations(f.default_factory)):  # type: ignore[arg-type]
            yield replace(d, section=d.section or (section if i == 0 else ""))


# ---- reading ----------------------------------------------------------------------------------

def read(cls: type, environ: Mapping[str, str], mode: str) -> dict[str, Any]:
    """Values for `cls`'s fields from `environ`: a nested group becomes an instance of its class.
    Raises ConfigError naming the variable, what it must be and what it was."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.metadata.get("nested"):
            group: Any = f.default_factory
            values[f.name] = group(**read(group, environ, mode))
            continue
        d = _declaration(f)
        raw = environ.get(d.env) if d.env else None
        if raw is None or (raw == "" and not d.keep_empty):
            values[f.name] = d.by_mode.get(mode, d.default)
            continue
        try:
            values[f.name] = d.parser.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{d.env} {exc}, got {raw!r}") from None
    return values


def check(cls: type, values: Mapping[str, Any]) -> None:
    """The same checks for values set in code (overrides) as for values read from the environment."""
    for f in fields(cls):
        if f.name not in values or f.metadata.get("nested"):
            continue
        d = _declaration(f)
        try:
            d.parser.check(values[f.name])
        except ValueError as exc:
            raise ConfigError(f"{d.env or f.name} {exc}, got {values[f.name]!r}") from None


# ---- .env.example -------------------------------------------------------------------------------

ENV_EXAMPLE_HEADER = """\
# LiveCode configuration. Copy to .env in the working directory (read at start-up; or name the
# file with LIVECODE_ENV_FILE) or set in the environment, which wins over the file.
# `livecode serve` (embedded) needs none of these; `livecode api` / `livecode worker`
# (distributed) need DATABASE_URL, REDIS_URL and SECRET_KEY.
#
# Generated from the declarations in src/livecode/config.py and src/livecode/sandbox/config.py by
# `livecode config env-example > .env.example`; edit those, not this file.
"""


def _comment(doc: str) -> list[str]:
    """`doc` as comment lines: paragraphs wrapped, lines starting with spaces kept as they are."""
    out: list[str] = []
    for line in doc.split("\n"):
        if line.startswith(" "):
            out.append("# " + line)
        elif line:
            out.extend(textwrap.wrap(line, 98, initial_indent="# ", subsequent_indent="# "))
    return out


def env_example(cls: type) -> str:
    """The text of `.env.example`: every setting with an environment variable, with its doc."""
    assert is_dataclass(cls)
    lines = [ENV_EXAMPLE_HEADER.rstrip("\n")]
    for d in declarations(cls):
        if d.env is None:
            continue
        if d.section:
            lines += ["", f"# --- {d.section} ".ljust(98, "-")]
        lines += _comment(d.doc)
        lines.append(f"{'' if d.required else '# '}{d.env}={d.shown()}")
    return "\n".join(lines) + "\n"
