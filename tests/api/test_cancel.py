"""POST /api/v1/executions/{id}/cancel: a queued run becomes CANCELLED and never runs, a running
one gets the signal through its run's channel, a finished one is 409; the session's access rule
holds (404 to a stranger, 403 to a viewer). The worker's side (the signal reaching the program in
the sandbox) is in tests/integration/test_cancel.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from livecode.models import ExecutionStatus
from livecode.services import executions
from tests.support.inprocess import LiveApp, expect_error, finish_like_a_worker
from tests.support.users import sign_up

EXECS = "/api/v1/executions"
SESSIONS = "/api/v1/code-sessions"


def cancel(live: LiveApp, eid: str, body: dict[str, Any] | None = None, **kw: Any) -> Any:
    return live.client.post(f"{EXECS}/{eid}/cancel", json=body, **kw)


def test_a_queued_run_is_cancelled_and_never_runs(live: LiveApp) -> None:
    sid = live.session("print(1)")["session_id"]
    eid = live.execute(sid)["execution_id"]
    r = cancel(live, eid)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert (body["status"], body["reason"], body["signal"], body["exit_code"]) == ("CANCELLED", "CANCELLED", None, None)
    assert body["finished_at"] is not None and body["started_at"] is None
    # The worker's claim finds nothing to run.
    assert executions.claim_execution(live.db, uuid.UUID(eid), "test-worker") is None
    assert live.client.get(f"{EXECS}/{eid}").get_json()["status"] == "CANCELLED"
    # Its followers hear the end.
    kinds = [kind for _id, kind, _data in live.rt.events.read(eid, None, 0)]
    assert kinds[-3:] == ["status", "result", "end"]
    # The session is free for the next run.
    assert live.client.post(f"{EXECS}/session/{sid}/execute").status_code == 202
    # Cancelled is terminal: a second cancel is 409.
    expect_error(cancel(live, eid), 409, "EXECUTION_FINISHED")


def test_a_running_run_gets_the_signal_through_its_channel(live: LiveApp) -> None:
    sid = live.session("while True: pass")["session_id"]
    eid = live.execute(sid)["execution_id"]
    assert executions.claim_execution(live.db, uuid.UUID(eid), "test-worker") is not None
    r = cancel(live, eid, {"signal": "SIGINT"})
    assert r.status_code == 202, r.get_json()
    assert r.get_json() == {"execution_id": eid, "session_id": sid, "status": "RUNNING", "signal": "SIGINT"}
    assert cancel(live, eid).get_json()["signal"] == "SIGKILL"  # the default
    run = live.rt.stdin.run_input(eid, interactive=True)  # what the worker's sandbox polls
    assert [run.signals(), run.signals()] == [2, 9]
    # The row is the worker's to finish: nothing changed yet.
    assert live.client.get(f"{EXECS}/{eid}").get_json()["status"] == "RUNNING"


def test_a_finished_run_is_409_and_unchanged(live: LiveApp) -> None:
    sid = live.session("print(1)")["session_id"]
    eid = live.execute(sid)["execution_id"]
    finish_like_a_worker(live, eid, stdout=b"1\n")
    err = expect_error(cancel(live, eid), 409, "EXECUTION_FINISHED")
    assert err["details"] == {"status": "COMPLETED"}
    assert live.client.get(f"{EXECS}/{eid}").get_json()["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"signal": "SIGSTOP"}, "INVALID_SIGNAL"),
        ({"signal": 9}, "INVALID_SIGNAL"),
        ({"signal": "sigint"}, "INVALID_SIGNAL"),
        ({"sig": "SIGINT"}, None),
    ],
)
def test_bad_input_is_400_and_changes_nothing(live: LiveApp, body: dict[str, Any], code: str | None) -> None:
    sid = live.session("print(1)")["session_id"]
    eid = live.execute(sid)["execution_id"]
    expect_error(cancel(live, eid, body), 400, code)
    assert live.client.get(f"{EXECS}/{eid}").get_json()["status"] == "QUEUED"


def test_unknown_or_malformed_ids(live: LiveApp) -> None:
    expect_error(cancel(live, str(uuid.uuid4())), 404, "EXECUTION_NOT_FOUND")
    expect_error(cancel(live, "not-a-uuid"), 400)


def test_the_session_access_rule(secure: LiveApp) -> None:
    owner, editor, viewer, stranger = (sign_up(secure, n) for n in ("olga", "edith", "vic", "sam"))
    sid = secure.session("print(1)", headers=owner.headers)["session_id"]
    for user, role in ((editor, "editor"), (viewer, "viewer")):
        r = secure.client.post(f"{SESSIONS}/{sid}/members", json={"username": user.username, "role": role},
                               headers=owner.headers)
        assert r.status_code == 201, r.get_json()
    eid = secure.execute(sid, headers=owner.headers)["execution_id"]
    expect_error(cancel(secure, eid, headers=stranger.headers), 404, "EXECUTION_NOT_FOUND")
    expect_error(cancel(secure, eid, headers=viewer.headers), 403, "READ_ONLY_MEMBER")
    expect_error(cancel(secure, eid), 401)
    assert secure.client.get(f"{EXECS}/{eid}", headers=owner.headers).get_json()["status"] == "QUEUED"
    r = cancel(secure, eid, headers=editor.headers)  # an editor runs, so an editor stops
    assert r.status_code == 200 and r.get_json()["status"] == ExecutionStatus.CANCELLED
