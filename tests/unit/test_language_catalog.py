"""The language catalog of the distributed mode: the union of what live workers advertise."""

from __future__ import annotations

import pytest

from livecode.errors import ValidationError
from livecode.infra.languages import HEARTBEAT_KEY, LIBRARIES_KEY, WorkerLanguages, advertised_libraries
from livecode.infra.registry import MemoryWorkerRegistry
from livecode.sandbox.languages import Language, all_languages, get_language, installed_libraries
from livecode.services.validation import check_language

DECLARED = {lang.id for lang in all_languages()}


def catalog(*workers: dict[str, str] | None) -> WorkerLanguages:
    registry = MemoryWorkerRegistry()
    for i, langs in enumerate(workers):
        registry.beat(f"w{i}", {"pid": i} if langs is None else {"pid": i, HEARTBEAT_KEY: langs}, ttl_s=60)
    return WorkerLanguages(registry, refresh_s=0)


def test_no_live_worker_lists_every_declared_language_unavailable_and_accepts_them() -> None:
    c = catalog()
    listed = c.listing()
    assert {lang["id"] for lang in listed} == DECLARED and not any(lang["available"] for lang in listed)
    assert c.runnable() is None
    check_language("go", c)  # queued until a worker comes up
    with pytest.raises(ValidationError) as exc:
        check_language("cobol", c)
    assert exc.value.code == "UNSUPPORTED_LANGUAGE" and exc.value.details["supported"] == sorted(DECLARED)


def test_the_union_over_live_workers_with_their_versions() -> None:
    c = catalog({"python": "Python 3.11.2", "c": "gcc (Debian 12.2.0-14) 12.2.0"},
                {"python": "Python 3.11.2", "go": "go version go1.19.8 linux/amd64"},
                {"python": "Python 3.12.1"})
    langs = {lang["id"]: lang for lang in c.listing()}
    assert {i for i, lang in langs.items() if lang["available"]} == {"python", "c", "go"}
    assert (langs["python"]["version"], langs["c"]["version"], langs["go"]["version"]) == ("3.11.2", "12.2.0", "1.19.8")
    assert langs["rust"] == {"id": "rust", "name": langs["rust"]["name"], "version": "", "available": False,
                             "compiled": True, "source_file": "main.rs", "libraries": []}
    check_language("c", c)
    with pytest.raises(ValidationError) as exc:
        check_language("rust", c)
    assert exc.value.code == "LANGUAGE_UNAVAILABLE" and "live worker" in exc.value.message
    assert exc.value.details["supported"] == ["c", "go", "python"]


def test_a_worker_that_does_not_advertise_makes_the_answer_unknown() -> None:
    # An older worker (during a rolling upgrade) may have any toolchain: refuse nothing declared.
    c = catalog({"python": "Python 3.11.2"}, None)
    assert c.runnable() is None
    check_language("rust", c)


def test_the_registry_is_read_at_most_once_per_refresh() -> None:
    registry = MemoryWorkerRegistry()
    c = WorkerLanguages(registry, refresh_s=3600)
    assert c.runnable() is None
    registry.beat("w", {HEARTBEAT_KEY: {"python": "Python 3.11.2"}}, ttl_s=60)
    assert c.runnable() is None  # the snapshot of a moment ago
    c._read_at = -float("inf")
    assert c.runnable() == {"python"}


def test_an_unreadable_registry_keeps_what_workers_said_last() -> None:
    import redis

    class Flaky(MemoryWorkerRegistry):
        down = False

        def alive(self) -> dict[str, dict[str, object]]:
            if self.down:
                raise redis.ConnectionError("refused")
            return super().alive()

    registry = Flaky()
    registry.beat("w", {HEARTBEAT_KEY: {"python": "Python 3.11.2"}}, ttl_s=60)
    c = WorkerLanguages(registry, refresh_s=0)
    assert c.runnable() == {"python"}
    registry.down = True
    assert c.runnable() == {"python"}
    assert [lang["id"] for lang in c.listing() if lang["available"]] == ["python"]


def test_libraries_are_the_union_of_what_live_workers_have() -> None:
    registry = MemoryWorkerRegistry()
    registry.beat("a", {HEARTBEAT_KEY: {"python": "Python 3.11.2"}, LIBRARIES_KEY: {"python": {"numpy": "1.24.2"}}},
                  ttl_s=60)
    registry.beat("b", {HEARTBEAT_KEY: {"python": "Python 3.11.2"}, LIBRARIES_KEY: "garbage"}, ttl_s=60)
    langs = {lang["id"]: lang for lang in WorkerLanguages(registry, refresh_s=0).listing()}
    assert langs["python"]["libraries"] == [{"name": "numpy", "version": "1.24.2"}]
    assert langs["go"]["libraries"] == []


def test_a_declared_library_that_is_not_installed_is_not_listed(tmp_path: object) -> None:
    from pathlib import Path
    from types import MappingProxyType

    base = Path(str(tmp_path))
    (base / "present").mkdir()
    (base / "present-2.5.1.egg-info").mkdir()
    python = get_language("python")
    assert python is not None
    lang = Language(**{**python.__dict__, "libraries": MappingProxyType(
        {"present": str(base / "present"), "absent": str(base / "absent")})})
    assert installed_libraries(lang) == {"present": "2.5.1"}
    assert advertised_libraries([lang]) == ({"python": {"present": "2.5.1"}} if lang.available else {})
