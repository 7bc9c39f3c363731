"""Idempotency keys on the create endpoints (same key + same body: the first response, nothing new;
different body: 422; also when the requests race), and autosave durability: a 200 means the
source is in PostgreSQL already. (20 racing autosaves with one version: test_core_flow.py.)"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
import requests

from tests.support.client import ApiClient

pytestmark = pytest.mark.integration

SESSIONS = "/api/v1/code-sessions"


@pytest.fixture
def client(cluster) -> ApiClient:  # type: ignore[no-untyped-def]
    return cluster.client()


@pytest.fixture
def sql(cluster):  # type: ignore[no-untyped-def]
    def run(query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(cluster.env["DATABASE_URL"], connect_timeout=3, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    return run


def marker() -> str:
    return f"print('{uuid.uuid4().hex}')"


def create(client: ApiClient, key: str, source: str, language: str = "python") -> requests.Response:
    return client.request("POST", SESSIONS, json={"language": language, "source_code": source},
                          headers={"Idempotency-Key": key})


def test_same_key_same_body_returns_the_first_response(client: ApiClient, sql) -> None:  # type: ignore[no-untyped-def]
    key, source = uuid.uuid4().hex, marker()
    first = create(client, key, source)
    assert first.status_code == 201, first.text
    again = create(client, key, source)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert sql("SELECT count(*) FROM code_sessions WHERE source_code = %s", source) == [(1,)]


def test_same_key_different_body_is_422_and_creates_nothing(client: ApiClient, sql) -> None:  # type: ignore[no-untyped-def]
    key, source, other = uuid.uuid4().hex, marker(), marker()
    assert create(client, key, source).status_code == 201
    r = create(client, key, other)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert sql("SELECT count(*) FROM code_sessions WHERE source_code = %s", other) == [(0,)]


def test_ten_racing_requests_with_one_key_create_one_session(client: ApiClient, sql) -> None:  # type: ignore[no-untyped-def]
    key, source = uuid.uuid4().hex, marker()
    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda _: create(ApiClient(client.base), key, source), range(10)))
    assert [r.status_code for r in responses] == [201] * 10, [(r.status_code, r.text) for r in responses]
    assert len({r.json()["session_id"] for r in responses}) == 1
    assert sql("SELECT count(*) FROM code_sessions WHERE source_code = %s", source) == [(1,)]


def test_racing_requests_with_one_key_and_two_bodies(client: ApiClient, sql) -> None:  # type: ignore[no-untyped-def]
    key, a, b = uuid.uuid4().hex, marker(), marker()
    bodies = [a, b] * 5
    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda src: (src, create(ApiClient(client.base), key, src)), bodies))
    winners = {src for src, r in responses if r.status_code == 201}
    assert len(winners) == 1, [(src[-10:], r.status_code) for src, r in responses]
    winner = winners.pop()
    for src, r in responses:
        assert r.status_code == (201 if src == winner else 422), r.text
    created = sql("SELECT source_code FROM code_sessions WHERE source_code IN (%s, %s)", a, b)
    assert created == [(winner,)]


def test_execute_with_a_key_runs_once(client: ApiClient, sql) -> None:  # type: ignore[no-untyped-def]
    sid = client.create_session("import sys\nprint(sys.stdin.read())")["session_id"]
    key = uuid.uuid4().hex
    path = f"/api/v1/executions/session/{sid}/execute"

    def post(body: dict[str, Any]) -> requests.Response:
        return requests.post(client.base + path, json=body, headers={"Idempotency-Key": key}, timeout=30)

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda _: post({"stdin": "hi"}), range(10)))
    assert [r.status_code for r in responses] == [202] * 10, [r.text for r in responses]
    ids = {r.json()["execution_id"] for r in responses}
    assert len(ids) == 1
    eid = ids.pop()
    assert client.wait_execution(eid)["stdout"] == "hi\n"
    # Replayed after it finished: still the first response, still one execution.
    assert post({"stdin": "hi"}).json() == responses[0].json()
    different = post({"stdin": "other"})
    assert different.status_code == 422 and different.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert sql("SELECT count(*), max(attempts) FROM executions WHERE session_id = %s", sid) == [(1, 1)]


def test_a_key_is_scoped_to_its_endpoint(client: ApiClient) -> None:
    key = uuid.uuid4().hex
    one = client.create_session("print(1)")["session_id"]
    two = client.create_session("print(2)")["session_id"]
    r1 = client.request("POST", f"/api/v1/executions/session/{one}/execute", json={}, headers={"Idempotency-Key": key})
    r2 = client.request("POST", f"/api/v1/executions/session/{two}/execute", json={}, headers={"Idempotency-Key": key})
    assert r1.status_code == r2.status_code == 202
    assert r1.json()["execution_id"] != r2.json()["execution_id"]
    assert create(client, key, marker()).status_code == 201


def test_a_key_expires_after_24_hours(client: ApiClient, sql) -> None:  # type: ignore[no-untyped-def]
    key, source = uuid.uuid4().hex, marker()
    first = create(client, key, source).json()
    # Age the stored key instead of waiting a day.
    sql("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = %s RETURNING 1", key)
    later = create(client, key, source)
    assert later.status_code == 201
    assert later.json()["session_id"] != first["session_id"]
    assert sql("SELECT count(*) FROM code_sessions WHERE source_code = %s", source) == [(2,)]


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
def test_invalid_keys_are_400(client: ApiClient, key: str) -> None:
    r = client.request("POST", SESSIONS, json={"language": "python", "source_code": "x"},
                       headers={"Idempotency-Key": key})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "INVALID_IDEMPOTENCY_KEY"


def test_a_failed_request_does_not_burn_the_key(client: ApiClient) -> None:
    key = uuid.uuid4().hex
    bad = create(client, key, "x", language="cobol")
    assert bad.status_code == 400
    # The same key (with the same body) is answered the same way: nothing was stored for it.
    assert create(client, key, "x", language="cobol").status_code == 400


def test_an_acknowledged_autosave_is_already_in_postgresql(client: ApiClient, sql) -> None:  # type: ignore[no-untyped-def]
    sid = client.create_session("v1")["session_id"]
    version = 1
    for i in range(30):
        source = f"print({i}) # {uuid.uuid4().hex}"
        r = client.request("PATCH", f"{SESSIONS}/{sid}", json={"source_code": source, "version": version})
        assert r.status_code == 200, r.text
        version = r.json()["version"]
        # Straight from PostgreSQL, right after the answer: no write-behind, no cache.
        assert sql("SELECT version, source_code FROM code_sessions WHERE id = %s", sid) == [(version, source)]


def test_concurrent_editors_every_acknowledged_save_is_durable(client: ApiClient, sql) -> None:  # type: ignore[no-untyped-def]
    sids = [client.create_session("v1")["session_id"] for _ in range(8)]

    def edit(sid: str) -> list[str]:
        c = ApiClient(client.base)
        version, problems = 1, []
        for i in range(10):
            source = f"# {sid} {i}"
            r = c.request("PATCH", f"{SESSIONS}/{sid}", json={"source_code": source, "version": version})
            if r.status_code != 200:
                problems.append(r.text)
                continue
            version = r.json()["version"]
            if sql("SELECT version, source_code FROM code_sessions WHERE id = %s", sid) != [(version, source)]:
                problems.append(f"{sid} v{version} not stored")
        return problems

    with ThreadPoolExecutor(8) as pool:
        problems = [p for result in pool.map(edit, sids) for p in result]
    assert not problems, problems
