"""Storage (issue 10, item 8) in-process on SQLite, the embedded mode's database (owner NULL):
sources stored once, the caps refuse with 429 and change nothing, the expiry job deletes old runs
and the sources they leave behind, and the worker's claim reads the code by hash. The same on
PostgreSQL with real processes: tests/integration/test_storage.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from livecode.app import create_app
from livecode.config import load_settings
from livecode.models import ExecutionStatus, utcnow
from livecode.runtime import Runtime
from livecode.services.executions import claim_execution, finish_execution
from livecode.services.storage import source_hash
from livecode.worker.janitor import cleanup_once
from tests.support.embedded import embedded_runtime
from tests.support.migrations import check_sources_migration

SOURCE = "print('stored once')\n# " + "x" * 5000


@pytest.fixture
def rt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    with embedded_runtime(tmp_path, monkeypatch, max_stored_executions=5, max_sessions=3,
                                    execution_retention_days=30, source_gc_grace_s=3600,
                                    rate_limits_enabled=False) as r:
        yield r


@pytest.fixture
def client(rt: Runtime) -> FlaskClient:
    return create_app(rt.settings, runtime=rt, enqueue=lambda *a: None, run_migrations=False).test_client()


def sql(rt: Runtime, query: str, **params: Any) -> list[Any]:
    with rt.db.engine.begin() as c:
        result = c.execute(text(query), params)
        return result.all() if result.returns_rows else []


def new_session(client: FlaskClient, source: str = SOURCE) -> str:
    r = client.post("/api/v1/code-sessions", json={"language": "python", "source_code": source})
    assert r.status_code == 201, r.get_json()
    return str(r.get_json()["session_id"])


def test_a_batch_stores_its_source_once_and_the_claim_reads_it(rt: Runtime, client: FlaskClient) -> None:
    sid = new_session(client)
    r = client.post("/api/v1/executions/batch", json={"executions": [{"session_id": sid}] * 5})
    assert r.status_code == 202, r.get_json()
    assert sql(rt, "SELECT count(*), sum(length(content)) FROM sources") == [(1, len(SOURCE))]
    assert sql(rt, "SELECT count(DISTINCT source_hash), count(*) FROM executions") == [(1, 5)]
    claimed = claim_execution(rt.db, uuid.UUID(r.get_json()["executions"][0]["execution_id"]), "w")
    assert claimed is not None and claimed.source_code == SOURCE


def test_at_the_caps_requests_are_refused_and_change_nothing(rt: Runtime, client: FlaskClient) -> None:
    sids = [new_session(client, f"print({i})") for i in range(3)]
    r = client.post("/api/v1/code-sessions", json={"language": "python", "source_code": "print('one more')"})
    assert r.status_code == 429
    err = r.get_json()["error"]
    assert err["code"] == "SESSION_QUOTA_EXCEEDED" and err["details"] == {"count": 3, "limit": 3}
    assert "Delete sessions" in err["message"] and "Retry-After" not in r.headers
    assert sql(rt, "SELECT count(*) FROM code_sessions") == [(3,)]

    # A batch that would go over is refused whole; one that fits goes through.
    r = client.post("/api/v1/executions/batch", json={"executions": [{"session_id": sids[0]}] * 6})
    assert r.status_code == 429 and r.get_json()["error"]["details"] == {"count": 0, "limit": 5, "requested": 6}
    assert sql(rt, "SELECT count(*) FROM executions") == [(0,)] and sql(rt, "SELECT count(*) FROM sources") == [(0,)]
    r = client.post("/api/v1/executions/batch", json={"executions": [{"session_id": sids[0]}] * 4})
    assert r.status_code == 202
    assert client.post(f"/api/v1/executions/session/{sids[1]}/execute", json={}).status_code == 202
    # At the cap: a run of new code stores nothing, not even the code.
    client.patch(f"/api/v1/code-sessions/{sids[2]}", json={"source_code": "print('new code')"})
    for r in (client.post(f"/api/v1/executions/session/{sids[2]}/execute", json={}),
              client.post("/api/v1/executions/batch", json={"executions": [{"session_id": sids[2]}]})):
        assert r.status_code == 429
        err = r.get_json()["error"]
        assert err["code"] == "EXECUTION_QUOTA_EXCEEDED" and err["details"]["count"] == 5
        assert "DELETE /api/v1/code-sessions" in err["message"] and "30 days" in err["message"]
    assert sql(rt, "SELECT count(*) FROM executions") == [(5,)]
    assert sql(rt, "SELECT count(*) FROM sources WHERE hash = :h", h=source_hash("print('new code')")) == [(0,)]
    # Deleting a session frees its executions' room.
    assert client.delete(f"/api/v1/code-sessions/{sids[0]}").status_code == 204
    assert client.post(f"/api/v1/executions/session/{sids[2]}/execute", json={}).status_code == 202


def test_expiry_deletes_old_runs_then_the_sources_nobody_uses(rt: Runtime, client: FlaskClient) -> None:
    old, kept, recent = (new_session(client, f"print('{name}')") for name in ("old", "kept", "recent"))
    ids = {}
    for sid in (old, kept, recent):
        r = client.post(f"/api/v1/executions/session/{sid}/execute", json={})
        eid = uuid.UUID(r.get_json()["execution_id"])
        claimed = claim_execution(rt.db, eid, "w")
        assert claimed is not None
        assert finish_execution(rt.db, eid, claimed.attempt, ExecutionStatus.COMPLETED)
        ids[sid] = eid
    long_ago = utcnow() - timedelta(days=40)
    # "old" and "recent" finished 40 days ago; only "old"'s source was last used before the grace.
    for sid in (old, recent):
        sql(rt, "UPDATE executions SET queued_at = :t, finished_at = :t WHERE id = :e", t=long_ago, e=ids[sid].hex)
    sql(rt, "UPDATE sources SET last_used_at = :t WHERE hash IN (:a, :b)", t=long_ago,
        a=source_hash("print('old')"), b=source_hash("print('kept')"))
    assert cleanup_once(rt) == {"expired_files": 0, "expired_executions": 2, "collected_sources": 1}
    assert {row[0] for row in sql(rt, "SELECT session_id FROM executions")} == {uuid.UUID(kept).hex}
    assert {row[0] for row in sql(rt, "SELECT hash FROM sources")} == {
        source_hash("print('kept')"), source_hash("print('recent')")}  # referenced; within the grace
    assert cleanup_once(rt) == {"expired_files": 0, "expired_executions": 0, "collected_sources": 0}


def test_sources_migration_round_trip_on_sqlite(tmp_path: Path) -> None:
    check_sources_migration(f"sqlite:///{tmp_path / 'db.sqlite'}")


def test_the_storage_settings_are_read_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from livecode.config import ConfigError

    monkeypatch.setenv("LIVECODE_DATA_DIR", str(tmp_path))
    defaults = load_settings("embedded")
    assert (defaults.max_stored_executions, defaults.max_sessions, defaults.execution_retention_days) == (
        10_000, 1000, 30)
    monkeypatch.setenv("LIVECODE_MAX_STORED_EXECUTIONS", "0")
    monkeypatch.setenv("LIVECODE_EXECUTION_RETENTION_DAYS", "7")
    monkeypatch.setenv("LIVECODE_STORAGE_CLEANUP_INTERVAL_S", "60")
    s = load_settings("embedded")
    assert (s.max_stored_executions, s.execution_retention_days, s.storage_cleanup_interval_s) == (0, 7, 60.0)
    monkeypatch.setenv("LIVECODE_MAX_SESSIONS", "-1")
    with pytest.raises(ConfigError, match="LIVECODE_MAX_SESSIONS"):
        load_settings("embedded")
