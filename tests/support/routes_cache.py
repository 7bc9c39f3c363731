"""Werkzeug compiles every route of every app it builds: it parses the rule into the parts its
matcher uses, and it generates and compiles Python code for two URL builders (about 70 routes,
~10 ms of CPU per `create_app`). The in-process floor builds an app per test, so it would spend a
third of its CPU there. What `Rule.compile` makes is a pure function of the rule's text, its map's
settings and converters, and its defaults, so one compilation per distinct rule serves every app.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from werkzeug.routing.rules import Rule

_original = Rule.compile
_compiled: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def _cached_compile(self: Rule) -> None:
    m = self.map
    key = (
        self.rule,
        self.host if m.host_matching else self.subdomain,
        m.host_matching,
        self.merge_slashes,
        tuple(sorted(m.converters.items(), key=itemgetter(0))),
        tuple(sorted((str(k), repr(v)) for k, v in (self.defaults or {}).items())),
    )
    done = _compiled.get(key)
    if done is None:
        _original(self)
        # The converters are made for the first map (they keep it); none of werkzeug's reads it.
        done = _compiled[key] = (
            self._parts,
            self._trace,
            self._converters,
            frozenset(self.arguments),
            self._build.__func__,
            self._build_unknown.__func__,
        )  # type: ignore[attr-defined]
        return
    parts, trace, converters, arguments, build, build_unknown = done
    self._parts, self._trace, self._converters = list(parts), list(trace), dict(converters)
    self.arguments |= arguments
    self._build = build.__get__(self, None)
    self._build_unknown = build_unknown.__get__(self, None)


def cache_rule_compilation() -> None:
    if Rule.compile is _original:  # werkzeug's, as this module found it
        Rule.compile = _cached_compile  # type: ignore[method-assign]
