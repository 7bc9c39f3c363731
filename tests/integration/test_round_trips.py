"""The round trips of an execution's statements on PostgreSQL (issue 11), counted on the wire with
libpq's trace of the pool's one connection, and the transactions around them kept: a Core
transaction's BEGIN goes with its first statement (db.write_core), and what the transaction
wrote is still committed, or rolled back, as one. Real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError

from livecode.db import Database
from livecode.models import ExecutionStatus
from livecode.services import sessions
from livecode.services.executions import (
    ExecuteOptions,
    claim_execution,
    finish_execution_returning,
    get_execution,
    submit_execution,
)
from livecode.streaming.bus import MemoryEventBus
from tests.support.pgtrace import scratch_db, traced


@pytest.fixture
def db(pg_admin_url: str) -> Iterator[Database]:
    with scratch_db(pg_admin_url) as database:
        yield database


def round_trips(db: Database, fn: Callable[[], Any]) -> tuple[int, list[str]]:
    """fn's round trips on the pool's only connection (a send after a receive, or the first
    send), and the statements it sent."""
    _, lines = traced(db, fn)
    trips, last = 0, "B"
    for line in lines:
        if line[0] == "F" and last == "B":
            trips += 1
        last = line[0]
    sent = [line[3].strip() for line in lines if line[0] == "F" and line[2] in ("Parse", "Query")]
    return trips, sent


def new_session(db: Database) -> uuid.UUID:
    return uuid.UUID(sessions.create_session(db, language="python", source_code="print('hi')", owner_id=None,
                                             max_bytes=1 << 20, settings=db.settings)["session_id"])


def submitted(db: Database, session_id: uuid.UUID | None = None) -> uuid.UUID:
    sid = session_id or new_session(db)
    return uuid.UUID(submit_execution(db, lambda *_: None, db.settings, sid, owner_id=None,
                                      options=ExecuteOptions(), events=MemoryEventBus())["execution_id"])


def status(db: Database, execution_id: uuid.UUID) -> str:
    return str(get_execution(db, execution_id, None)["status"])


def test_a_claim_is_one_transaction_in_two_round_trips(db: Database) -> None:
    statements = []
    for _ in range(7):  # past psycopg's threshold for preparing a statement: the steady state
        eid = submitted(db)
        trips, sent = round_trips(db, lambda: claim_execution(db, eid, "w1"))  # noqa: B023
        assert trips == 2, sent  # BEGIN with the UPDATE, then COMMIT
        assert status(db, eid) == "RUNNING"
        statements.append(sent)
    first = statements[0]  # before psycopg prepared them: each statement's text
    assert len(first) == 3 and '"BEGIN"' in first[0] and '"UPDATE executions' in first[1], first
    assert first[2] == '"COMMIT"', first
    # The same run claimed again finds it taken: still a conditional UPDATE.
    assert claim_execution(db, eid, "w2") is None


def test_a_submission_the_final_write_and_a_get_keep_their_round_trips(db: Database) -> None:
    sid = new_session(db)
    eid = submitted(db, sid)  # the first run of the code makes its history version
    claimed = claim_execution(db, eid, "w1")
    assert claimed is not None
    trips, _ = round_trips(db, lambda: finish_execution_returning(
        db, eid, claimed.attempt, ExecutionStatus.COMPLETED, stdout=b"hi\n", exit_code=0))
    assert trips == 1  # one statement, its own transaction
    assert status(db, eid) == "COMPLETED"
    trips, _ = round_trips(db, lambda: submitted(db, sid))
    assert trips == 1  # unchanged code: the session read, the source and the insert in one statement
    trips, _ = round_trips(db, lambda: get_execution(db, eid, None))
    assert trips == 1


def test_a_core_transaction_rolls_back_as_one_when_it_fails_after_its_first_statement(db: Database) -> None:
    with db.write_core() as conn:
        conn.execute(text("CREATE TABLE t (id int PRIMARY KEY)"))

    with pytest.raises(RuntimeError), db.write_core() as conn:
        conn.execute(text("INSERT INTO t VALUES (:i)"), [{"i": 1}, {"i": 2}])  # executemany, first statement
        conn.execute(text("INSERT INTO t VALUES (3)"))
        raise RuntimeError("after the writes")
    with pytest.raises(DataError), db.write_core() as conn:
        conn.execute(text("INSERT INTO t VALUES (4)"))
        conn.execute(text("INSERT INTO t VALUES (1 / 0)"))
    with pytest.raises(DataError), db.write_core() as conn:
        conn.execute(text("INSERT INTO t VALUES (1 / 0)"))  # the first statement fails: BEGIN went with it
    with db.read_core(fresh=True) as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 0

    with db.write_core() as conn:
        conn.execute(text("INSERT INTO t VALUES (:i)"), [{"i": 1}, {"i": 2}])
        # Inside the transaction: another connection does not see the rows before the commit.
        with psycopg.connect(db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                             autocommit=True) as other:
            assert other.execute("SELECT count(*) FROM t").fetchone() == (0,)
    with db.read_core(fresh=True) as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 2


def test_one_connection_alternating_autocommit_statements_and_transactions_keeps_each_ones_mode(
    db: Database,
) -> None:
    # The pool's one connection keeps the mode it was last used in (db._statement_modes): each
    # use must still get its own, whatever came before it.
    def others_see() -> int:
        with psycopg.connect(db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                             autocommit=True) as other:
            return int(other.execute("SELECT count(*) FROM t").fetchone()[0])  # type: ignore[index]

    with db.write_core() as conn:
        conn.execute(text("CREATE TABLE t (id int PRIMARY KEY)"))
    for round_ in range(2):
        base = 10 * round_
        with db.write_one() as conn:  # autocommit: committed as soon as it ran
            conn.execute(text("INSERT INTO t VALUES (:i)"), {"i": base + 1})
            assert others_see() == 3 * round_ + 1
        with pytest.raises(RuntimeError), db.write() as session:  # the ORM's transaction
            session.execute(text("INSERT INTO t VALUES (:i)"), {"i": base + 2})
            assert others_see() == 3 * round_ + 1
            raise RuntimeError("rolled back")
        with db.write() as session:
            session.execute(text("INSERT INTO t VALUES (:i)"), {"i": base + 2})
        with db.read_core(fresh=True) as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 3 * round_ + 2
        with pytest.raises(RuntimeError), db.write_core() as conn:  # a Core transaction
            conn.execute(text("INSERT INTO t VALUES (:i)"), {"i": base + 3})
            assert others_see() == 3 * round_ + 2
            raise RuntimeError("rolled back")
        with db.write_core() as conn:
            conn.execute(text("INSERT INTO t VALUES (:i)"), {"i": base + 3})
        assert others_see() == 3 * round_ + 3
    db.ping()


def test_sqlalchemys_own_autocommit_isolation_level_still_runs_outside_a_transaction(db: Database) -> None:
    # What alembic's autocommit_block does, for statements that cannot run in a transaction.
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("CREATE TABLE t (id int PRIMARY KEY)"))
        conn.execute(text("CREATE INDEX CONCURRENTLY t_id ON t (id)"))  # refused inside a transaction
    with db.write_one() as conn:
        conn.execute(text("VACUUM t"))  # refused inside a transaction


def test_after_a_burst_sequential_statements_keep_to_the_connection_used_last(pg_admin_url: str) -> None:
    """The pool hands out the connection returned last (pool_use_lifo): after a burst opened
    several, one request at a time keeps using one connection, whose statements psycopg has
    prepared, instead of rotating through all of them (each planned afresh for its first uses)."""
    with scratch_db(pg_admin_url, pool_size=4, migrated=False) as database:
        burst = [database.engine.connect() for _ in range(4)]  # four connections open at once
        for conn in burst:
            conn.execute(text("SELECT 1"))
        for conn in burst:
            conn.close()
        pids = set()
        for _ in range(8):
            with database.engine.connect() as conn:
                pids.add(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        assert len(pids) == 1, pids
