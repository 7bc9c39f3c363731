"""Which languages can run: the answer of `GET /api/v1/languages` and of the language check on
every submission.

Embedded, the process is its own worker and probes its toolchains (`LocalLanguages`). Distributed,
the API host needs no toolchain: each worker advertises the languages it can run, with their
toolchain versions, in its heartbeat, and `WorkerLanguages` takes the union over live workers.

With no live worker yet (or a worker of an older version that advertises nothing) nobody can say
what is installed: the listing shows every language declared in languages.toml as unavailable,
and a run of a declared language is still accepted and queued, to run when a worker comes up (as
when every worker is down). Once live workers advertise, a language none of them has is refused
with 400 LANGUAGE_UNAVAILABLE.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any, Protocol

import redis

from ..sandbox.languages import (
    Language,
    all_languages,
    installed_libraries,
    language_entry,
    list_languages,
    toolchain_version,
)
from .registry import WorkerRegistry

log = logging.getLogger(__name__)

# The heartbeat field: {language id: toolchain version line} of what the worker can run.
HEARTBEAT_KEY = "languages"
# And {language id: {library: version}} of the libraries it has for them (languages.toml).
LIBRARIES_KEY = "libraries"


class LanguageCatalog(Protocol):
    def listing(self) -> list[dict[str, Any]]:
        """Every declared language: id, name, version, available, compiled, source_file."""
        ...

    def runnable(self) -> set[str] | None:
        """The ids that can run now; None when that cannot be known (no worker has said yet)."""
        ...


def advertised(languages: list[Language] | None = None) -> dict[str, str]:
    """What this host can run, for its heartbeat: {id: toolchain version line}. Probed once per
    process (the versions are cached)."""
    out = {}
    for lang in languages if languages is not None else all_languages():
        version = toolchain_version(lang) if lang.available else ""
        if version:
            out[lang.id] = version
    return out


def advertised_libraries(languages: list[Language] | None = None) -> dict[str, dict[str, str]]:
    """The declared libraries this host has, per language, for its heartbeat."""
    out = {}
    for lang in languages if languages is not None else all_languages():
        found = installed_libraries(lang) if lang.available else {}
        if found:
            out[lang.id] = found
    return out


class LocalLanguages:
    """This host's own toolchains (the embedded mode, whose process is the worker)."""

    def listing(self) -> list[dict[str, Any]]:
        return list_languages()

    def runnable(self) -> set[str] | None:
        return set(advertised())


class WorkerLanguages:
    """The union of what live workers advertise. The registry is read at most once per `refresh_s`
    per process, so a submission costs no extra round trip most of the time."""

    def __init__(self, registry: WorkerRegistry, refresh_s: float = 1.0) -> None:
        self.registry, self.refresh_s = registry, refresh_s
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._offers: dict[str, list[str]] | None = None  # id -> versions; None: nobody said
        self._libraries: dict[str, dict[str, str]] = {}  # id -> {library: version}, over live workers

    def _snapshot(self) -> dict[str, list[str]] | None:
        with self._lock:
            if time.monotonic() - self._read_at < self.refresh_s:
                return self._offers
            self._read_at = time.monotonic()
            try:
                workers = self.registry.alive()
            except redis.RedisError as exc:
                # Neither a listing nor a submission needs Redis to be answered (the row is the
                # truth; /api/v1/languages is a readiness probe): keep what workers said last.
                log.warning("worker registry unreadable, languages as last seen: %s", exc)
                return self._offers
            offers: dict[str, list[str]] = {}
            libraries: dict[str, dict[str, str]] = {}
            for info in workers.values():
                libs = info.get(LIBRARIES_KEY)
                if isinstance(libs, dict):
                    for lang_id, found in libs.items():
                        if isinstance(found, dict):
                            libraries.setdefault(str(lang_id), {}).update({str(k): str(v) for k, v in found.items()})
                langs = info.get(HEARTBEAT_KEY)
                if not isinstance(langs, dict):  # an older worker: it does not say what it has
                    workers = {}
                    break
                for lang_id, version in langs.items():
                    offers.setdefault(str(lang_id), []).append(str(version))
            self._offers = offers if workers else None
            self._libraries = libraries
            return self._offers

    def listing(self) -> list[dict[str, Any]]:
        offers = self._snapshot() or {}
        out = []
        for lang in all_languages():
            versions = offers.get(lang.id, [])
            # Workers of one deployment normally agree; when they do not, the most common wins.
            version = Counter(versions).most_common(1)[0][0] if versions else ""
            out.append(language_entry(lang, version, bool(versions), self._libraries.get(lang.id)))
        return out

    def runnable(self) -> set[str] | None:
        offers = self._snapshot()
        return None if offers is None else set(offers)
