"""POST /api/v1/executions/batch (all or nothing) and the Idempotency-Key header."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.support.inprocess import LiveApp, expect_error, uid

BATCH = "/api/v1/executions/batch"
SESSIONS = "/api/v1/code-sessions"


def test_a_batch_queues_every_run_on_the_low_priority_queue(live: LiveApp) -> None:
    a, b = live.session("print('a')")["session_id"], live.session("print('b')")["session_id"]
    r = live.client.post(BATCH, json={"executions": [{"session_id": a}, {"session_id": a, "stdin": "2"},
                                                     {"session_id": b, "args": ["x"]}]})
    assert r.status_code == 202
    body = r.get_json()
    assert body["count"] == 3 and [e["session_id"] for e in body["executions"]] == [a, a, b]
    assert {e["status"] for e in body["executions"]} == {"QUEUED"}
    assert live.enqueued.ids == [e["execution_id"] for e in body["executions"]]
    assert {c[1] for c in live.enqueued.calls} == {"batch"}
    assert live.rows.count("executions", "priority = 'batch' AND status = 'QUEUED'") == 3
    # Two runs of one session's code store that code once.
    assert live.rows.count("sources") == 2
    # A batch does not hold the session: an interactive run may start beside it.
    assert live.client.post(f"/api/v1/executions/session/{a}/execute", json={}).status_code == 202


def test_a_batch_item_may_merge_stderr(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    r = live.client.post(BATCH, json={"executions": [{"session_id": sid, "merge_stderr": True}, {"session_id": sid}]})
    assert r.status_code == 202, r.get_json()
    shown = [live.client.get(f"/api/v1/executions/{e['execution_id']}").get_json() for e in r.get_json()["executions"]]
    assert [e["merge_stderr"] for e in shown] == [True, False]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"executions": []},
        {"executions": "x"},
        {"executions": [1]},
        {"executions": [{"session_id": 5}]},
        {"executions": [{"session_id": "not-a-uuid"}]},
        {"executions": [{"session_id": "SID", "priority": "interactive"}]},
        {"executions": [{"session_id": "SID", "time_limit_ms": 10**9}]},
        {"executions": [{"session_id": "SID", "merge_stderr": "yes"}]},
        {"executions": [{"session_id": "SID"}], "extra": 1},
    ],
)
def test_an_invalid_batch_is_400_and_queues_nothing(live: LiveApp, body: dict[str, Any]) -> None:
    sid = live.session()["session_id"]
    body = json.loads(json.dumps(body).replace("SID", sid))
    before = live.rows.snapshot()
    expect_error(live.client.post(BATCH, json=body), 400)
    assert live.rows.snapshot() == before and live.enqueued.calls == []


def test_one_unknown_session_refuses_the_whole_batch(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    missing = str(uuid.uuid4())
    before = live.rows.snapshot()
    err = expect_error(live.client.post(BATCH, json={"executions": [{"session_id": sid}, {"session_id": missing}]}),
                       404, "SESSION_NOT_FOUND")
    assert missing in err["message"]
    assert live.rows.snapshot() == before and live.enqueued.calls == []


def test_a_batch_over_the_list_maximum_is_refused(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    expect_error(live.client.post(BATCH, json={"executions": [{"session_id": sid}] * 1001}), 400, "INVALID_FIELD")
    assert live.rows.count("executions") == 0


def test_a_batch_is_charged_its_size_against_the_rate_limit(make_live: Any) -> None:
    live = make_live(execution_rate_limit="5/minute")
    sid = live.session()["session_id"]
    assert live.client.post(BATCH, json={"executions": [{"session_id": sid}] * 4}).status_code == 202
    before = live.rows.snapshot()
    r = live.client.post(BATCH, json={"executions": [{"session_id": sid}] * 2})
    err = expect_error(r, 429, "RATE_LIMITED")
    assert err["details"] == {"cost": 2, "remaining": 1}
    assert "Retry-After" in r.headers
    assert live.rows.snapshot() == before and len(live.enqueued.calls) == 4
    assert live.client.post(BATCH, json={"executions": [{"session_id": sid}]}).status_code == 202


def test_a_batch_over_the_storage_quota_is_refused_whole(make_live: Any) -> None:
    live = make_live(max_stored_executions=3)
    sid = live.session()["session_id"]
    before = live.rows.snapshot()
    expect_error(live.client.post(BATCH, json={"executions": [{"session_id": sid}] * 4}), 429,
                 "EXECUTION_QUOTA_EXCEEDED")
    assert live.rows.snapshot() == before
    assert live.client.post(BATCH, json={"executions": [{"session_id": sid}] * 3}).status_code == 202


# ---- Idempotency-Key -------------------------------------------------------------------------


def test_the_same_key_and_body_gives_the_first_answer_and_runs_once(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    url = f"/api/v1/executions/session/{sid}/execute"
    first = live.client.post(url, json={"stdin": "1"}, headers={"Idempotency-Key": "k1"})
    again = live.client.post(url, json={"stdin": "1"}, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 202
    assert first.get_json() == again.get_json()
    assert live.rows.count("executions") == 1 and len(live.enqueued.calls) == 1


def test_the_same_key_with_another_body_is_422_and_changes_nothing(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    url = f"/api/v1/executions/session/{sid}/execute"
    assert live.client.post(url, json={"stdin": "1"}, headers={"Idempotency-Key": "k"}).status_code == 202
    before = live.rows.snapshot()
    expect_error(live.client.post(url, json={"stdin": "2"}, headers={"Idempotency-Key": "k"}), 422,
                 "IDEMPOTENCY_KEY_REUSED")
    assert live.rows.snapshot() == before


def test_idempotent_session_create(live: LiveApp) -> None:
    body = {"language": "python", "source_code": "x"}
    a = live.client.post(SESSIONS, json=body, headers={"Idempotency-Key": "s1"})
    b = live.client.post(SESSIONS, json=body, headers={"Idempotency-Key": "s1"})
    assert a.status_code == b.status_code == 201 and a.get_json() == b.get_json()
    assert live.rows.count("code_sessions") == 1
    c = live.client.post(SESSIONS, json=body, headers={"Idempotency-Key": "s2"})
    assert c.status_code == 201 and c.get_json()["session_id"] != a.get_json()["session_id"]


def test_a_refused_request_does_not_use_up_its_key(live: LiveApp) -> None:
    url = f"/api/v1/executions/session/{uuid.uuid4()}/execute"
    expect_error(live.client.post(url, json={}, headers={"Idempotency-Key": "k"}), 404)
    assert live.rows.count("idempotency_keys") == 0


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
def test_an_invalid_key_is_400(live: LiveApp, key: str) -> None:
    before = live.rows.snapshot()
    r = live.client.post(SESSIONS, json={"language": "python", "source_code": "x"}, headers={"Idempotency-Key": key})
    expect_error(r, 400, "INVALID_IDEMPOTENCY_KEY")
    assert live.rows.snapshot() == before


def test_keys_are_scoped_to_the_endpoint(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    s = live.client.post(SESSIONS, json={"language": "python", "source_code": "y"}, headers={"Idempotency-Key": "k"})
    e = live.client.post(f"/api/v1/executions/session/{sid}/execute", json={}, headers={"Idempotency-Key": "k"})
    assert s.status_code == 201 and e.status_code == 202
    assert live.rows.count("executions", "session_id = :s", s=uid(sid)) == 1
