"""PostgreSQL stopped: the API answers 503 quickly (never hangs, never 500), /health says the
database is down, the worker retries with backoff, a task that exhausts its retries becomes a dead
letter, and everything recovers by itself when the database is back."""

from __future__ import annotations

import json
import time

import pytest
import schemathesis

from tests.support.procs import run_livecode, wait_for
from tests.support.stack import Editors, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("restored_stack")]

DLQ = "/api/v1/admin/dead-letters"


def submit(stack: Stack, program: str = "print('once')") -> tuple[str, str]:
    client = stack.client()
    sid = client.create_session(program)["session_id"]
    r = client.execute(sid)
    assert r.status_code == 202, r.text
    return sid, r.json()["execution_id"]


def test_api_answers_503_fast_while_postgres_is_down_and_recovers(stack: Stack) -> None:
    stack.start_worker("pg-a")
    client = stack.client()
    sid, eid = submit(stack)
    assert client.wait_execution(eid)["status"] == "COMPLETED"

    stack.pg.stop()
    missing = "00000000-0000-4000-8000-000000000000"
    calls = [
        ("GET", f"/api/v1/code-sessions/{sid}", None, {}),
        ("GET", f"/api/v1/executions/{eid}", None, {}),
        ("GET", f"/api/v1/executions/session/{sid}", None, {}),
        ("GET", f"/api/v1/code-sessions/{missing}", None, {}),
        ("POST", "/api/v1/code-sessions", {"language": "python", "source_code": "x"}, {}),
        ("POST", "/api/v1/code-sessions", {"language": "python", "source_code": "x"}, {"Idempotency-Key": "k1"}),
        ("PATCH", f"/api/v1/code-sessions/{sid}", {"source_code": "lost?", "version": 1}, {}),
        ("POST", f"/api/v1/executions/session/{sid}/execute", {}, {}),
        ("DELETE", f"/api/v1/code-sessions/{sid}", None, {}),
        ("GET", DLQ, None, {}),
    ]
    for method, path, body, headers in calls:
        start = time.monotonic()
        r = client.request(method, path, json=body, headers=headers, timeout=30)
        elapsed = time.monotonic() - start
        assert r.status_code == 503, (method, path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "DATABASE_UNAVAILABLE", r.text
        assert r.headers.get("Retry-After")
        assert elapsed < 5, (method, path, elapsed)

    start = time.monotonic()
    health = client.request("GET", "/health", timeout=30)
    assert time.monotonic() - start < 5
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "down" and "database" in body["down"]
    assert body["details"]["database"]["status"] == "down"
    assert body["details"]["broker"]["status"] == "ok"

    stack.pg.resume()
    wait_for(lambda: client.request("GET", "/health").status_code == 200, 60, 0.2, what="/health 200")
    # Nothing the refused requests asked for happened.
    session = client.request("GET", f"/api/v1/code-sessions/{sid}").json()
    assert session["version"] == 1 and session["source_code"] == "print('once')"
    assert stack.sql("SELECT count(*) FROM executions WHERE session_id = %s", sid) == [(1,)]
    # API and worker recovered by themselves.
    _, after = submit(stack)
    assert client.wait_execution(after)["status"] == "COMPLETED"


def test_execution_queued_before_the_outage_completes_after_it(stack: Stack) -> None:
    _, eid = submit(stack)  # no worker yet: it stays QUEUED
    stack.pg.stop()
    worker = stack.start_worker("pg-b")
    # The worker takes the task, cannot claim the row, and retries with backoff (1 s, 2 s, 4 s).
    wait_for(lambda: "database unavailable; retrying" in worker.output(), 60, 0.1, what="a retry")
    stack.pg.resume()
    row = stack.wait_terminal(eid, 90)
    assert row["status"] == "COMPLETED" and row["stdout"] == "once\n", (row, stack.logs())
    assert row["attempts"] == 1


def test_task_that_exhausts_its_retries_is_dead_lettered_then_requeued(stack: Stack) -> None:
    client = stack.client()
    ids = [submit(stack)[1] for _ in range(2)]
    stack.pg.stop()
    stack.start_worker("pg-c", concurrency=2)
    # Tries at 0, 1, 3 and 7 s all fail; the dead letters wait in Redis for the database.
    wait_for(lambda: stack.redis().llen("livecode:dead-letters:pending") == 2, 90, 0.2,
             what="two parked dead letters")
    stack.pg.resume()
    for eid in ids:
        row = stack.wait_terminal(eid, 60)
        assert (row["status"], row["reason"], row["attempts"]) == ("FAILED", "DEAD_LETTER", 0), row
        # The user sees a generic message and the dead letter's id; the error is the operator's.
        stderr = client.get_execution(eid)["stderr"]
        assert "internal error" in stderr and "OperationalError" not in stderr and "SQL" not in stderr
    assert stack.redis().llen("livecode:dead-letters:pending") == 0

    listing = client.request("GET", DLQ)
    assert listing.status_code == 200, listing.text
    items = {item["execution_id"]: item for item in listing.json()["items"]}
    assert set(ids) <= set(items) and listing.json()["count"] == len(items) == 2
    letter = items[ids[0]]
    assert f"error id {letter['id']}" in client.get_execution(ids[0])["stderr"]
    assert letter["attempts"] == 4  # the first try and 3 retries
    assert "OperationalError" in letter["error"]
    assert letter["execution_status"] == "FAILED" and letter["requeued_at"] is None
    assert letter["first_failed_at"] < letter["created_at"]
    one = client.request("GET", f"{DLQ}/{letter['id']}")
    assert one.status_code == 200 and one.json() == letter
    documented = schemathesis.openapi.from_url(stack.base + "/swagger.json")
    documented[DLQ]["GET"].validate_response(listing)
    documented[DLQ + "/{dead_letter_id}"]["GET"].validate_response(one)

    # Requeue through the API: the execution runs, once.
    r = client.request("POST", f"{DLQ}/{letter['id']}/requeue")
    assert r.status_code == 202, r.text
    assert r.json()["requeued_at"] is not None
    assert client.wait_execution(ids[0])["status"] == "COMPLETED"
    again = client.request("POST", f"{DLQ}/{letter['id']}/requeue")
    assert again.status_code == 409 and again.json()["error"]["code"] == "DEAD_LETTER_NOT_REQUEUEABLE"

    # The same through the CLI for the other one.
    other = items[ids[1]]["id"]
    listed = json.loads(dlq(stack, "list"))
    assert {d["id"] for d in listed} == {letter["id"], other}
    assert json.loads(dlq(stack, "show", other))["execution_id"] == ids[1]
    assert json.loads(dlq(stack, "requeue", other))["requeued_at"]
    assert client.wait_execution(ids[1])["status"] == "COMPLETED"
    twice = run_livecode("dlq", "requeue", other, env=stack.env)
    assert twice.returncode != 0 and "not dead-lettered" in twice.stderr
    for eid in ids:
        assert stack.execution_row(eid)["attempts"] == 1

    # Delete one, purge the rest.
    assert client.request("DELETE", f"{DLQ}/{letter['id']}").status_code == 204
    assert client.request("GET", f"{DLQ}/{letter['id']}").status_code == 404
    assert client.request("DELETE", f"{DLQ}/{letter['id']}").status_code == 404
    assert json.loads(dlq(stack, "purge")) == {"purged": 1}
    assert client.request("GET", DLQ).json() == {"items": [], "count": 0}
    assert client.request("DELETE", DLQ).json() == {"purged": 0}


def test_dead_letter_endpoints_reject_bad_ids(stack: Stack) -> None:
    client = stack.client()
    missing = "00000000-0000-4000-8000-000000000000"
    assert client.request("GET", f"{DLQ}/nope").status_code == 400
    assert client.request("GET", f"{DLQ}/{missing}").json()["error"]["code"] == "DEAD_LETTER_NOT_FOUND"
    assert client.request("POST", f"{DLQ}/{missing}/requeue").status_code == 404
    assert client.request("GET", f"{DLQ}?limit=0").status_code == 400
    cli = run_livecode("dlq", "show", missing, env=stack.env)
    assert cli.returncode != 0 and "no dead letter" in cli.stderr


def test_acknowledged_work_survives_a_postgres_restart(stack: Stack) -> None:
    stack.start_worker("pg-d")
    with Editors(stack, count=4) as editors:
        wait_for(lambda: len(editors.ledger.executions) >= 4, 60, 0.1, what="some executions")
        stack.pg.stop()
        wait_for(lambda: editors.ledger.statuses.get(503, 0) >= 8, 30, 0.1, what="503s during the outage")
        stack.pg.resume()
        before = len(editors.ledger.executions)
        wait_for(lambda: len(editors.ledger.executions) >= before + 6, 90, 0.1, what="executions after")
    assert not editors.errors, editors.errors
    stack.wait_all_terminal(120)
    editors.ledger.verify(stack)
    rows = {r[0]: r[1:] for r in stack.sql("SELECT id::text, status, convert_from(stdout, 'UTF8') FROM executions")}
    assert all(rows[eid] == ("COMPLETED", "ok\n") for eid in editors.ledger.executions), rows


def dlq(stack: Stack, *args: str) -> str:
    done = run_livecode("dlq", *args, env=stack.env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout
