"""The reconciler's decisions, on a real (SQLite) database with an in-memory worker registry."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from livecode import migrations as migrate
from livecode.config import load_settings
from livecode.models import CodeSession, Execution, Source, utcnow
from livecode.runtime import build_runtime
from livecode.services.storage import source_hash
from livecode.worker.reconciler import reconcile_once


@pytest.fixture
def rt(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LIVECODE_DATA_DIR", str(tmp_path))
    for var in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    r = build_runtime(load_settings("embedded", max_attempts=2, requeue_grace_s=1.0))
    migrate.upgrade(r.db.engine)
    yield r
    r.db.dispose()


def add_execution(rt, status: str, worker: str | None = None, attempts: int = 0, age_s: int = 60) -> uuid.UUID:  # type: ignore[no-untyped-def]
    sid, eid = uuid.uuid4(), uuid.uuid4()
    then = utcnow() - timedelta(seconds=age_s)
    with rt.db.write() as s:
        s.add(CodeSession(id=sid, language="python", source_code="print(1)"))
        if s.get(Source, source_hash("print(1)")) is None:
            s.add(Source(hash=source_hash("print(1)"), content="print(1)", size_bytes=8, last_used_at=then))
        s.flush()
        s.add(Execution(id=eid, session_id=sid, language="python", source_hash=source_hash("print(1)"), status=status,
                        worker=worker, attempts=attempts, queued_at=then,
                        started_at=then if status == "RUNNING" else None))
    return eid


def status_of(rt, eid: uuid.UUID) -> Execution:  # type: ignore[no-untyped-def]
    with rt.db.read(fresh=True) as s:
        return s.get(Execution, eid)


def test_running_on_a_dead_worker_is_requeued(rt) -> None:  # type: ignore[no-untyped-def]
    lost = add_execution(rt, "RUNNING", worker="ghost@host", attempts=1)
    rt.registry.beat("alive@host", {}, 30)
    healthy = add_execution(rt, "RUNNING", worker="alive@host", attempts=1)
    sent: list[uuid.UUID] = []
    counts = reconcile_once(rt, lambda eid, prio, rid: sent.append(eid))
    assert counts["requeued"] == 1 and sent == [lost]
    assert status_of(rt, lost).status == "QUEUED"
    assert status_of(rt, healthy).status == "RUNNING"


def test_lost_too_often_becomes_failed_worker_lost(rt) -> None:  # type: ignore[no-untyped-def]
    eid = add_execution(rt, "RUNNING", worker="ghost@host", attempts=2)
    sent: list[uuid.UUID] = []
    reconcile_once(rt, lambda e, p, r: sent.append(e))
    row = status_of(rt, eid)
    assert row.status == "FAILED" and row.reason == "WORKER_LOST" and sent == []


def test_startup_requeues_everything_active(rt) -> None:  # type: ignore[no-untyped-def]
    queued = add_execution(rt, "QUEUED", age_s=0)
    running = add_execution(rt, "RUNNING", worker="old-process", attempts=1, age_s=0)
    done = add_execution(rt, "COMPLETED")
    sent: list[uuid.UUID] = []
    reconcile_once(rt, lambda e, p, r: sent.append(e), startup=True)
    assert sorted(sent) == sorted([queued, running])
    assert status_of(rt, running).status == "QUEUED" and status_of(rt, done).status == "COMPLETED"
