"""Autosave's group commit (services/autosave_batch.py) on a real PostgreSQL: the saves that
arrive while a batch is written go together in one conditional UPDATE and one commit, and each
is answered as if it had been written alone (200 with its new version, 409, 404 or 403); a batch
PostgreSQL refuses is written save by save; a batch whose connection is lost answers every save
with the error and applies none.

To make a batch deterministic, a test holds one session's row lock in a transaction of its own:
the save of that session (the first writer) waits on it, the saves started meanwhile queue, and
releasing the lock lets them go as one batch."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from sqlalchemy.exc import DBAPIError

from livecode import migrations as migrate
from livecode.config import load_settings
from livecode.db import Database, is_unavailable
from livecode.errors import ApiError
from livecode.services import autosave_batch, sessions
from tests.support.pgtrace import scratch_database, traced

MAX_BYTES = 1 << 20


@pytest.fixture
def pg(pg_admin_url: str) -> Iterator[str]:
    with scratch_database(pg_admin_url) as url:
        yield url


def database(url: str, pool: int) -> Database:
    # No pre-ping: its SELECT 1 would count among the statements a test reads on the wire.
    db = Database(load_settings("embedded", database_url=url.replace("postgresql://", "postgresql+psycopg://"),
                                db_pool_size=pool, db_max_overflow=0, db_pool_pre_ping=False))
    migrate.upgrade(db.engine)
    return db


@pytest.fixture
def db(pg: str) -> Iterator[Database]:
    database_ = database(pg, 1)  # one connection: the test reads what went over it
    yield database_
    database_.dispose()


def new_session(db: Database, owner: uuid.UUID | None = None) -> uuid.UUID:
    return uuid.UUID(sessions.create_session(db, language="python", source_code="v1", owner_id=owner,
                                             max_bytes=MAX_BYTES)["session_id"])


def version_of(pg: str, sid: uuid.UUID) -> tuple[int, str] | None:
    with psycopg.connect(pg) as conn:
        row = conn.execute("SELECT version, source_code FROM code_sessions WHERE id = %s", (sid,)).fetchone()
    return (row[0], row[1]) if row else None


def batcher(db: Database) -> autosave_batch.AutosaveBatcher:
    return autosave_batch.batcher_for(db, sessions._write_alone)


def wait_until(what: str, check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def lock_waiters(pg: str) -> int:
    """Backends of the database waiting on a lock (the held row)."""
    with psycopg.connect(pg) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND wait_event_type = 'Lock'").fetchone()
    return int(row[0]) if row else 0


class Held:
    """A session's row locked by a transaction of the test's own, until release()."""

    def __init__(self, pg: str, *sids: uuid.UUID) -> None:
        self.conn = psycopg.connect(pg)
        for sid in sids:
            self.conn.execute("SELECT 1 FROM code_sessions WHERE id = %s FOR UPDATE", (sid,))

    def release(self) -> None:
        self.conn.commit()
        self.conn.close()


def save(db: Database, sid: uuid.UUID, source: str, expected: int | None = None,
         owner: uuid.UUID | None = None) -> Any:
    """The service's answer, or the error it raised."""
    try:
        return sessions.autosave(db, sid, source_code=source, expected_version=expected, owner_id=owner,
                                 max_bytes=MAX_BYTES)
    except Exception as exc:  # noqa: BLE001 - the answer under test
        return exc


def start_batch(db: Database, pg: str, first: uuid.UUID, saves: list[Callable[[], Any]],
                owner: uuid.UUID | None = None) -> tuple[Future[Any], list[Future[Any]]]:
    """Queue `saves` behind the save of `first`, which waits on its held row; then release the
    row: they go as one batch. Returns the futures of the first's answer and theirs."""
    held = Held(pg, first)
    pool = ThreadPoolExecutor(len(saves) + 1)
    try:
        lead = pool.submit(save, db, first, "lead", None, owner)
        wait_until("the first save to wait on the held row", lambda: lock_waiters(pg) == 1)
        futures = []
        for i, fn in enumerate(saves):
            futures.append(pool.submit(fn))
            wait_until(f"save {i} to queue", lambda i=i: batcher(db).queued() == i + 1)  # type: ignore[misc]
    finally:
        held.release()
    pool.shutdown(wait=False)
    return lead, futures


def in_one_batch(db: Database, pg: str, first: uuid.UUID, saves: list[Callable[[], Any]],
                 owner: uuid.UUID | None = None) -> tuple[Any, list[Any]]:
    """start_batch, and the answers: the first's and theirs."""
    lead, futures = start_batch(db, pg, first, saves, owner)
    return lead.result(timeout=30), [f.result(timeout=30) for f in futures]


def statements_sent(db: Database, fn: Callable[[], Any]) -> tuple[Any, int]:
    """fn's result and the number of statements executed on the pool's only connection (libpq's
    trace: one Execute message per statement, prepared or not)."""
    result, lines = traced(db, fn)
    return result, sum(1 for line in lines if line[0] == "F" and line[2] == "Execute")


def test_saves_that_arrive_during_a_write_go_in_one_statement_and_all_are_durable(db: Database, pg: str) -> None:
    first = new_session(db)
    others = [new_session(db) for _ in range(31)]
    calls = [lambda sid=sid: save(db, sid, f"saved {sid}") for sid in others]

    (lead, answers), executed = statements_sent(db, lambda: in_one_batch(db, pg, first, calls))

    assert executed == 2, executed  # the first save alone, then the 31 that queued: one statement
    assert lead["version"] == 2
    for sid, answer in zip(others, answers, strict=True):
        assert not isinstance(answer, Exception), answer
        assert answer["version"] == 2 and answer["session_id"] == str(sid)
        assert version_of(pg, sid) == (2, f"saved {sid}")  # committed before the answer


def test_each_save_of_a_batch_keeps_its_own_condition_and_answer(pg: str) -> None:
    db = database(pg, 3)
    try:
        me, other = uuid.uuid4(), uuid.uuid4()
        with psycopg.connect(pg) as conn:
            for uid, name in ((me, "me"), (other, "other")):
                conn.execute("INSERT INTO users (id, username, password_hash, role, created_at, token_version) "
                             "VALUES (%s, %s, 'x', 'user', now(), 0)", (uid, name))
        first, mine, stale = new_session(db, me), new_session(db, me), new_session(db, me)
        strangers, viewed, edited = new_session(db, other), new_session(db, other), new_session(db, other)
        with psycopg.connect(pg) as conn:
            for sid, role in ((viewed, "viewer"), (edited, "editor")):
                conn.execute("INSERT INTO session_members (session_id, user_id, role, added_at) "
                             "VALUES (%s, %s, %s, now())", (sid, me, role))
        assert sessions.autosave(db, stale, source_code="v2", expected_version=1, owner_id=me,
                                 max_bytes=MAX_BYTES)["version"] == 2
        missing = uuid.uuid4()
        cases: list[tuple[uuid.UUID, int | None, str]] = [
            (mine, 1, "ok"),  # the version the client edited: applied
            (stale, 1, "409"),  # moved on to 2 meanwhile
            (missing, None, "404"),
            (strangers, None, "404"),  # not the caller's to see
            (viewed, None, "403"),  # a viewer may not edit
            (edited, None, "ok"),  # an editor may
        ]
        calls = [lambda c=c: save(db, c[0], f"new {c[0]}", c[1], me) for c in cases]

        lead, answers = in_one_batch(db, pg, first, calls, owner=me)

        assert lead["version"] == 2
        for (sid, _, want), answer in zip(cases, answers, strict=True):
            if want == "ok":
                assert not isinstance(answer, Exception), (sid, answer)
                assert answer["version"] == 2
                assert version_of(pg, sid) == (2, f"new {sid}")
                continue
            assert isinstance(answer, ApiError), (sid, answer)
            assert answer.status == int(want), (want, answer.status, answer.code)
            if want == "409":
                assert answer.code == "VERSION_CONFLICT"
                assert answer.details == {"current_version": 2, "your_version": 1}
                assert version_of(pg, sid) == (2, "v2")
            elif sid != missing:
                assert version_of(pg, sid) == (1, "v1")  # nothing changed
        assert answers[4].code == "READ_ONLY_MEMBER"
    finally:
        db.dispose()


def test_two_saves_of_one_session_in_the_queue_are_both_applied_in_order(db: Database, pg: str) -> None:
    first, sid = new_session(db), new_session(db)
    calls = [lambda: save(db, sid, "earlier"), lambda: save(db, sid, "later")]

    (_, (earlier, later)), executed = statements_sent(db, lambda: in_one_batch(db, pg, first, calls))

    # A batch holds a session once: the second save went in the next statement.
    assert executed == 3, executed
    assert (earlier["version"], later["version"]) == (2, 3)
    assert version_of(pg, sid) == (3, "later")


def test_a_batch_postgresql_refuses_is_written_save_by_save(db: Database, pg: str) -> None:
    with psycopg.connect(pg, autocommit=True) as conn:  # a row PostgreSQL refuses, as a constraint would
        conn.execute("CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "IF NEW.source_code = 'boom' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER refuse_boom BEFORE UPDATE ON code_sessions FOR EACH ROW "
                     "EXECUTE FUNCTION refuse_boom()")
    first, a, bad, b = (new_session(db) for _ in range(4))
    calls = [lambda: save(db, a, "fine a"), lambda: save(db, bad, "boom"), lambda: save(db, b, "fine b")]

    _, (answer_a, answer_bad, answer_b) = in_one_batch(db, pg, first, calls)

    assert isinstance(answer_bad, DBAPIError) and not is_unavailable(answer_bad)
    assert version_of(pg, bad) == (1, "v1")
    assert answer_a["version"] == 2 and version_of(pg, a) == (2, "fine a")
    assert answer_b["version"] == 2 and version_of(pg, b) == (2, "fine b")


def test_a_batch_that_deadlocks_or_times_out_is_written_save_by_save(db: Database, pg: str) -> None:
    # psycopg raises a deadlock (40P01), a serialization failure (40001) or a statement timeout
    # (57014) as an OperationalError, as it does a lost connection: the database is up, the batch
    # alone failed, and each save must be written alone, not answered 503.
    with psycopg.connect(pg, autocommit=True) as conn:  # fails any UPDATE of several sessions at once
        conn.execute("CREATE FUNCTION one_at_a_time() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "IF (SELECT count(*) FROM changed) > 1 THEN "
                     "RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected'; END IF; "
                     "RETURN NULL; END $$")
        conn.execute("CREATE TRIGGER one_at_a_time AFTER UPDATE ON code_sessions REFERENCING NEW TABLE AS changed "
                     "FOR EACH STATEMENT EXECUTE FUNCTION one_at_a_time()")
    first, a, b = (new_session(db) for _ in range(3))
    calls = [lambda: save(db, a, "saved a"), lambda: save(db, b, "saved b")]

    _, (answer_a, answer_b) = in_one_batch(db, pg, first, calls)

    assert not isinstance(answer_a, Exception) and not isinstance(answer_b, Exception), (answer_a, answer_b)
    assert version_of(pg, a) == (2, "saved a") and version_of(pg, b) == (2, "saved b")


def test_a_batch_that_loses_its_connection_answers_every_save_with_the_error(pg: str) -> None:
    db = database(pg, 2)
    try:
        first, a, b, c = (new_session(db) for _ in range(4))
        # The batch of a, b and c waits on a's row (held too) until its backend is terminated.
        held_a = Held(pg, a)
        calls = [lambda: save(db, a, "new a"), lambda: save(db, b, "new b"), lambda: save(db, c, "new c")]
        lead, futures = start_batch(db, pg, first, calls)
        assert lead.result(timeout=30)["version"] == 2
        wait_until("the batch to wait on a's row", lambda: lock_waiters(pg) == 1)
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                         "AND wait_event_type = 'Lock'")
        answers = [f.result(timeout=30) for f in futures]
        held_a.release()
        assert all(isinstance(x, DBAPIError) and is_unavailable(x) for x in answers), answers
        assert [version_of(pg, sid) for sid in (a, b, c)] == [(1, "v1")] * 3  # none applied
        # The next save finds a new connection.
        assert sessions.autosave(db, b, source_code="again", expected_version=None, owner_id=None,
                                 max_bytes=MAX_BYTES)["version"] == 2
    finally:
        db.dispose()


def test_concurrent_autosaves_of_many_sessions_are_all_durable_with_distinct_versions(pg: str) -> None:
    db = database(pg, 4)
    try:
        sids = [new_session(db) for _ in range(8)]
        answered: dict[uuid.UUID, list[tuple[int, str]]] = {sid: [] for sid in sids}
        lock = threading.Lock()

        def editor(i: int) -> None:
            sid = sids[i % len(sids)]
            for n in range(40):
                source = f"editor {i} save {n}"
                version = sessions.autosave(db, sid, source_code=source, expected_version=None, owner_id=None,
                                            max_bytes=MAX_BYTES)["version"]
                with lock:
                    answered[sid].append((version, source))

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(editor, range(32)))
        for sid in sids:
            versions = sorted(answered[sid])
            # Every acknowledged save made its own version, and the newest is what is stored.
            assert [v for v, _ in versions] == list(range(2, 2 + len(versions)))
            assert version_of(pg, sid) == versions[-1]
    finally:
        db.dispose()
