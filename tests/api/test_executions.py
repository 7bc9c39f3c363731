"""/api/v1/executions: submit, get, list, wait=true, and what a refused submission leaves behind."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from tests.support.inprocess import LiveApp, expect_error, finish_like_a_worker, uid

EXECUTIONS = "/api/v1/executions"


def execute_url(session_id: str) -> str:
    return f"{EXECUTIONS}/session/{session_id}/execute"


def test_submit_stores_a_queued_run_and_queues_its_id_once(live: LiveApp) -> None:
    sid = live.session("print(2)")["session_id"]
    r = live.client.post(execute_url(sid), json={"stdin": "in", "args": ["-x"]},
                         headers={"X-Request-ID": "req-123"})
    assert r.status_code == 202
    body = r.get_json()
    assert body["status"] == "QUEUED" and body["session_id"] == sid
    assert r.headers["X-Request-ID"] == "req-123"
    assert live.enqueued.calls == [(body["execution_id"], "interactive", "req-123")]
    row = live.rows.one("executions", "id = :id", id=uid(body["execution_id"]))
    assert (row["status"], row["stdin"], row["priority"], row["attempts"]) == ("QUEUED", "in", "interactive", 0)
    # The run is of the code as it was when submitted, kept by hash.
    assert live.rows.one("sources", "hash = :h", h=row["source_hash"])["content"] == "print(2)"


def test_an_empty_body_is_accepted(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    r = live.client.post(execute_url(sid))
    assert r.status_code == 202, r.get_json()


def test_a_second_run_while_one_is_active_is_409_and_queues_nothing(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    first = live.execute(sid)["execution_id"]
    before = live.rows.snapshot()
    err = expect_error(live.client.post(execute_url(sid), json={}), 409, "EXECUTION_IN_PROGRESS")
    assert err["details"]["active_execution_id"] == first
    assert live.rows.snapshot() == before
    assert live.enqueued.ids == [first]
    # Once the first has finished, the session runs again.
    finish_like_a_worker(live, first, stdout=b"ok")
    assert live.client.post(execute_url(sid), json={}).status_code == 202


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"nope": 1}, "UNKNOWN_FIELD"),
        ({"args": "x"}, "INVALID_FIELD"),
        ({"args": [1]}, "INVALID_FIELD"),
        ({"interactive": "yes"}, "INVALID_FIELD"),
        ({"merge_stderr": "true"}, "INVALID_FIELD"),
        ({"merge_stderr": 1}, "INVALID_FIELD"),
        ({"stdin": 5}, "INVALID_FIELD"),
        ({"time_limit_ms": 0}, "INVALID_FIELD"),
        ({"time_limit_ms": "1"}, "INVALID_FIELD"),
        ({"time_limit_ms": 10**9}, "LIMIT_ABOVE_MAXIMUM"),
        ({"memory_limit_mb": 100_000}, "LIMIT_ABOVE_MAXIMUM"),
        ({"stack_kb": 10**7}, "LIMIT_ABOVE_MAXIMUM"),
        ({"max_file_size_kb": 10**7}, "LIMIT_ABOVE_MAXIMUM"),
        ({"cpu_extra_ms": 10**9}, "LIMIT_ABOVE_MAXIMUM"),
        ({"cpu_extra_ms": -1}, "INVALID_FIELD"),
        ({"cpu_time_ms": 1000, "cpu_extra_ms": 10**9}, "LIMIT_ABOVE_MAXIMUM"),
        ({"priority": "urgent"}, "INVALID_PRIORITY"),
        ({"args": ["a"] * 65}, "INVALID_ARGS"),
        ({"args": ["a\u0000"]}, "INVALID_SOURCE"),
    ],
)
def test_bad_options_are_400_and_nothing_is_stored_or_queued(live: LiveApp, body: dict[str, Any], code: str) -> None:
    sid = live.session()["session_id"]
    before = live.rows.snapshot()
    expect_error(live.client.post(execute_url(sid), json=body), 400, code)
    assert live.rows.snapshot() == before
    assert live.enqueued.calls == []


def test_merge_stderr_is_kept_with_the_run_carried_to_the_worker_and_shown(live: LiveApp) -> None:
    from livecode.models import ExecutionStatus
    from livecode.sandbox import SandboxLimits
    from livecode.services import executions

    sid = live.session()["session_id"]
    merged = live.execute(sid, {"merge_stderr": True})["execution_id"]
    assert live.client.get(f"{EXECUTIONS}/{merged}").get_json()["merge_stderr"] is True
    claimed = executions.claim_execution(live.db, uuid.UUID(merged), "test-worker@inprocess")
    assert claimed is not None and claimed.run_request(SandboxLimits()).merge_stderr is True
    executions.finish_execution(live.db, claimed.execution_id, claimed.attempt, ExecutionStatus.COMPLETED)
    for body in ({}, {"merge_stderr": False}, {"merge_stderr": None}):
        eid = live.execute(sid, body)["execution_id"]
        assert live.client.get(f"{EXECUTIONS}/{eid}").get_json()["merge_stderr"] is False, body
        finish_like_a_worker(live, eid)
    err = expect_error(live.client.post(execute_url(sid), json={"merge_stderr": "yes"}), 400, "INVALID_FIELD")
    assert "merge_stderr" in err["message"] and err["details"] == {"field": "merge_stderr"}


def test_limit_above_maximum_names_the_limit(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    err = expect_error(live.client.post(execute_url(sid), json={"time_limit_ms": 10**9}), 400)
    assert err["details"] == {"limit": "time_limit_ms", "maximum": live.settings.max_time_limit_ms}


def test_stack_file_size_and_cpu_extra_limits_are_kept_with_the_run(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    asked = {"stack_kb": 1024, "max_file_size_kb": 64, "cpu_extra_ms": 500, "cpu_time_ms": 1000}
    eid = live.client.post(execute_url(sid), json=asked).get_json()["execution_id"]
    limits = live.rows.one("executions", "id = :id", id=uid(eid))["limits"]
    assert (json.loads(limits) if isinstance(limits, str) else limits) == asked
    err = expect_error(live.client.post(execute_url(sid), json={"stack_kb": 10**7}), 400)
    assert err["details"] == {"limit": "stack_kb", "maximum": live.settings.max_stack_limit_kb}


def test_cpu_and_its_extra_time_together_stay_within_the_cpu_maximum(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    top = live.settings.max_time_limit_ms
    # Killed at cpu + extra: each within the maximum is not enough.
    err = expect_error(live.client.post(execute_url(sid), json={"cpu_time_ms": top, "cpu_extra_ms": 1}), 400,
                       "LIMIT_ABOVE_MAXIMUM")
    assert err["details"] == {"limit": "cpu_extra_ms", "maximum": 0}
    ok = live.client.post(execute_url(sid), json={"cpu_time_ms": top - 500, "cpu_extra_ms": 500})
    assert ok.status_code == 202, ok.get_json()


def test_no_extra_cpu_time_is_the_default_and_may_be_asked(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    r = live.client.post(execute_url(sid), json={"cpu_extra_ms": 0})
    assert r.status_code == 202, r.get_json()


def test_stdin_over_the_limit_is_413(make_live: Any) -> None:
    live = make_live(max_stdin_bytes=4)
    sid = live.session()["session_id"]
    expect_error(live.client.post(execute_url(sid), json={"stdin": "12345"}), 413, "INPUT_TOO_LARGE")
    assert live.rows.count("executions") == 0


def test_unknown_and_malformed_session(live: LiveApp) -> None:
    expect_error(live.client.post(execute_url(str(uuid.uuid4())), json={}), 404, "SESSION_NOT_FOUND")
    expect_error(live.client.post(execute_url("nope"), json={}), 400, "INVALID_ID")
    assert live.rows.count("executions") == 0 and live.enqueued.calls == []


def test_a_failed_publish_still_answers_202_and_keeps_the_run(live: LiveApp) -> None:
    """The row is the truth: the reconciler queues a run whose publish failed. What the API
    acknowledged is never lost."""
    sid = live.session()["session_id"]
    live.enqueued.fail = True
    r = live.client.post(execute_url(sid), json={})
    assert r.status_code == 202
    assert live.rows.one("executions", "id = :id", id=uid(r.get_json()["execution_id"]))["status"] == "QUEUED"


def test_execution_quota_is_429_and_creates_nothing(make_live: Any) -> None:
    live = make_live(max_stored_executions=1)
    sid = live.session()["session_id"]
    finish_like_a_worker(live, live.execute(sid)["execution_id"])
    before = live.rows.snapshot()
    expect_error(live.client.post(execute_url(sid), json={}), 429, "EXECUTION_QUOTA_EXCEEDED")
    assert live.rows.snapshot() == before and len(live.enqueued.calls) == 1


def test_rate_limit_is_429_with_retry_after_and_creates_nothing(make_live: Any) -> None:
    live = make_live(execution_rate_limit="2/minute")
    sids = [live.session()["session_id"] for _ in range(3)]
    live.execute(sids[0])
    live.execute(sids[1])
    before = live.rows.snapshot()
    r = live.client.post(execute_url(sids[2]), json={})
    expect_error(r, 429, "RATE_LIMITED")
    assert int(r.headers["Retry-After"]) >= 1
    assert live.rows.snapshot() == before and len(live.enqueued.calls) == 2


# ---- reading results ---------------------------------------------------------------------------


def test_get_shows_a_queued_run_then_its_result(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    eid = live.execute(sid)["execution_id"]
    r = live.client.get(f"{EXECUTIONS}/{eid}")
    assert r.status_code == 200
    assert r.get_json()["status"] == "QUEUED" and r.get_json()["stdout"] is None
    finish_like_a_worker(live, eid, stdout=b"hello\n", stderr=b"", execution_time_ms=12)
    got = live.client.get(f"{EXECUTIONS}/{eid}").get_json()
    assert (got["status"], got["stdout"], got["exit_code"], got["attempts"]) == ("COMPLETED", "hello\n", 0, 1)
    assert got["encoding"] == "text" and got["finished_at"] is not None


def test_output_bytes_come_back_exactly_in_base64(live: LiveApp) -> None:
    raw = b"\x00\xffbin\xc3("
    sid = live.session()["session_id"]
    eid = live.execute(sid)["execution_id"]
    finish_like_a_worker(live, eid, stdout=raw)
    got = live.client.get(f"{EXECUTIONS}/{eid}?encoding=base64").get_json()
    assert got["encoding"] == "base64" and base64.b64decode(got["stdout"]) == raw
    text = live.client.get(f"{EXECUTIONS}/{eid}").get_json()["stdout"]
    assert text.startswith("\x00\ufffdbin") and "\ufffd" in text[4:]


def test_get_errors(live: LiveApp) -> None:
    expect_error(live.client.get(f"{EXECUTIONS}/{uuid.uuid4()}"), 404, "EXECUTION_NOT_FOUND")
    expect_error(live.client.get(f"{EXECUTIONS}/x"), 400, "INVALID_ID")
    sid = live.session()["session_id"]
    eid = live.execute(sid)["execution_id"]
    err = expect_error(live.client.get(f"{EXECUTIONS}/{eid}?encoding=utf-16"), 400, "INVALID_ENCODING")
    assert err["details"]["allowed"] == ["text", "base64"]


def test_list_is_newest_first_and_paged(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    ids = []
    for _ in range(3):
        eid = live.execute(sid)["execution_id"]
        finish_like_a_worker(live, eid)
        ids.append(eid)
    page1 = live.client.get(f"{EXECUTIONS}/session/{sid}?per_page=2").get_json()
    assert [e["execution_id"] for e in page1["items"]] == ids[::-1][:2]
    assert (page1["page"], page1["per_page"], page1["total"]) == (1, 2, 3)
    page2 = live.client.get(f"{EXECUTIONS}/session/{sid}?per_page=2&page=2").get_json()
    assert [e["execution_id"] for e in page2["items"]] == [ids[0]]


@pytest.mark.parametrize("query", ["page=0", "per_page=101", "per_page=x", "encoding=hex"])
def test_list_bad_query_is_400(live: LiveApp, query: str) -> None:
    sid = live.session()["session_id"]
    err = expect_error(live.client.get(f"{EXECUTIONS}/session/{sid}?{query}"), 400)
    assert err["code"] in {"INVALID_QUERY", "INVALID_ENCODING"}


def test_list_unknown_session_is_404(live: LiveApp) -> None:
    expect_error(live.client.get(f"{EXECUTIONS}/session/{uuid.uuid4()}"), 404, "SESSION_NOT_FOUND")


# ---- wait=true ---------------------------------------------------------------------------------


def test_wait_true_answers_200_with_the_finished_run(live: LiveApp) -> None:
    live.enqueued.then = lambda eid: finish_like_a_worker(live, eid, stdout=b"done")
    sid = live.session()["session_id"]
    r = live.client.post(execute_url(sid) + "?wait=true&timeout_ms=300", json={})
    assert r.status_code == 200
    assert (r.get_json()["status"], r.get_json()["stdout"]) == ("COMPLETED", "done")


def test_wait_true_answers_202_when_the_run_is_not_done_in_time(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    r = live.client.post(execute_url(sid) + "?wait=true&timeout_ms=50", json={})
    assert r.status_code == 202 and r.get_json()["status"] == "QUEUED"


@pytest.mark.parametrize("query", ["wait=true&timeout_ms=-1", "wait=true&timeout_ms=soon"])
def test_wait_bad_timeout_is_400(live: LiveApp, query: str) -> None:
    sid = live.session()["session_id"]
    expect_error(live.client.post(execute_url(sid) + "?" + query, json={}), 400, "INVALID_QUERY")
    assert live.rows.count("executions") == 0


# ---- following a run (SSE) ---------------------------------------------------------------------


def test_events_of_a_finished_run_replay_its_result_and_end(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    eid = live.execute(sid)["execution_id"]
    finish_like_a_worker(live, eid, stdout=b"out")
    r = live.client.get(f"{EXECUTIONS}/{eid}/events")
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    text = r.get_data(as_text=True)
    assert "event: result" in text and "event: end" in text
    assert '"status":"COMPLETED"' in text


def test_events_errors(live: LiveApp) -> None:
    expect_error(live.client.get(f"{EXECUTIONS}/{uuid.uuid4()}/events"), 404, "EXECUTION_NOT_FOUND")
    expect_error(live.client.get(f"{EXECUTIONS}/x/events"), 400, "INVALID_ID")
    sid = live.session()["session_id"]
    eid = live.execute(sid)["execution_id"]
    expect_error(live.client.get(f"{EXECUTIONS}/{eid}/events?last_event_id=bogus"), 400, "INVALID_LAST_EVENT_ID")
    expect_error(live.client.get(f"{EXECUTIONS}/{eid}/events", headers={"Last-Event-ID": "x-1"}), 400,
                 "INVALID_LAST_EVENT_ID")


def test_the_websocket_route_needs_a_websocket(live: LiveApp) -> None:
    """The WebSocket itself is exercised over a real socket (tests/integration/test_streaming.py);
    here: a plain GET is a 400 in the error shape, not a crash."""
    sid = live.session()["session_id"]
    eid = live.execute(sid)["execution_id"]
    expect_error(live.client.get(f"{EXECUTIONS}/{eid}/ws"), 400)
