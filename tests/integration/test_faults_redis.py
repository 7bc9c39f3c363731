"""Redis (the broker) restarted or flushed: queued work is queued again from the database rows, and
each execution still runs exactly once (`attempts` counts the claims: 1 means it ran once)."""

from __future__ import annotations

import pytest

from tests.support.procs import wait_for
from tests.support.stack import Editors, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("restored_stack")]


def submit_many(stack: Stack, count: int, program: str = "print('once')") -> list[str]:
    client = stack.client()
    ids = []
    for _ in range(count):
        sid = client.create_session(program)["session_id"]
        r = client.execute(sid)
        assert r.status_code == 202, r.text
        ids.append(r.json()["execution_id"])
    return ids


def queued_messages(stack: Stack) -> int:
    r = stack.redis()
    return int(r.llen("high_priority")) + int(r.llen("low_priority"))


def assert_each_ran_once(stack: Stack, ids: list[str], stdout: str = "once\n") -> None:
    for eid in ids:
        row = stack.wait_terminal(eid, 90)
        assert row["status"] == "COMPLETED", (row, stack.logs())
        assert row["stdout"] == stdout
        assert row["attempts"] == 1, row


@pytest.mark.parametrize("fault", ["restart", "flushall"])
def test_queued_executions_survive_losing_the_broker(stack: Stack, fault: str) -> None:
    ids = submit_many(stack, 3)  # no worker is running: they stay QUEUED, their messages in Redis
    assert queued_messages(stack) == 3
    if fault == "restart":
        stack.redis_server.stop()  # no persistence: the restarted server is empty
        stack.redis_server.start()
    else:
        stack.redis().flushall()
    assert queued_messages(stack) == 0

    stack.start_worker("after-" + fault)
    assert_each_ran_once(stack, ids)
    # The API's own broker connection recovered too.
    assert_each_ran_once(stack, submit_many(stack, 2))
    stack.wait_all_terminal()


def test_flush_during_a_run_does_not_run_it_twice(stack: Stack) -> None:
    # The flush also wipes the worker's heartbeat; the reconciler must not take that for a lost
    # worker and start the run a second time.
    stack.start_worker("flush-a")
    stack.start_worker("flush-b")
    program = "import time\nprint('start', flush=True)\ntime.sleep(10)\nprint('done')"
    [eid] = submit_many(stack, 1, program)
    stack.wait_status(eid, {"RUNNING"}, 60)
    # Past the requeue grace period, so only the heartbeat tells a live run from a lost one.
    wait_for(lambda: stack.sql("SELECT now() - started_at > interval '3 seconds' FROM executions WHERE id = %s",
                               eid)[0][0], 30, 0.1, what="the run to be a few seconds old")
    stack.redis().flushall()
    assert_each_ran_once(stack, [eid], "start\ndone\n")


def test_execute_while_redis_is_down_is_not_lost(stack: Stack) -> None:
    stack.start_worker("down")
    client = stack.client()
    sid = client.create_session("print('once')")["session_id"]
    stack.redis_server.stop()
    r = client.execute(sid)
    # Either acknowledged (the row is the truth; the reconciler publishes it later) or refused
    # with a 503 that names Redis. Never a 500.
    assert r.status_code in (202, 503), r.text
    if r.status_code == 503:
        assert r.json()["error"]["code"] == "REDIS_UNAVAILABLE"
    stack.redis_server.start()
    if r.status_code == 503:
        r = client.execute(sid)
        assert r.status_code == 202, r.text
    assert_each_ran_once(stack, [r.json()["execution_id"]])


def test_acknowledged_work_survives_a_redis_restart(stack: Stack) -> None:
    stack.start_worker("churn-a")
    stack.start_worker("churn-b")
    with Editors(stack, count=4) as editors:
        wait_for(lambda: len(editors.ledger.executions) >= 4, 60, 0.1, what="some executions")
        stack.redis_server.stop()
        stack.redis_server.start()
        before = len(editors.ledger.executions)
        wait_for(lambda: len(editors.ledger.executions) >= before + 6, 90, 0.1, what="executions after")
    assert not editors.errors, editors.errors
    stack.wait_all_terminal(120)
    editors.ledger.verify(stack)
    rows = {r[0]: r[1:] for r in stack.sql(
        "SELECT id::text, status, convert_from(stdout, 'UTF8'), attempts FROM executions")}
    assert all(rows[eid] == ("COMPLETED", "ok\n", 1) for eid in editors.ledger.executions), rows
