"""Database.first: a hot statement run straight on the pooled psycopg connection gives what
SQLAlchemy's Connection.execute(...).first() gives, rows and errors alike. Real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import JSON, Numeric, Uuid, bindparam, cast, column, insert, literal, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from livecode import db as dbmod
from livecode.db import Database
from livecode.models import Execution
from livecode.services import sessions
from livecode.services.executions import ExecuteOptions, _execution_by_id, submit_execution
from livecode.services.testcases import TestCase
from livecode.streaming.bus import MemoryEventBus
from tests.support.pgtrace import scratch_db


@pytest.fixture
def db(pg_admin_url: str) -> Iterator[Database]:
    with scratch_db(pg_admin_url) as database:
        yield database


def finished_run(db: Database) -> uuid.UUID:
    sid = uuid.UUID(sessions.create_session(db, language="python", source_code="print('hi')", owner_id=None,
                                            max_bytes=1 << 20, settings=db.settings)["session_id"])
    options = ExecuteOptions(tests=[TestCase(name="t", stdin="1", expected_output="2")])
    eid = uuid.UUID(submit_execution(db, lambda *_: None, db.settings, sid, owner_id=None, options=options,
                                     events=MemoryEventBus())["execution_id"])
    with db.write_one() as conn:
        conn.execute(update(Execution).where(Execution.id == eid).values(
            status="COMPLETED", stdout=b"\x00\xff out", stderr=b"", exit_code=0, test_results=[{"passed": True}],
            finished_at=text("now()"), execution_time_ms=3))
    return eid


def test_the_row_is_the_one_connection_execute_gives(db: Database) -> None:
    eid = finished_run(db)
    for by_owner, owner in ((False, None), (True, uuid.uuid4())):
        stmt, params = _execution_by_id(by_owner), {"p_eid": eid, "p_owner": owner}
        assert dbmod._plan(stmt, db.engine.dialect) is not None  # the fast path, not the fallback
        with db.read_core(fresh=True) as conn:
            expected = conn.execute(stmt, params).first()
        got = db.first(stmt, params, primary=True)
        if expected is None:
            assert got is None
        else:
            assert got._asdict() == expected._asdict()
            assert got.stdout == b"\x00\xff out" and got.tests and got.test_results == [{"passed": True}]


def test_a_driver_error_is_sqlalchemys_and_the_connection_stays_usable(db: Database) -> None:
    eid = finished_run(db)
    stmt = text("INSERT INTO executions (id, session_id, language, source_hash, status) "
                "SELECT id, session_id, language, source_hash, status FROM executions WHERE id = :eid "
                "RETURNING id").columns(column("id", Uuid()))
    stmt = stmt.bindparams(eid=eid)
    assert dbmod._plan(stmt, db.engine.dialect) is not None  # the fast path, not the fallback
    with pytest.raises(IntegrityError) as caught:  # the same primary key
        db.first(stmt, {}, primary=True)
    assert not caught.value.connection_invalidated
    assert db.first(_execution_by_id(False), {"p_eid": eid}, primary=True).id == eid


def test_statements_the_fast_path_cannot_run_as_sqlalchemy_would_take_the_usual_one(db: Database) -> None:
    """Python-side defaults (filled per execution), result processing (Numeric), a label that
    is a keyword, a renamed bind parameter: Connection.execute runs these."""
    dialect = db.engine.dialect
    executions = Execution.__table__
    needs_default = (
        insert(executions)
        .values(session_id=bindparam("sid"), language="python", source_hash="h", status="QUEUED")
        .returning(executions.c.id)
    )
    for stmt in (
        needs_default,
        select(cast(literal(1.5), Numeric()).label("x")),
        select(literal(1).label("from")),
        select(cast(bindparam("p.j", type_=JSON), JSON).label("j")),
    ):
        assert dbmod._plan(stmt, dialect) is None, stmt
    assert db.first(select(cast(literal(1.5), Numeric()).label("x")), {}).x == Decimal("1.5")
    assert db.first(select(literal(1).label("from")), {})._asdict() == {"from": 1}


def test_a_lost_connection_is_unavailable_invalidated_and_replaced(db: Database) -> None:
    eid = finished_run(db)
    stmt, params = _execution_by_id(False), {"p_eid": eid}
    db.first(stmt, params, primary=True)
    with db.engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    admin = psycopg.connect(db.settings.database_url.replace("+psycopg", ""), autocommit=True)
    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.close()
    with pytest.raises(OperationalError) as caught:
        db.first(stmt, params, primary=True)
    assert caught.value.connection_invalidated
    assert db.first(stmt, params, primary=True).id == eid  # a new connection


def test_the_autosaves_statements_take_the_short_path_and_write_what_execute_wrote(db: Database) -> None:
    from datetime import timedelta

    from sqlalchemy import event

    from livecode.services import autosave_batch

    sids = [uuid.UUID(sessions.create_session(db, language="python", source_code="print('hi')", owner_id=None,
                                              max_bytes=1 << 20, settings=db.settings)["session_id"])
            for _ in range(3)]
    executed: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: executed.append(a[2]))
    # The lone save: its row, as Connection.execute(...).first() gave it (by name and position).
    save = autosave_batch.Save(sids[0], None, None, "print('lone')", 60.0)
    row = sessions._write_alone(db, save, sessions.utcnow())
    assert row is not None and row.version == row[0] == 2 and row.history_at is not None
    # The batch: every row it changed, by index; a row whose condition did not hold is absent.
    now = sessions.utcnow()
    params = {"b_idx": [0, 1, 2], "b_sid": sids, "b_owner": [None] * 3, "b_expected": [2, 1, 5],
              "b_src": ["a", "b", "c"], "b_hcut": [now - timedelta(seconds=60)] * 3, "now": now}
    rows = db.all_written(autosave_batch._batch_statement(), params)
    assert sorted((r.idx, r.version) for r in rows) == [(0, 3), (1, 2)]  # the third named version 5
    assert executed == []  # neither went through Connection.execute
    with db.read_core(fresh=True) as conn:
        stored = dict(conn.execute(select(sessions.CodeSession.id, sessions.CodeSession.source_code)
                                   .where(sessions.CodeSession.id.in_(sids))).all())
    assert [stored[s] for s in sids] == ["a", "b", "print('hi')"]
    # A refused batch raises SQLAlchemy's error, as Connection.execute did (the batcher's fallback).
    with pytest.raises(IntegrityError):
        db.all_written(autosave_batch._batch_statement(),
                       {**params, "b_src": [None, "b", "c"], "b_expected": [None] * 3})
