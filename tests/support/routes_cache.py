"""Werkzeug compiles two URL builders for every route of every app it builds, by generating and
compiling Python code (about 70 routes, ~40 ms of CPU per `create_app`). The in-process floor builds
an app per test, so it would spend a third of its CPU there. A builder is a pure function of the
rule's parsed parts and defaults, so one compiled per distinct rule serves every app.
"""

from __future__ import annotations

from typing import Any

from werkzeug.routing.rules import Rule

_original = Rule._compile_builder
_builders: dict[tuple[Any, ...], Any] = {}


def _cached_compile_builder(self: Rule, append_unknown: bool = True) -> Any:
    defaults = self.defaults or {}
    key = (
        self.rule,
        append_unknown,
        tuple(self._trace),
        tuple(sorted((str(k), repr(v)) for k, v in defaults.items())),
        tuple(sorted((name, type(conv).__qualname__, repr(vars(conv))) for name, conv in self._converters.items()
                     if name in defaults)),
    )
    builder = _builders.get(key)
    if builder is None:
        builder = _builders[key] = _original(self, append_unknown)
    return builder


def cache_url_builders() -> None:
    if getattr(Rule, "_compile_builder", None) is _original:  # werkzeug's, as this module found it
        Rule._compile_builder = _cached_compile_builder  # type: ignore[method-assign]
