"""The session and execution services against the database layer alone (SQLite), no Flask:
every state change is conditional, and a refusal changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from livecode.errors import ApiError
from livecode.models import ExecutionStatus
from livecode.services import executions as ex
from livecode.services import sessions as ss
from livecode.services.batch import BatchItem, submit_batch
from livecode.streaming.bus import MemoryEventBus
from tests.support.inprocess import RecordingEnqueue, Rows

BUS = MemoryEventBus()  # the service publishes QUEUED itself


def new_session(db: Any, source: str = "print(1)", owner: uuid.UUID | None = None, **kw: Any) -> uuid.UUID:
    created = ss.create_session(db, language="python", source_code=source, owner_id=owner, max_bytes=1000, **kw)
    return uuid.UUID(created["session_id"])


def submit(db: Any, settings: Any, sid: uuid.UUID, enqueue: Any = None, **opts: Any) -> dict[str, Any]:
    return ex.submit_execution(db, enqueue or RecordingEnqueue(), settings, sid, owner_id=None, events=BUS,
                               options=ex.ExecuteOptions(**opts))


def code(exc: pytest.ExceptionInfo[ApiError]) -> tuple[int, str]:
    return exc.value.status, exc.value.code


# ---- sessions ------------------------------------------------------------------------------


def test_create_get_autosave_delete(db: Any) -> None:
    sid = new_session(db, "v1")
    assert ss.get_session(db, sid, None)["version"] == 1
    saved = ss.autosave(db, sid, source_code="v2", expected_version=1, owner_id=None, max_bytes=100)
    assert saved["version"] == 2 and saved["session_id"] == str(sid)
    assert ss.autosave(db, sid, source_code="v3", expected_version=None, owner_id=None, max_bytes=100)["version"] == 3
    got = ss.get_session(db, sid, None, fresh=True)
    assert (got["source_code"], got["version"]) == ("v3", 3)
    assert ss.session_etag(sid, 3) == f'"{sid}-v3"'
    ss.delete_session(db, sid, None)
    with pytest.raises(ApiError) as e:
        ss.get_session(db, sid, None)
    assert code(e) == (404, "SESSION_NOT_FOUND")


def test_autosave_conflict_names_both_versions_and_keeps_the_stored_source(db: Any) -> None:
    sid = new_session(db, "v1")
    ss.autosave(db, sid, source_code="v2", expected_version=1, owner_id=None, max_bytes=100)
    with pytest.raises(ApiError) as e:
        ss.autosave(db, sid, source_code="lost?", expected_version=1, owner_id=None, max_bytes=100)
    assert code(e) == (409, "VERSION_CONFLICT")
    assert e.value.details == {"current_version": 2, "your_version": 1}
    assert ss.get_session(db, sid, None)["source_code"] == "v2"


def test_owner_filter_hides_other_owners_sessions(db: Any, settings: Any) -> None:
    from livecode.services import accounts

    alice = uuid.UUID(accounts.create_user(db, "alice", "correct horse battery")["user_id"])
    bob = uuid.UUID(accounts.create_user(db, "bobby", "correct horse battery")["user_id"])
    sid = new_session(db, owner=alice)
    for call in (lambda: ss.get_session(db, sid, bob),
                 lambda: ss.autosave(db, sid, source_code="x", expected_version=None, owner_id=bob, max_bytes=9),
                 lambda: ss.delete_session(db, sid, bob),
                 lambda: ex.list_executions(db, sid, bob, 1, 10)):
        with pytest.raises(ApiError) as e:
            call()
        assert e.value.status == 404
    assert ss.get_session(db, sid, alice)["source_code"] == "print(1)"


def test_create_refusals(db: Any, settings: Any) -> None:
    rows = Rows(settings.database_url)
    for kwargs, expected in [
        ({"language": "cobol", "source_code": "x"}, (400, "UNSUPPORTED_LANGUAGE")),
        ({"language": "python", "source_code": "x" * 11}, (413, "SOURCE_TOO_LARGE")),
        ({"language": "python", "source_code": "a\x00"}, (400, "INVALID_SOURCE")),
        ({"language": "python", "source_code": "\ud800"}, (400, "INVALID_SOURCE")),
    ]:
        with pytest.raises(ApiError) as e:
            ss.create_session(db, owner_id=None, max_bytes=10, **kwargs)
        assert code(e) == expected
    capped = settings.with_overrides(max_sessions=1)
    new_session(db, settings=capped)
    with pytest.raises(ApiError) as e:
        new_session(db, settings=capped)
    assert code(e) == (429, "SESSION_QUOTA_EXCEEDED")
    assert rows.count("code_sessions") == 1


# ---- executions: submit, read --------------------------------------------------------------


def test_submit_inserts_queued_publishes_then_enqueues(db: Any, settings: Any) -> None:
    sid = new_session(db)
    order: list[str] = []
    enqueue = RecordingEnqueue(then=lambda eid: order.append("enqueue"))
    out = ex.submit_execution(db, enqueue, settings, sid, owner_id=None, events=BUS,
                              options=ex.ExecuteOptions(stdin="x"),
                              request_id="r1", on_queued=lambda eid: order.append("queued"))
    assert order == ["queued", "enqueue"]
    assert enqueue.calls == [(out["execution_id"], "interactive", "r1")]
    got = ex.get_execution(db, uuid.UUID(out["execution_id"]), None)
    assert (got["status"], got["attempts"], got["priority"]) == ("QUEUED", 0, "interactive")


def test_a_failing_on_queued_or_enqueue_never_loses_the_run(db: Any, settings: Any) -> None:
    def boom(_: Any) -> None:
        raise RuntimeError("down")

    sid = new_session(db)
    out = ex.submit_execution(db, RecordingEnqueue(fail=True), settings, sid, owner_id=None, events=BUS,
                              options=ex.ExecuteOptions(), on_queued=boom)
    assert ex.get_execution(db, uuid.UUID(out["execution_id"]), None)["status"] == "QUEUED"


def test_one_active_interactive_run_per_session(db: Any, settings: Any) -> None:
    sid = new_session(db)
    first = submit(db, settings, sid)["execution_id"]
    with pytest.raises(ApiError) as e:
        submit(db, settings, sid)
    assert code(e) == (409, "EXECUTION_IN_PROGRESS")
    assert e.value.details == {"active_execution_id": first}
    # Batch runs do not hold the session.
    assert submit(db, settings, sid, priority="batch")["status"] == "QUEUED"


def test_a_run_meeting_one_that_ends_at_that_moment_is_queued(
    db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # SQLite's wording of the one-active conflict (PostgreSQL's: test_submission_statement.py).
    sid = new_session(db)
    first = uuid.UUID(submit(db, settings, sid)["execution_id"])
    active = ex._active_execution

    def ends_first(database: Any, session_id: uuid.UUID) -> Any:
        claimed = ex.claim_execution(database, first, "worker-1")  # the worker's claim and final write, just then
        assert claimed is not None and ex.finish_execution(database, first, claimed.attempt, ExecutionStatus.COMPLETED)
        return active(database, session_id)

    monkeypatch.setattr(ex, "_active_execution", ends_first)
    assert submit(db, settings, sid)["status"] == "QUEUED"


def test_submit_refusals_change_nothing(db: Any, settings: Any) -> None:
    rows = Rows(settings.database_url)
    sid = new_session(db)
    before = rows.snapshot()
    for opts, expected in [
        ({"limits": {"time_limit_ms": 10**9}}, (400, "LIMIT_ABOVE_MAXIMUM")),
        ({"limits": {"time_limit_ms": 0}}, (400, "INVALID_LIMIT")),
        ({"limits": {"walltime": 1}}, (400, "VALIDATION_ERROR")),
        ({"priority": "now"}, (400, "INVALID_PRIORITY")),
        ({"args": ["a"] * 65}, (400, "INVALID_ARGS")),
        ({"stdin": "x" * (settings.max_stdin_bytes + 1)}, (413, "INPUT_TOO_LARGE")),
    ]:
        with pytest.raises(ApiError) as e:
            submit(db, settings, sid, **opts)
        assert code(e) == expected, opts
    with pytest.raises(ApiError) as e:
        submit(db, settings, uuid.uuid4())
    assert code(e) == (404, "SESSION_NOT_FOUND")
    assert rows.snapshot() == before


def test_execution_quota(db: Any, settings: Any) -> None:
    capped = settings.with_overrides(max_stored_executions=1)
    sid = new_session(db)
    submit(db, capped, sid, priority="batch")
    with pytest.raises(ApiError) as e:
        submit(db, capped, sid, priority="batch")
    assert code(e) == (429, "EXECUTION_QUOTA_EXCEEDED")


def test_list_pages_newest_first(db: Any, settings: Any) -> None:
    sid = new_session(db)
    ids = [submit(db, settings, sid, priority="batch")["execution_id"] for _ in range(3)]
    page = ex.list_executions(db, sid, None, 1, 2)
    assert [e["execution_id"] for e in page["items"]] == ids[::-1][:2] and page["total"] == 3
    assert [e["execution_id"] for e in ex.list_executions(db, sid, None, 2, 2)["items"]] == ids[:1]
    with pytest.raises(ApiError):
        ex.get_execution(db, uuid.uuid4(), None)


def test_encodings() -> None:
    assert ex.check_encoding(None) == "text" and ex.check_encoding("") == "text"
    assert ex.check_encoding("base64") == "base64"
    with pytest.raises(ApiError):
        ex.check_encoding("hex")
    assert ex.encode_output(None) is None
    assert ex.encode_output(b"\x00\xff", "base64") == "AP8="
    assert ex.encode_output(b"ok\xff") == "ok\ufffd"


def test_limit_maxima_follow_the_settings(settings: Any) -> None:
    maxima = ex.limit_maxima(settings.with_overrides(max_time_limit_ms=5000, max_processes=7))
    assert maxima["time_limit_ms"] == maxima["cpu_time_ms"] == 5000 and maxima["max_processes"] == 7
    assert set(maxima) == set(ex.LIMIT_FIELDS)


# ---- executions: the worker's transitions --------------------------------------------------


def test_claim_finish_only_once_and_only_by_the_current_attempt(db: Any, settings: Any) -> None:
    sid = new_session(db, "print('run me')")
    eid = uuid.UUID(submit(db, settings, sid, stdin="in", args=["a"])["execution_id"])
    claimed = ex.claim_execution(db, eid, "w1")
    assert claimed is not None
    assert (claimed.attempt, claimed.source_code, claimed.stdin, claimed.args) == (1, "print('run me')", "in", ["a"])
    assert ex.claim_execution(db, eid, "w2") is None  # a second delivery changes nothing
    assert not ex.finish_execution(db, eid, 2, ExecutionStatus.COMPLETED)  # not that attempt's
    done = ex.finish_execution_returning(db, eid, 1, ExecutionStatus.COMPLETED, stdout=b"out", exit_code=0)
    assert done is not None and (done["status"], done["stdout"], done["worker"]) == ("COMPLETED", "out", "w1")
    assert ex.get_execution(db, eid, None) == done
    assert not ex.finish_execution(db, eid, 1, ExecutionStatus.FAILED)  # terminal stays terminal
    assert ex.get_execution(db, eid, None)["status"] == "COMPLETED"


def test_release_puts_an_interrupted_run_back_and_fail_queued_ends_it(db: Any, settings: Any) -> None:
    sid = new_session(db)
    eid = uuid.UUID(submit(db, settings, sid)["execution_id"])
    claimed = ex.claim_execution(db, eid, "w1")
    assert claimed is not None
    assert not ex.release_execution(db, eid, 5)
    assert ex.release_execution(db, eid, 1)
    row = ex.get_execution(db, eid, None)
    assert (row["status"], row["worker"], row["started_at"]) == ("QUEUED", None, None)
    again = ex.claim_execution(db, eid, "w2")
    assert again is not None and again.attempt == 2
    assert ex.fail_queued(db, eid, "WORKER_LOST", "the worker was lost")
    row = ex.get_execution(db, eid, None)
    assert (row["status"], row["reason"], row["stderr"]) == ("FAILED", "WORKER_LOST", "the worker was lost")
    assert not ex.fail_queued(db, eid, "WORKER_LOST", "again")


# ---- batch ---------------------------------------------------------------------------------


def test_batch_is_all_or_nothing_and_charged_its_size(db: Any, settings: Any) -> None:
    rows = Rows(settings.database_url)
    a, b = new_session(db, "a"), new_session(db, "b")
    charged: list[int] = []
    enqueue = RecordingEnqueue()
    out = submit_batch(db, enqueue, settings, [BatchItem(a, ex.ExecuteOptions()), BatchItem(b, ex.ExecuteOptions()),
                                               BatchItem(a, ex.ExecuteOptions(stdin="2"))],
                       owner_id=None, events=BUS, charge=charged.append)
    assert out["count"] == 3 and charged == [3]
    assert [c[1] for c in enqueue.calls] == ["batch"] * 3
    before = rows.snapshot()

    def refuse(n: int) -> None:
        raise ApiError("no", status=429, code="RATE_LIMITED")

    with pytest.raises(ApiError):
        submit_batch(db, enqueue, settings, [BatchItem(a, ex.ExecuteOptions())], owner_id=None, events=BUS,
                     charge=refuse)
    with pytest.raises(ApiError) as e:
        submit_batch(db, enqueue, settings, [BatchItem(a, ex.ExecuteOptions()), BatchItem(uuid.uuid4(),
                                                                                          ex.ExecuteOptions())],
                     owner_id=None, events=BUS, charge=charged.append)
    assert e.value.status == 404 and charged == [3]
    assert rows.snapshot() == before and len(enqueue.calls) == 3
