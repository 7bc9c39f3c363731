"""Stopping runs (POST /api/v1/executions/{id}/cancel) against the real worker and sandbox, in the
distributed system (the signal travels through Redis to the worker process) and the embedded one
(in process): a queued run never runs, a running one ends promptly with the signal recorded and
its worker takes the next run, SIGINT is a KeyboardInterrupt its handler sees, a finished run is
409."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.test_streaming import open_sse, sse_events
from tests.sandbox.test_signals import HANDLER, LOOP
from tests.support.client import ApiClient

pytestmark = pytest.mark.integration

SLEEPER = LOOP
LIMIT_MS = 30_000


def start(api: ApiClient, source: str) -> tuple[str, str]:
    sid = api.create_session(source)["session_id"]
    r = api.execute(sid, time_limit_ms=LIMIT_MS)
    assert r.status_code == 202, r.text
    return sid, r.json()["execution_id"]


def cancel(api: ApiClient, eid: str, **body: Any) -> Any:
    return api.request("POST", f"/api/v1/executions/{eid}/cancel", json=body or None)


def wait_started(api: ApiClient, eid: str) -> None:
    """Until the program printed 'started' (it runs, and its handlers are in place)."""
    with open_sse(api, eid) as r:
        for event in sse_events(r):
            if event["event"] == "output" and "started" in event["data"]["text"]:
                return
            assert event["event"] != "end", event
    raise AssertionError("the program never started")


def test_a_running_program_is_stopped_promptly_and_the_worker_runs_the_next(api: ApiClient) -> None:
    sid, eid = start(api, SLEEPER)
    wait_started(api, eid)
    sent = time.monotonic()
    r = cancel(api, eid)
    assert r.status_code == 202, r.text
    assert r.json()["signal"] == "SIGKILL" and r.json()["status"] == "RUNNING"
    result = api.wait_execution(eid, timeout=60)
    took = time.monotonic() - sent
    assert (result["status"], result["reason"], result["signal"], result["exit_code"]) == (
        "CANCELLED", "CANCELLED", 9, None), result
    assert result["stdout"] == "started\n"
    assert took < LIMIT_MS / 1000 / 2, took  # ended by the cancel, long before its time limit
    assert result["execution_time_ms"] < LIMIT_MS
    # The session and the worker are free: the next run completes.
    api.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "print('next')"})
    r = api.execute(sid)
    assert r.status_code == 202, r.text
    nxt = api.wait_execution(r.json()["execution_id"])
    assert (nxt["status"], nxt["stdout"]) == ("COMPLETED", "next\n"), nxt
    # It has ended: a second cancel is 409 and changes nothing.
    r = cancel(api, eid)
    assert r.status_code == 409 and r.json()["error"]["code"] == "EXECUTION_FINISHED", r.text
    assert api.get_execution(eid)["status"] == "CANCELLED"


def test_sigint_is_a_keyboard_interrupt_the_program_handles(api: ApiClient) -> None:
    _, eid = start(api, HANDLER)
    wait_started(api, eid)
    r = cancel(api, eid, signal="SIGINT")
    assert r.status_code == 202 and r.json()["signal"] == "SIGINT", r.text
    result = api.wait_execution(eid, timeout=60)
    # The program caught it and ended on its own: its own outcome, with its handler's output.
    assert (result["status"], result["exit_code"], result["signal"]) == ("COMPLETED", 0, None), result
    assert result["stdout"] == "started\ncaught KeyboardInterrupt\n"


def test_an_unhandled_sigterm_is_recorded(api: ApiClient) -> None:
    _, eid = start(api, SLEEPER)
    wait_started(api, eid)
    assert cancel(api, eid, signal="SIGTERM").status_code == 202
    result = api.wait_execution(eid, timeout=60)
    assert (result["status"], result["reason"], result["signal"]) == ("CANCELLED", "CANCELLED", 15), result


def test_a_queued_run_is_cancelled_and_never_runs(api: ApiClient) -> None:
    # Fill every slot of the worker with programs that run until stopped; the next one waits.
    running: list[str] = []
    queued = None
    for _ in range(8):
        _, eid = start(api, SLEEPER)
        deadline = time.monotonic() + 5
        while api.get_execution(eid)["status"] == "QUEUED" and time.monotonic() < deadline:
            time.sleep(0.1)
        if api.get_execution(eid)["status"] == "QUEUED":
            queued = eid
            break
        running.append(eid)
    try:
        assert queued is not None, "every run started: the worker never got busy"
        r = cancel(api, queued, signal="SIGINT")  # whatever the signal, a queued run is cancelled
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["status"], body["reason"], body["started_at"], body["signal"]) == (
            "CANCELLED", "CANCELLED", None, None)
    finally:
        for eid in running:
            assert cancel(api, eid).status_code == 202
    for eid in running:
        assert api.wait_execution(eid, timeout=60)["status"] == "CANCELLED"
    # The worker is free now, and the cancelled run was not picked up by it.
    assert api.run("print('after')")["stdout"] == "after\n"
    final = api.get_execution(queued)
    assert (final["status"], final["started_at"], final["attempts"], final["worker"]) == ("CANCELLED", None, 0, None)


def test_a_finished_run_is_409(api: ApiClient) -> None:
    done = api.run("print(1)")
    r = cancel(api, done["execution_id"])
    assert r.status_code == 409, r.text
    assert r.json()["error"] == {"code": "EXECUTION_FINISHED", "message": r.json()["error"]["message"],
                                 "details": {"status": "COMPLETED"}}
    assert api.get_execution(done["execution_id"])["status"] == "COMPLETED"
