"""A run of unchanged single-file code is one PostgreSQL statement (services/submission_sql.py):
the session read, the source and the execution in one round trip, with the row, the source and the
version it names as the longer path makes them, and every refusal (access, language, storage cap)
still refusing with nothing written. Real PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from livecode.db import Database
from livecode.errors import ApiError
from livecode.services import accounts, executions, history, members, programs, sessions, storage, submission_sql
from livecode.services.executions import ExecuteOptions, submit_execution
from livecode.streaming.bus import MemoryEventBus
from tests.integration.test_round_trips import round_trips
from tests.support.pgtrace import scratch_db

# Beyond ASCII (two-, three- and four-byte UTF-8), quotes and a backslash: PostgreSQL's hash of
# the code and of the file set's manifest must be Python's.
CODE = "print('h\u00e9llo \u2603 \U0001f600 \"q\" \\\\ \u4e2d')\n"


@pytest.fixture
def db(pg_admin_url: str) -> Iterator[Database]:
    with scratch_db(pg_admin_url) as database:
        yield database


def new_session(db: Database, owner: uuid.UUID | None = None, code: str = CODE, **kw: Any) -> uuid.UUID:
    return uuid.UUID(sessions.create_session(db, language="python", source_code=code, owner_id=owner,
                                             max_bytes=1 << 20, settings=db.settings, **kw)["session_id"])


def submit(db: Database, sid: uuid.UUID, owner: uuid.UUID | None = None, **kw: Any) -> uuid.UUID:
    settings = kw.pop("settings", db.settings)
    options = ExecuteOptions(priority="batch")  # several at once: no "one interactive run at a time"
    return uuid.UUID(submit_execution(db, lambda *_: None, settings, sid, owner_id=owner, options=options,
                                      events=MemoryEventBus(), **kw)["execution_id"])


def rows(db: Database, sql: str, **params: Any) -> list[Any]:
    with db.read_core(fresh=True) as conn:
        return list(conn.execute(text(sql), params).all())


def test_a_run_of_unchanged_code_is_one_round_trip_and_stores_what_the_longer_path_stores(db: Database) -> None:
    sid = new_session(db)
    first = submit(db, sid)  # the first run makes the version of its code
    trips: list[int] = []
    for _ in range(3):  # the third past psycopg's threshold for preparing the statement
        n, sent = round_trips(db, lambda: submit(db, sid))
        trips.append(n)
        assert n == 1, sent
    runs = rows(db, "SELECT id, source_hash, entry, history_version, language, status, user_id FROM executions "
                    "WHERE session_id = :sid ORDER BY queued_at", sid=sid)
    assert len(runs) == 4 and runs[0].id == first
    digest = storage.source_hash(CODE)
    for run in runs:
        assert (run.source_hash, run.entry, run.history_version, run.language, run.status, run.user_id) == (
            digest, None, 1, "python", "QUEUED", None)
    assert rows(db, "SELECT content, size_bytes FROM sources WHERE hash = :h", h=digest) == [
        (CODE, len(CODE.encode()))]
    # No version made for the unchanged runs: the newest is still the first run's.
    assert rows(db, "SELECT number, execution_id FROM session_versions WHERE session_id = :sid", sid=sid) == [
        (1, first)]


def test_a_run_of_new_code_makes_its_version_in_the_same_one_statement(db: Database) -> None:
    sid = new_session(db)
    n, sent = round_trips(db, lambda: submit(db, sid))  # the first run: its version is made
    assert n == 1, sent
    edited = CODE.replace("llo", "LLO")
    with db.write_one() as conn:  # as an autosave of the code (which makes no version this soon)
        conn.execute(text("UPDATE code_sessions SET source_code = :c WHERE id = :sid"), {"c": edited, "sid": sid})
    for _ in range(3):
        n, sent = round_trips(db, lambda: submit(db, sid))
        assert n == 1, sent
    runs = rows(db, "SELECT id, source_hash, history_version FROM executions WHERE session_id = :sid "
                    "ORDER BY queued_at", sid=sid)
    assert [(r.source_hash, r.history_version) for r in runs] == [
        (storage.source_hash(CODE), 1), (storage.source_hash(edited), 2), (storage.source_hash(edited), 2),
        (storage.source_hash(edited), 2)]
    # The versions, their file sets and files as history.record_run makes them (Python's hashes).
    versions = rows(db, "SELECT number, reason, label, author_id, execution_id, set_hash FROM session_versions "
                        "WHERE session_id = :sid ORDER BY number", sid=sid)
    sets = [history.ref_of_program(programs.Program((("main.py", code),), "main.py")) for code in (CODE, edited)]
    assert [tuple(v) for v in versions] == [
        (1, "execution", None, None, runs[0].id, sets[0].hash), (2, "execution", None, None, runs[1].id, sets[1].hash)]
    for ref in sets:
        assert rows(db, "SELECT entry FROM file_sets WHERE hash = :h", h=ref.hash) == [("main.py",)]
        assert rows(db, "SELECT position, path, source_hash FROM file_set_files WHERE set_hash = :h", h=ref.hash) == [
            (0, "main.py", ref.files[0][1])]
    assert rows(db, "SELECT history_seq, history_set FROM code_sessions WHERE id = :sid", sid=sid) == [
        (2, sets[1].hash)]
    # The session's history reads it back as the code it ran.
    assert history.load_files(db.engine.connect(), sets[1].hash) == [("main.py", edited)]


def test_the_statement_is_chosen_by_the_sessions_last_run_and_a_wrong_guess_costs_one_more(db: Database) -> None:
    sid = new_session(db)
    trips = [round_trips(db, lambda: submit(db, sid))[0] for _ in range(3)]  # made a version, rerun, rerun
    assert trips == [1, 1, 1]
    assert submission_sql.reruns[sid] is True
    edited = CODE.replace("llo", "LLO")
    with db.write_one() as conn:
        conn.execute(text("UPDATE code_sessions SET source_code = :c WHERE id = :sid"), {"c": edited, "sid": sid})
    n, sent = round_trips(db, lambda: submit(db, sid))  # guessed a rerun: the lean statement, then the full one
    assert n == 2, sent
    assert submission_sql.reruns[sid] is False
    submission_sql.reruns.clear()  # another process's guess, or none: the same rows
    assert round_trips(db, lambda: submit(db, sid))[0] == 1
    submission_sql.reruns[sid] = True
    assert round_trips(db, lambda: submit(db, sid))[0] == 1
    runs = rows(db, "SELECT source_hash, history_version FROM executions WHERE session_id = :sid ORDER BY queued_at",
                sid=sid)
    assert [tuple(r) for r in runs] == [(storage.source_hash(CODE), 1)] * 3 + [(storage.source_hash(edited), 2)] * 3
    assert rows(db, "SELECT count(*) FROM session_versions WHERE session_id = :sid", sid=sid) == [(2,)]


def test_a_multi_file_program_keeps_its_files_rows(db: Database) -> None:
    sid = new_session(db, code=None, files=[("main.py", "import util\n"), ("util.py", CODE)], entry="main.py")
    submit(db, sid)
    second = submit(db, sid)  # unchanged, but its files must be listed: not the one statement
    assert rows(db, "SELECT path FROM execution_files WHERE execution_id = :e ORDER BY position", e=second) == [
        ("main.py",), ("util.py",)]


class OnlyJavascript:
    """A catalog in which no worker offers Python any more (the workers that had it left)."""

    def listing(self) -> list[dict[str, Any]]:
        return []

    def runnable(self) -> set[str] | None:
        return {"javascript"}


def test_refusals_of_unchanged_code_write_nothing(db: Database) -> None:
    sid = new_session(db)
    submit(db, sid)

    def count() -> int:
        return len(rows(db, "SELECT id FROM executions WHERE session_id = :sid", sid=sid))

    with pytest.raises(ApiError) as err:
        submit(db, sid, languages=OnlyJavascript())
    assert err.value.code == "LANGUAGE_UNAVAILABLE"
    assert count() == 1

    capped = dataclasses.replace(db.settings, max_stored_executions=2)
    submit(db, sid, settings=capped)  # the second of two
    with pytest.raises(ApiError) as err:
        submit(db, sid, settings=capped)
    assert err.value.status == 429 and err.value.code == "EXECUTION_QUOTA_EXCEEDED"
    assert count() == 2

    # Another user's session: neither a stranger nor a viewer runs it; an editor does.
    owner = uuid.UUID(accounts.create_user(db, "owner1", "a-long-password")["user_id"])
    other = uuid.UUID(accounts.create_user(db, "other1", "a-long-password")["user_id"])
    theirs = new_session(db, owner=owner)
    submit(db, theirs, owner=owner)
    with pytest.raises(ApiError) as err:
        submit(db, theirs, owner=other)
    assert err.value.status == 404
    members.add_member(db, theirs, owner, "other1", "viewer")
    with pytest.raises(ApiError) as err:
        submit(db, theirs, owner=other)
    assert err.value.status == 403
    assert len(rows(db, "SELECT id FROM executions WHERE session_id = :sid", sid=theirs)) == 1
    members.add_member(db, theirs, owner, "other1", "editor")
    n, sent = round_trips(db, lambda: submit(db, theirs, owner=other))
    assert n == 1, sent
    assert rows(db, "SELECT user_id, history_version FROM executions WHERE session_id = :sid ORDER BY queued_at",
                sid=theirs) == [(owner, 1), (owner, 1)]


@pytest.mark.parametrize("language", ["python", "java", "c", "javascript", "nonexistent-language"])
def test_postgresqls_file_set_hash_is_historys(db: Database, language: str) -> None:
    before, after = history.single_file_set_parts(language)
    digest = storage.source_hash(CODE)
    (sql,) = rows(db, "SELECT encode(sha256(convert_to(:m, 'UTF8')), 'hex')", m=before + digest + after)[0]
    snapshot_ref = history.FileSetRef(((programs.default_path(language), digest),),
                                      programs.default_path(language), {digest: CODE})
    assert sql == snapshot_ref.hash


class _GuessByThread(dict):  # type: ignore[type-arg]
    """submission_sql.reruns as two API processes would hold it: the thread named "rerun" guesses
    that the session's code is unchanged (submit_unchanged), any other that it was edited
    (submit_single). Nothing is remembered."""

    def get(self, _key: Any, _default: Any = None) -> bool:
        return threading.current_thread().name == "rerun"

    def __setitem__(self, _key: Any, _value: Any) -> None:
        pass

    def pop(self, *_args: Any) -> None:
        return None


def _interactive(db: Database, sid: uuid.UUID, out: dict[str, str]) -> None:
    try:
        submit_execution(db, lambda *_: None, db.settings, sid, owner_id=None,
                         options=ExecuteOptions(priority="interactive"), events=MemoryEventBus())
        out[threading.current_thread().name] = "202"
    except ApiError as exc:
        out[threading.current_thread().name] = f"{exc.status} {exc.code}"
    except Exception as exc:  # noqa: BLE001 - what the API would turn into a 5xx
        out[threading.current_thread().name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


def test_two_reruns_at_once_through_the_two_statements_never_deadlock(
    pg_admin_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two API processes guessing differently about one session's rerun: one takes submit_single,
    # the other submit_unchanged. Both take the code's source row, then the session's one-active
    # slot, in that order: one run is queued, the other told a run is in progress (409), never a
    # deadlock (a 503). The source row is held for a moment (as any writer of that code may) so
    # that both statements are under way at once.
    monkeypatch.setattr(submission_sql, "reruns", _GuessByThread())
    with scratch_db(pg_admin_url, pool_size=4) as db:
        sid = new_session(db, code="print('twice at once')\n")
        submit(db, sid)  # the code's version exists: either statement may run it
        out: dict[str, str] = {}
        with db.engine.connect() as holder:
            holder.execute(text("SELECT 1 FROM sources WHERE hash = :h FOR UPDATE"),
                           {"h": storage.source_hash("print('twice at once')\n")})
            edited = threading.Thread(target=_interactive, args=(db, sid, out), name="edited")
            edited.start()
            time.sleep(0.3)
            rerun = threading.Thread(target=_interactive, args=(db, sid, out), name="rerun")
            rerun.start()
            time.sleep(0.3)
            holder.commit()
        edited.join(30)
        rerun.join(30)
        assert sorted(out.values()) == ["202", "409 EXECUTION_IN_PROGRESS"], out


def test_a_run_that_meets_a_run_ending_at_that_moment_is_queued(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    # The insert meets the session's interactive run, which ends before the refusal can name it:
    # the slot is free, so the submission is tried once more and queued (it was a 404 for a
    # session that exists).
    sid = new_session(db)
    first = submit_execution(db, lambda *_: None, db.settings, sid, owner_id=None,
                             options=ExecuteOptions(priority="interactive"), events=MemoryEventBus())
    active = executions._active_execution

    def ends_first(database: Database, session_id: uuid.UUID) -> Any:
        with database.write_core() as conn:  # the worker's final write, just then
            conn.execute(text("UPDATE executions SET status = 'COMPLETED', finished_at = now() WHERE id = :i"),
                         {"i": uuid.UUID(first["execution_id"])})
        return active(database, session_id)

    monkeypatch.setattr(executions, "_active_execution", ends_first)
    second = submit_execution(db, lambda *_: None, db.settings, sid, owner_id=None,
                              options=ExecuteOptions(priority="interactive"), events=MemoryEventBus())
    assert rows(db, "SELECT status FROM executions WHERE id = :i", i=uuid.UUID(second["execution_id"])) == [("QUEUED",)]
