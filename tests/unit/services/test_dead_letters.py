"""Dead letters: what the worker keeps when a task gives up, and the operator's actions on them
(the routes: tests/api/test_admin_ops.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from livecode.errors import ApiError
from livecode.services import dead_letters
from livecode.worker import deadletter
from tests.support.inprocess import LiveApp, uid


def test_a_dead_letter_fails_its_run_with_a_generic_message(live: LiveApp) -> None:
    eid = live.execute(live.session()["session_id"])["execution_id"]
    deadletter.record_dead_letter(live.rt, eid, "livecode.execute", ConnectionError("db at 10.0.0.5 gone"), 3)
    [letter] = dead_letters.list_dead_letters(live.rt)
    assert (letter["execution_id"], letter["attempts"], letter["execution_status"]) == (eid, 3, "FAILED")
    assert letter["error"] == "ConnectionError: db at 10.0.0.5 gone"  # the operator sees the error
    row = live.rows.one("executions", "id = :id", id=uid(eid))
    assert (row["status"], row["reason"]) == ("FAILED", "DEAD_LETTER")
    # The user sees a generic message naming the error id, not the error.
    assert b"10.0.0.5" not in row["stderr"] and letter["id"].encode() in row["stderr"]
    assert dead_letters.get_dead_letter(live.rt, uuid.UUID(letter["id"])) == letter


def test_a_finished_run_stays_as_it_is_and_a_bad_id_is_ignored(live: LiveApp) -> None:
    from tests.support.inprocess import finish_like_a_worker

    eid = live.execute(live.session()["session_id"])["execution_id"]
    finish_like_a_worker(live, eid, stdout=b"ok")
    deadletter.record_dead_letter(live.rt, eid, "livecode.execute", RuntimeError("late"), 1)
    assert live.rows.one("executions", "id = :id", id=uid(eid))["status"] == "COMPLETED"
    deadletter.record_dead_letter(live.rt, "not-an-id", "livecode.execute", RuntimeError("x"), 1)
    assert len(dead_letters.list_dead_letters(live.rt)) == 1
    assert deadletter.drain_pending(live.rt) == 0  # embedded: nothing is parked in Redis


def test_requeue_and_purge(live: LiveApp) -> None:
    eid = live.execute(live.session()["session_id"])["execution_id"]
    deadletter.record_dead_letter(live.rt, eid, "livecode.execute", RuntimeError("x"), 3)
    dl_id = uuid.UUID(dead_letters.list_dead_letters(live.rt)[0]["id"])
    calls: list[Any] = []
    requeued = dead_letters.requeue_dead_letter(live.rt, dl_id, lambda *a: calls.append(a))
    assert requeued is not None and requeued["execution_status"] == "QUEUED"
    assert [str(c[0]) for c in calls] == [eid]
    with pytest.raises(ApiError) as e:
        dead_letters.requeue_dead_letter(live.rt, dl_id, lambda *a: calls.append(a))
    assert e.value.code == "DEAD_LETTER_NOT_REQUEUEABLE" and len(calls) == 1
    assert dead_letters.requeue_dead_letter(live.rt, uuid.uuid4(), lambda *a: None) is None
    assert dead_letters.purge_dead_letters(live.rt, uuid.uuid4()) == 0
    assert dead_letters.purge_dead_letters(live.rt) == 1
