"""Session history end to end on PostgreSQL with a real worker and the real sandbox: each run
names the version it ran, a restore brings back code that then runs as it did, and the retention
statement (the storage job's) keeps labelled checkpoints on PostgreSQL too."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import Cluster
from tests.support.client import ApiClient

pytestmark = [pytest.mark.integration, pytest.mark.sandbox]

SESSIONS = "/api/v1/code-sessions"


def run(api: ApiClient, session_id: str) -> dict[str, Any]:
    r = api.execute(session_id)
    assert r.status_code == 202, r.text
    return api.wait_execution(r.json()["execution_id"], timeout=180)


def ok(r: Any, status: int = 200) -> dict[str, Any]:
    assert r.status_code == status, r.text
    return r.json()  # type: ignore[no-any-return]


def test_each_run_names_its_version_and_a_restore_runs_the_old_code(cluster: Cluster) -> None:
    api = cluster.client()
    files = [
        {"path": "main.py", "content": "from lib import word\nprint(word())\n"},
        {"path": "lib.py", "content": "def word():\n    return 'first'\n"},
    ]
    s = ok(api.request("POST", SESSIONS, json={"language": "python", "files": files}), 201)
    sid = s["session_id"]
    first = run(api, sid)
    assert first["status"] == "COMPLETED" and first["stdout"] == "first\n" and first["version"] == 1
    edited = ok(
        api.request(
            "PATCH",
            f"{SESSIONS}/{sid}",
            json={"file": {"path": "lib.py", "content": "def word():\n    return 'second'\n"}, "version": s["version"]},
        )
    )
    second = run(api, sid)
    assert second["stdout"] == "second\n" and second["version"] == 2
    assert run(api, sid)["version"] == 2  # the same code again: the same version
    diff = ok(api.request("GET", f"{SESSIONS}/{sid}/versions/1/diff/2"))
    assert [(f["path"], f["change"]) for f in diff["files"]] == [("lib.py", "modified")]
    assert "-    return 'first'\n+    return 'second'\n" in diff["files"][0]["diff"]
    label = ok(api.request("POST", f"{SESSIONS}/{sid}/versions", json={"label": "second works"}), 201)
    assert label["version"] == 3 and label["reason"] == "checkpoint"
    stale = api.request("POST", f"{SESSIONS}/{sid}/versions/1/restore", json={"version": s["version"]})
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "VERSION_CONFLICT"
    restored = ok(api.request("POST", f"{SESSIONS}/{sid}/versions/1/restore", json={"version": edited["version"]}))
    assert restored["restored"] == 1 and restored["saved_as"] == 4
    again = run(api, sid)
    assert again["stdout"] == "first\n" and again["version"] == 5
    v5 = ok(api.request("GET", f"{SESSIONS}/{sid}/versions/5"))
    v1 = ok(api.request("GET", f"{SESSIONS}/{sid}/versions/1"))
    assert v5["files"] == v1["files"] == files
    listed = ok(api.request("GET", f"{SESSIONS}/{sid}/versions"))
    assert [(v["version"], v["reason"]) for v in listed["items"]] == [
        (5, "execution"),
        (4, "restore"),
        (3, "checkpoint"),
        (2, "execution"),
        (1, "execution"),
    ]
    assert listed["items"][0]["execution_id"] == again["execution_id"]


def test_retention_on_postgresql_keeps_labelled_checkpoints(cluster: Cluster) -> None:
    from livecode.services import history

    api = cluster.client()
    sid = ok(api.request("POST", SESSIONS, json={"language": "python", "source_code": "v = 0"}), 201)["session_id"]
    ok(api.request("POST", f"{SESSIONS}/{sid}/versions", json={"label": "keep"}), 201)
    version = 1
    for i in range(3):
        version = ok(api.request("PATCH", f"{SESSIONS}/{sid}", json={"source_code": f"v = {i + 1}"}))["version"]
        ok(api.request("POST", f"{SESSIONS}/{sid}/versions"), 201)
    assert version == 4
    engine = create_engine(cluster.env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1))

    @contextmanager
    def write_core() -> Iterator[Any]:
        with engine.begin() as conn:
            yield conn

    db = SimpleNamespace(write_core=write_core)
    try:
        with engine.begin() as conn:  # everything of this session is older than the day kept
            conn.execute(
                text("UPDATE session_versions SET created_at = created_at - interval '2 days' WHERE session_id = :s"),
                {"s": sid},
            )
        settings = SimpleNamespace(history_keep_versions=1, history_keep_days=1, storage_cleanup_batch=100)
        assert history.expire_versions(db, settings) >= 2
    finally:
        engine.dispose()
    listed = ok(api.request("GET", f"{SESSIONS}/{sid}/versions"))
    assert [(v["version"], v["label"]) for v in listed["items"]] == [(4, None), (1, "keep")]


def test_concurrent_checkpoints_and_saves_number_versions_without_gaps(cluster: Cluster) -> None:
    from concurrent.futures import ThreadPoolExecutor

    api = cluster.client()
    sid = ok(api.request("POST", SESSIONS, json={"language": "python", "source_code": "n = 0"}), 201)["session_id"]

    def checkpoint(i: int) -> int:
        return int(ok(api.request("POST", f"{SESSIONS}/{sid}/versions", json={"label": f"c{i}"}), 201)["version"])

    def save(i: int) -> int:
        return int(ok(api.request("PATCH", f"{SESSIONS}/{sid}", json={"source_code": f"n = {i}"}))["version"])

    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(checkpoint, range(16)))
        saved = list(pool.map(save, range(16)))
    assert sorted(made) == list(range(1, 17))  # every checkpoint its own number, none lost or repeated
    assert sorted(saved) == list(range(2, 18))  # the saves' session versions, untouched by history
    listed = ok(api.request("GET", f"{SESSIONS}/{sid}/versions?per_page=100"))
    assert listed["total"] == 16 and [v["version"] for v in listed["items"]] == list(range(16, 0, -1))
