"""Worker and API processes die or are asked to stop in the middle of work: nothing the API
acknowledged is lost, no execution stays QUEUED or RUNNING, and each ends with one result.

The reconciler notices a lost worker once its heartbeat expires (LIVECODE_HEARTBEAT_TTL_S=4 here)
and the run is older than LIVECODE_REQUEUE_GRACE_S=2; it checks every
LIVECODE_RECONCILE_INTERVAL_S=1. Deadlines below are far above that sum, for a busy CI machine.
"""

from __future__ import annotations

import signal
import threading

import pytest
import requests

from tests.support.procs import wait_for
from tests.support.stack import Editors, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("restored_stack")]

SLOW_PROGRAM = "import time\nprint('start', flush=True)\ntime.sleep(4)\nprint('done')"


def submit(stack: Stack, program: str = SLOW_PROGRAM) -> str:
    client = stack.client()
    sid = client.create_session(program)["session_id"]
    r = client.execute(sid)
    assert r.status_code == 202, r.text
    return str(r.json()["execution_id"])


def test_sigkill_worker_mid_run_is_run_again_by_another(stack: Stack) -> None:
    workers = {"kill-a@fault": stack.start_worker("kill-a"), "kill-b@fault": stack.start_worker("kill-b")}
    eid = submit(stack)
    victim = stack.wait_status(eid, {"RUNNING"}, 60)["worker"]
    survivor = next(name for name in workers if name != victim)

    workers[victim].signal(signal.SIGKILL)
    workers[victim].proc.wait(10)
    final = stack.wait_terminal(eid, 90)

    assert final["status"] == "COMPLETED", (final, stack.logs())
    assert final["worker"] == survivor
    assert final["attempts"] == 2  # claimed twice: by the killed worker, then by the survivor
    assert final["stdout"] == "start\ndone\n"  # one result: the second run's, not a mix
    api = stack.client().get_execution(eid)
    assert api["status"] == "COMPLETED" and api["stdout"] == "start\ndone\n"
    stack.wait_all_terminal()


def test_worker_killed_and_restarted_under_the_same_name(stack: Stack) -> None:
    # A restarted container keeps its node name, so its heartbeat looks alive again at once; the
    # run its predecessor had started must still be found and run again.
    first = stack.start_worker("same")
    eid = submit(stack)
    stack.wait_status(eid, {"RUNNING"}, 60)
    first.signal(signal.SIGKILL)
    first.proc.wait(10)
    stack.start_worker("same")

    final = stack.wait_terminal(eid, 90)
    assert final["status"] == "COMPLETED", (final, stack.logs())
    assert final["attempts"] == 2 and final["stdout"] == "start\ndone\n"


def test_worker_killed_between_receiving_and_claiming(stack: Stack) -> None:
    # The message sits in Redis' `unacked` hash (for the visibility timeout, an hour) while the
    # row is still QUEUED: the reconciler must not count such a message as carrying the run.
    import psycopg

    eid = None
    with psycopg.connect(stack.db_url, connect_timeout=3) as conn:
        sid = stack.client().create_session("print('once')")["session_id"]
        r = stack.client().execute(sid)
        eid = r.json()["execution_id"]
        conn.execute("SELECT 1 FROM executions WHERE id = %s FOR UPDATE", (eid,))  # the claim waits
        victim = stack.start_worker("claim-a")
        wait_for(lambda: stack.sql(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE executions%%'"),
            60, 0.05, what="the worker's claim to wait on the row lock")
        victim.signal(signal.SIGKILL)
        victim.proc.wait(10)
        conn.rollback()
    assert stack.execution_row(eid)["status"] == "QUEUED"
    assert stack.redis().hlen("unacked") >= 1

    stack.start_worker("claim-b")
    final = stack.wait_terminal(eid, 90)
    assert (final["status"], final["stdout"], final["attempts"]) == ("COMPLETED", "once\n", 1), stack.logs()


def test_sigkill_worker_after_last_attempt_fails_worker_lost(stack: Stack) -> None:
    # With LIVECODE_MAX_ATTEMPTS=1 a run is never started twice: a lost worker means FAILED.
    workers = {"lost-a@fault": stack.start_worker("lost-a", LIVECODE_MAX_ATTEMPTS="1"),
               "lost-b@fault": stack.start_worker("lost-b", LIVECODE_MAX_ATTEMPTS="1")}
    eid = submit(stack)
    victim = stack.wait_status(eid, {"RUNNING"}, 60)["worker"]

    workers[victim].signal(signal.SIGKILL)
    final = stack.wait_terminal(eid, 90)

    assert final["status"] == "FAILED", (final, stack.logs())
    assert final["reason"] == "WORKER_LOST"
    assert final["attempts"] == 1
    api = stack.client().get_execution(eid)
    assert api["status"] == "FAILED" and api["reason"] == "WORKER_LOST"
    assert "lost" in api["stderr"]


def test_sigterm_worker_finishes_its_run_and_leaves_the_queue_intact(stack: Stack) -> None:
    w1 = stack.start_worker("term-a")
    running = submit(stack)
    stack.wait_status(running, {"RUNNING"}, 60)
    waiting = submit(stack, "print('second')")  # stays on the queue: concurrency 1, prefetch 1

    w1.signal(signal.SIGTERM)
    w1.proc.wait(60)  # warm shutdown: waits for the run in flight

    first = stack.execution_row(running)
    assert first["status"] == "COMPLETED", (first, stack.logs())
    assert first["stdout"] == "start\ndone\n" and first["attempts"] == 1
    assert stack.execution_row(waiting)["status"] == "QUEUED"

    stack.start_worker("term-b")
    second = stack.wait_terminal(waiting, 60)
    assert second["status"] == "COMPLETED" and second["stdout"] == "second\n"
    assert second["attempts"] == 1


def test_sigterm_api_finishes_the_request_in_flight(stack: Stack) -> None:
    client = stack.client()
    sid = client.create_session("v1")["session_id"]
    result: dict[str, requests.Response] = {}

    # Hold the session's row lock so the autosave is still in flight when SIGTERM arrives.
    import psycopg

    with psycopg.connect(stack.db_url, connect_timeout=3) as conn:
        conn.execute("SELECT 1 FROM code_sessions WHERE id = %s FOR UPDATE", (sid,))
        saver = threading.Thread(target=lambda: result.update(r=requests.patch(
            f"{stack.base}/api/v1/code-sessions/{sid}", json={"source_code": "v2 saved", "version": 1},
            timeout=60)))
        saver.start()
        wait_for(lambda: stack.sql(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE code_sessions%%'"),
            30, 0.05, what="the autosave to wait on the row lock")
        stack.api.signal(signal.SIGTERM)
        # The server stops taking new connections but keeps the request it has.
        wait_for(lambda: "Handling signal: term" in stack.api.output(), 30, 0.1, what="the API to get SIGTERM")
        assert saver.is_alive()
        conn.rollback()  # release the lock
    saver.join(60)

    assert result["r"].status_code == 200, result["r"].text
    assert result["r"].json()["version"] == 2
    stack.api.proc.wait(60)
    assert stack.sql("SELECT version, source_code FROM code_sessions WHERE id = %s", sid) == [(2, "v2 saved")]
    stack.restart_api()
    assert stack.client().request("GET", f"/api/v1/code-sessions/{sid}").json()["source_code"] == "v2 saved"


def test_acknowledged_work_survives_worker_kills(stack: Stack) -> None:
    """Editors keep autosaving and executing while one of two workers is SIGKILLed and replaced."""
    stack.start_worker("churn-a")
    b = stack.start_worker("churn-b")
    with Editors(stack, count=4, program="import time\ntime.sleep(0.3)\nprint('ok')") as editors:
        wait_for(lambda: len(editors.ledger.executions) >= 4, 60, 0.1, what="some executions")
        b.signal(signal.SIGKILL)
        wait_for(lambda: len(editors.ledger.executions) >= 10, 90, 0.1, what="more executions")
        stack.start_worker("churn-c")
        wait_for(lambda: len(editors.ledger.executions) >= 14, 90, 0.1, what="more executions")
    assert not editors.errors, editors.errors
    stack.wait_all_terminal(120)
    editors.ledger.verify(stack)
    # The run the kill interrupted was run again: every acknowledged execution completed.
    rows = {r[0]: r[1:] for r in stack.sql("SELECT id::text, status, convert_from(stdout, 'UTF8') FROM executions")}
    assert all(rows[eid] == ("COMPLETED", "ok\n") for eid in editors.ledger.executions), rows
