"""Storage amplification (issue 10, item 8), with real processes: a batch of 100 runs of one session
stores its code once (PostgreSQL and the embedded SQLite) and the runs still complete with the
right output; at the caps execute, batch and session creation answer 429 and insert nothing; the
worker's periodic job deletes finished executions past the retention and the sources they leave
unreferenced, keeping referenced and recently used ones; the migration round trip on PostgreSQL."""

from __future__ import annotations

import base64
import random
import sqlite3
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from typing import Any

import psycopg
import pytest

from livecode.worker.janitor import LOCK_KEY as STORAGE_LOCK_KEY
from tests.conftest import Cluster
from tests.support.accounts import user_client
from tests.support.migrations import check_sources_migration
from tests.support.procs import create_database, start_api, start_worker, wait_for, wait_workers

pytestmark = pytest.mark.integration

RUNS = 100


def query(system: Cluster, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run SQL on the system's own database (`?` placeholders on SQLite, `%s` on PostgreSQL)."""
    if "DATABASE_URL" in system.env:
        with psycopg.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
            cur = conn.execute(sql, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []
    conn = sqlite3.connect(Path(system.env["LIVECODE_DATA_DIR"]) / "livecode.db", timeout=15)
    try:
        with conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()
    finally:
        conn.close()


def stored_bytes(system: Cluster) -> int:
    """The executions and sources tables with their indexes and TOAST (PostgreSQL)."""
    return int(query(system, "SELECT coalesce(sum(pg_total_relation_size(oid)), 0) FROM pg_class "
                             "WHERE relname IN ('executions', 'sources') AND relkind = 'r'")[0][0])


def five_kb_program(token: str) -> str:
    # Random base64 in a comment: about 5 KB that PostgreSQL cannot compress away.
    filler = base64.b64encode(random.randbytes(3750)).decode()
    return f"import sys\nprint({token!r}, sys.stdin.read())\n# {filler}\n"


def test_a_batch_of_100_runs_stores_the_source_once(system: Cluster) -> None:
    api = system.client()
    token = f"t{random.getrandbits(64):x}"
    source = five_kb_program(token)
    sid = api.create_session(source)["session_id"]
    distributed = "DATABASE_URL" in system.env
    before = stored_bytes(system) if distributed else 0
    r = api.request("POST", "/api/v1/executions/batch",
                    json={"executions": [{"session_id": sid, "stdin": f"run{i}"} for i in range(RUNS)]})
    assert r.status_code == 202, r.text
    ids = [e["execution_id"] for e in r.json()["executions"]]
    for i, eid in enumerate(ids):
        done = api.wait_execution(eid, timeout=300)
        assert (done["status"], done["stdout"]) == ("COMPLETED", f"{token} run{i}\n"), done
    if distributed:
        growth = stored_bytes(system) - before
        print(f"\n{RUNS} runs of a {len(source)}-byte source: the executions and sources tables grew by "
              f"{growth} bytes ({growth // RUNS} per run)")
    digest = sha256(source.encode()).hexdigest()
    assert query(system, "SELECT count(*), sum(size_bytes) FROM sources WHERE content = %s", source) == [
        (1, len(source))]
    assert query(system, "SELECT hash FROM sources WHERE content = %s", source) == [(digest,)]
    assert query(system, "SELECT count(*) FROM executions WHERE session_id IN (%s, %s) AND source_hash = %s",
                 sid, sid.replace("-", ""), digest) == [(RUNS,)]
    if distributed:
        # Without the store-once, every run carried its own copy: growth >= RUNS * len(source).
        assert growth < RUNS * len(source) / 2


@pytest.fixture(scope="module")
def capped(cluster: Cluster) -> Iterator[str]:
    """An API process with sign-in required and tiny caps, sharing the cluster's database and worker."""
    env = {**cluster.env, "LIVECODE_AUTH_REQUIRED": "true", "LIVECODE_MAX_STORED_EXECUTIONS": "4",
           "LIVECODE_MAX_SESSIONS": "2"}
    proc, base = start_api(env)
    yield base
    proc.stop()


def user_rows(cluster: Cluster, table: str, username: str) -> int:
    return int(query(cluster, f"SELECT count(*) FROM {table} t JOIN users u ON u.id = t.user_id "
                              "WHERE u.username = %s", username)[0][0])


def refused(r: Any, code: str) -> dict[str, Any]:
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    assert "Retry-After" not in r.headers  # waiting does not lift a storage cap
    return err  # type: ignore[no-any-return]


def test_at_the_caps_execute_batch_and_create_session_answer_429(cluster: Cluster, capped: str) -> None:
    alice = user_client(capped)
    name = alice.username  # type: ignore[attr-defined]
    a = alice.create_session("print('a')")["session_id"]
    b = alice.create_session("print('b')")["session_id"]
    err = refused(alice.request("POST", "/api/v1/code-sessions", json={"language": "python", "source_code": "1"}),
                  "SESSION_QUOTA_EXCEEDED")
    assert err["details"] == {"count": 2, "limit": 2} and "Delete sessions" in err["message"]
    assert user_rows(cluster, "code_sessions", name) == 2

    # A batch that would go over is refused whole; what fits goes through.
    err = refused(alice.request("POST", "/api/v1/executions/batch", json={"executions": [{"session_id": a}] * 5}),
                  "EXECUTION_QUOTA_EXCEEDED")
    assert err["details"] == {"count": 0, "limit": 4, "requested": 5}
    assert user_rows(cluster, "executions", name) == 0
    r = alice.request("POST", "/api/v1/executions/batch", json={"executions": [{"session_id": a}] * 3})
    assert r.status_code == 202, r.text
    r = alice.execute(b)
    assert r.status_code == 202, r.text
    alice.wait_execution(r.json()["execution_id"])

    # At the cap, a run of unchanged code is refused too (on PostgreSQL one statement inserts the
    # execution and touches its source, under one condition).
    refused(alice.execute(b), "EXECUTION_QUOTA_EXCEEDED")
    assert user_rows(cluster, "executions", name) == 4

    # At the cap: new code is neither run nor stored.
    new_code = f"print('never stored {random.getrandbits(64)}')"
    assert alice.request("PATCH", f"/api/v1/code-sessions/{b}", json={"source_code": new_code}).status_code == 200
    for r in (alice.execute(b),
              alice.request("POST", "/api/v1/executions/batch", json={"executions": [{"session_id": b}]})):
        err = refused(r, "EXECUTION_QUOTA_EXCEEDED")
        assert err["details"]["count"] == 4 and err["details"]["limit"] == 4
        assert "stored executions" in err["message"] and "DELETE /api/v1/code-sessions" in err["message"]
    assert user_rows(cluster, "executions", name) == 4
    assert query(cluster, "SELECT count(*) FROM sources WHERE content = %s", new_code) == [(0,)]

    # The caps are per user; deleting a session (with its runs) makes room again.
    bob = user_client(capped)
    assert bob.execute(bob.create_session("print('bob')")["session_id"]).status_code == 202
    assert alice.request("DELETE", f"/api/v1/code-sessions/{a}").status_code == 204
    r = alice.execute(b)
    assert r.status_code == 202, r.text
    assert alice.wait_execution(r.json()["execution_id"])["stdout"] == new_code[7:-2] + "\n"


@pytest.fixture
def janitor(cluster: Cluster) -> Iterator[None]:
    """A worker of the cluster whose storage job runs every second (the shared worker's runs
    hourly; the job runs on the reconciler's tick). The lock that the shared worker's last pass
    holds is dropped, so this worker takes the next pass."""

    import redis

    redis.Redis.from_url(cluster.env["REDIS_URL"]).delete(STORAGE_LOCK_KEY)
    env = {**cluster.env, "LIVECODE_STORAGE_CLEANUP_INTERVAL_S": "1", "LIVECODE_RECONCILE_INTERVAL_S": "1"}
    proc = start_worker(env, "janitor@test")
    try:
        wait_workers(cluster.base, len(cluster.workers) + 1)
        yield
    finally:
        proc.stop()


def test_the_worker_expires_old_runs_and_collects_unreferenced_sources(cluster: Cluster, janitor: None) -> None:
    api = cluster.client()
    tag = f"{random.getrandbits(64):x}"
    names = ("old", "kept", "recent")
    sources = {n: f"print('{n} {tag}')" for n in names}
    runs = {}
    for n in names:
        sid = api.create_session(sources[n])["session_id"]
        r = api.execute(sid)
        assert r.status_code == 202, r.text
        runs[n] = r.json()["execution_id"]
        assert api.wait_execution(runs[n])["status"] == "COMPLETED"
    # "old" and "recent" finished 40 days ago (past the 30-day retention); of the sources, only
    # "old"'s and "kept"'s were last used before the grace period.
    query(cluster, "UPDATE executions SET queued_at = queued_at - interval '40 days', "
                   "started_at = started_at - interval '40 days', finished_at = finished_at - interval '40 days' "
                   "WHERE id IN (%s, %s)", runs["old"], runs["recent"])
    query(cluster, "UPDATE sources SET last_used_at = now() - interval '2 days' WHERE content IN (%s, %s)",
          sources["old"], sources["kept"])
    # A history version keeps its code (tests/api/test_history.py): here "old"'s history is gone too.
    query(cluster, "DELETE FROM session_versions WHERE execution_id = %s", runs["old"])
    query(cluster, "UPDATE file_sets SET last_used_at = now() - interval '2 days' WHERE hash IN (SELECT f.set_hash "
                   "FROM file_set_files f JOIN sources s ON s.hash = f.source_hash WHERE s.content = %s)",
          sources["old"])

    def gone() -> bool:
        return query(cluster, "SELECT count(*) FROM sources WHERE content = %s", sources["old"]) == [(0,)]

    wait_for(gone, timeout=60, interval=0.5, what="the storage job to collect the old source")
    left = {r[0] for r in query(cluster, "SELECT id::text FROM executions WHERE id IN (%s, %s, %s)",
                                runs["old"], runs["kept"], runs["recent"])}
    assert left == {runs["kept"]}
    assert api.request("GET", f"/api/v1/executions/{runs['old']}").status_code == 404
    assert api.get_execution(runs["kept"])["stdout"] == f"kept {tag}\n"
    stored = {r[0] for r in query(cluster, "SELECT content FROM sources WHERE content IN (%s, %s, %s)",
                                  *sources.values())}
    assert stored == {sources["kept"], sources["recent"]}  # referenced; used within the grace period
    # A collected source comes back when its code runs again.
    sid = api.create_session(sources["old"])["session_id"]
    r = api.execute(sid)
    assert api.wait_execution(r.json()["execution_id"])["stdout"] == f"old {tag}\n"


def test_sources_migration_round_trip_on_postgresql(pg_admin_url: str) -> None:
    url = create_database(pg_admin_url).replace("postgresql://", "postgresql+psycopg://")
    check_sources_migration(url)


def test_collection_never_deletes_a_source_a_submission_is_about_to_reference(
    pg_admin_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The race of collect_sources with a submission, forced on PostgreSQL: the submission has
    stored (touched) an old unreferenced source but not yet inserted its execution when the
    collection's DELETE reaches the row. The DELETE waits, re-checks, and keeps the source."""
    import threading
    import uuid
    from datetime import timedelta

    from sqlalchemy import text

    from livecode import migrations as migrate
    from livecode.config import load_settings
    from livecode.db import Database
    from livecode.models import utcnow
    from livecode.services.storage import collect_sources, source_hash, store_sources

    url = create_database(pg_admin_url).replace("postgresql://", "postgresql+psycopg://")
    db = Database(load_settings("embedded", database_url=url))
    migrate.upgrade(db.engine)
    settings = db.settings
    code = "print('raced')"
    digest, sid = source_hash(code), uuid.uuid4()
    with db.write() as s:
        s.execute(text("INSERT INTO code_sessions VALUES (:s, NULL, 'python', :c, 'ACTIVE', 1, now(), now())"),
                  {"s": sid, "c": code})
        # Used two days ago, referenced by nothing (its runs expired): a candidate for collection.
        store_sources(s, {digest: code}, utcnow() - timedelta(days=2))
    collected: list[int] = []
    with db.write() as s:
        store_sources(s, {digest: code}, utcnow())  # the submission's upsert: the row is now locked
        collector = threading.Thread(target=lambda: collected.append(collect_sources(db, settings)))
        collector.start()
        wait_for(lambda: query_pg(url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                       "AND query LIKE 'DELETE FROM sources%%'") == [(1,)],
                 timeout=30, what="the collection to wait for the submission's lock")
        s.execute(text("INSERT INTO executions (id, session_id, language, source_hash, stdin, args, limits, "
                       "priority, interactive, status, stdout_truncated, stderr_truncated, attempts, queued_at) "
                       "VALUES (:e, :s, 'python', :h, '', '[]', '{}', 'batch', false, 'QUEUED', false, false, 0, "
                       "now())"), {"e": uuid.uuid4(), "s": sid, "h": digest})
    collector.join(30)
    assert collected == [0]
    # Kept by the re-check on the touched row, not only by the foreign key as the last resort.
    assert "became referenced" not in caplog.text
    assert query_pg(url, "SELECT count(*) FROM sources WHERE hash = %s", digest) == [(1,)]
    db.dispose()


def query_pg(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]
