"""The language registry, loaded from languages.toml, with cached toolchain versions."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

_REGISTRY_FILE = Path(__file__).with_name("languages.toml")
_VERSION_TIMEOUT_S = 10.0
_VERSION_RE = re.compile(r"\d+\.\d+(?:\.\d+)*")


@dataclass(frozen=True)
class Language:
    id: str
    name: str
    source_file: str
    run: tuple[str, ...]
    version_cmd: tuple[str, ...]
    compile: tuple[str, ...] | None = None
    artifacts: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()  # globs of the files `compile` takes ("{sources}"; program.py)
    env: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    compile_env: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # name -> the host path whose presence says the library is installed (languages.toml)
    libraries: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # The run command may start before its entry file exists (warm.py): an interpreter that opens
    # its script once, at the end of its start-up, and reads it through any file.
    warm_start: bool = False
    # ... unless the program has a file of one of these names (read before the entry: Node decides
    # between CommonJS and ES modules from package.json before it opens its main module).
    warm_start_unless: tuple[str, ...] = ()

    @property
    def compiled(self) -> bool:
        return self.compile is not None

    def tools(self) -> list[str]:
        """Absolute paths of the host executables this language needs."""
        cmds = [self.run[0], self.version_cmd[0]]
        if self.compile:
            cmds.append(self.compile[0])
        return [c for c in cmds if c.startswith("/")]

    @property
    def available(self) -> bool:
        return all(os.access(t, os.X_OK) for t in self.tools())


def _str_tuple(entry: dict[str, object], key: str, lang_id: str) -> tuple[str, ...]:
    value = entry.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"languages.toml [{lang_id}].{key} must be a non-empty list of strings")
    return tuple(value)


def _bool(entry: dict[str, object], key: str, lang_id: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"languages.toml [{lang_id}].{key} must be true or false")
    return value


def _str_map(entry: dict[str, object], key: str) -> MappingProxyType[str, str]:
    value = entry.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"languages.toml {key} must be a table")
    return MappingProxyType({str(k): str(v) for k, v in value.items()})


def load_registry(path: Path = _REGISTRY_FILE) -> dict[str, Language]:
    with path.open("rb") as f:
        data = tomllib.load(f)
    langs: dict[str, Language] = {}
    for lang_id, entry in data.items():
        if not isinstance(entry, dict):
            raise ValueError(f"languages.toml: [{lang_id}] must be a table")
        source_file = str(entry["source_file"])
        if "/" in source_file or source_file.startswith("."):
            raise ValueError(f"languages.toml [{lang_id}].source_file must be a plain name")
        compile_cmd = _str_tuple(entry, "compile", lang_id) if "compile" in entry else None
        if compile_cmd and "{sources}" in compile_cmd and "sources" not in entry:
            raise ValueError(f"languages.toml [{lang_id}]: compile names {{sources}} but no `sources` globs")
        langs[lang_id] = Language(
            id=lang_id,
            name=str(entry["name"]),
            source_file=source_file,
            run=_str_tuple(entry, "run", lang_id),
            version_cmd=_str_tuple(entry, "version", lang_id),
            compile=compile_cmd,
            artifacts=_str_tuple(entry, "artifacts", lang_id) if compile_cmd else (),
            sources=_str_tuple(entry, "sources", lang_id) if "sources" in entry else (),
            env=_str_map(entry, "env"),
            compile_env=_str_map(entry, "compile_env"),
            libraries=_str_map(entry, "libraries"),
            warm_start=_bool(entry, "warm_start", lang_id),
            warm_start_unless=_str_tuple(entry, "warm_start_unless", lang_id) if "warm_start_unless" in entry else (),
        )
    return langs


_REGISTRY = load_registry()
_versions: dict[str, str] = {}
_versions_lock = threading.Lock()


def _detect_version(lang: Language) -> str:
    """Full first line of the version command's output; "" when absent or broken."""
    if not lang.available:
        return ""
    try:
        proc = subprocess.run(
            list(lang.version_cmd),
            capture_output=True,
            timeout=_VERSION_TIMEOUT_S,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    text = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else ""


def toolchain_version(lang: Language) -> str:
    """The toolchain's version line, detected once per process."""
    with _versions_lock:
        if lang.id in _versions:
            return _versions[lang.id]
    version = _detect_version(lang)
    with _versions_lock:
        return _versions.setdefault(lang.id, version)


def installed_libraries(lang: Language) -> dict[str, str]:
    """The declared libraries present on this host: {name: version} ("" when no package metadata
    beside it says which). A library whose path is missing is left out, never assumed."""
    found = {}
    for name, marker in lang.libraries.items():
        path = Path(marker)
        if not path.exists():
            continue
        found[name] = ""
        for meta in sorted(path.parent.glob(f"{path.name}-*")):
            if meta.suffix in (".dist-info", ".egg-info"):
                found[name] = meta.name[len(path.name) + 1 :].removesuffix(meta.suffix).split("-")[0]
                break
    return found


def libraries_listing(found: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "version": version} for name, version in sorted(found.items())]


def short_version(version_line: str) -> str:
    m = _VERSION_RE.search(version_line)
    return m.group(0) if m else version_line


def get_language(lang_id: str) -> Language | None:
    return _REGISTRY.get(lang_id)


def all_languages() -> list[Language]:
    return list(_REGISTRY.values())


def list_languages() -> list[dict[str, object]]:
    """Every registered language with its version and whether its toolchain is present."""
    langs = all_languages()
    missing = [lg for lg in langs if lg.id not in _versions]
    if missing:
        with ThreadPoolExecutor(max_workers=len(missing)) as pool:
            list(pool.map(toolchain_version, missing))
    return [language_entry(lg, version, lg.available and bool(version), installed_libraries(lg))
            for lg in langs for version in (toolchain_version(lg),)]


def language_entry(
    lang: Language, version_line: str, available: bool, libraries: dict[str, str] | None = None
) -> dict[str, object]:
    """One language as GET /api/v1/languages lists it, whoever found its toolchain's version and
    its libraries ({name: version}, as installed_libraries gives them)."""
    return {"id": lang.id, "name": lang.name, "version": short_version(version_line), "available": available,
            "compiled": lang.compiled, "source_file": lang.source_file,
            "libraries": libraries_listing(libraries or {}) if available else []}
