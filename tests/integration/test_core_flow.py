"""The design's flows end to end over HTTP, against the distributed system (PostgreSQL, Redis, a
separate Celery worker process) and the embedded one (SQLite, in-process broker and worker)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.client import ApiClient

pytestmark = pytest.mark.integration


def test_hello_world_session_autosave_execute(api: ApiClient) -> None:
    created = api.request("POST", "/api/v1/code-sessions", json={"language": "python", "source_code": "print('hi')"})
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "ACTIVE" and body["version"] == 1
    sid = body["session_id"]
    assert uuid.UUID(sid)

    saved = api.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "print('Hello World!')"})
    assert saved.status_code == 200, saved.text
    assert saved.json()["version"] == 2

    got = api.request("GET", f"/api/v1/code-sessions/{sid}")
    assert got.status_code == 200
    assert got.json()["source_code"] == "print('Hello World!')"
    assert got.headers["ETag"] == f'"{sid}-v2"'

    queued = api.execute(sid)
    assert queued.status_code == 202, queued.text
    assert queued.json()["status"] == "QUEUED"
    result = api.wait_execution(queued.json()["execution_id"])
    assert result["status"] == "COMPLETED", result
    assert result["stdout"] == "Hello World!\n"
    assert result["stderr"] == ""
    assert result["exit_code"] == 0
    assert result["execution_time_ms"] is not None and result["execution_time_ms"] >= 0
    assert result["queued_at"] <= result["started_at"] <= result["finished_at"]


def test_runtime_error_is_failed_with_stderr(api: ApiClient) -> None:
    result = api.run("import sys\nprint('before')\nraise ValueError('boom')")
    assert result["status"] == "FAILED"
    assert result["reason"] == "RUNTIME_ERROR"
    assert result["exit_code"] == 1
    assert result["stdout"] == "before\n"
    assert "ValueError: boom" in result["stderr"]


def test_syntax_error_is_failed(api: ApiClient) -> None:
    result = api.run("def broken(:\n    pass")
    assert result["status"] == "FAILED"
    assert "SyntaxError" in result["stderr"]


def test_timeout_kills_the_process_tree(api: ApiClient) -> None:
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    time.sleep(60)\n"
        "print('parent', flush=True)\n"
        "time.sleep(60)\n"
    )
    result = api.run(code, time_limit_ms=1500)
    assert result["status"] == "TIMEOUT"
    assert result["reason"] == "TIME_LIMIT"
    assert result["stdout"] == "parent\n"
    assert result["execution_time_ms"] < 15_000


def test_stdin_and_args_reach_the_program(api: ApiClient) -> None:
    result = api.run("import sys\nprint(sys.argv[1:], sys.stdin.read().upper())", stdin="abc", args=["x", "y z"])
    assert result["status"] == "COMPLETED", result
    assert result["stdout"] == "['x', 'y z'] ABC\n"


def test_execution_keeps_the_source_it_was_queued_with(api: ApiClient) -> None:
    session = api.create_session("import time; time.sleep(0.5); print('original')")
    sid = session["session_id"]
    queued = api.execute(sid).json()
    api.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "print('changed')"})
    result = api.wait_execution(queued["execution_id"])
    assert result["stdout"] == "original\n"


def test_optimistic_locking(api: ApiClient) -> None:
    sid = api.create_session("v1")["session_id"]
    ok = api.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "v2", "version": 1})
    assert ok.status_code == 200 and ok.json()["version"] == 2
    stale = api.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "lost", "version": 1})
    assert stale.status_code == 409
    err = stale.json()["error"]
    assert err["code"] == "VERSION_CONFLICT" and err["details"]["current_version"] == 2
    # If-Match with the ETag works the same way.
    etag = api.request("GET", f"/api/v1/code-sessions/{sid}").headers["ETag"]
    ok2 = api.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "v3"}, headers={"If-Match": etag})
    assert ok2.status_code == 200
    stale2 = api.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "x"}, headers={"If-Match": etag})
    assert stale2.status_code == 409
    assert api.request("GET", f"/api/v1/code-sessions/{sid}").json()["source_code"] == "v3"


def test_concurrent_autosaves_same_version_one_wins(api: ApiClient) -> None:
    sid = api.create_session("v1")["session_id"]

    def save(i: int) -> tuple[int, str]:
        r = api.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": f"edit {i}", "version": 1})
        return r.status_code, f"edit {i}"

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(save, range(20)))
    codes = sorted(code for code, _ in results)
    assert codes.count(200) == 1 and codes.count(409) == 19, codes
    winner = next(src for code, src in results if code == 200)
    stored = api.request("GET", f"/api/v1/code-sessions/{sid}").json()
    assert stored["source_code"] == winner and stored["version"] == 2


def test_duplicate_execute_race_creates_one_execution(api: ApiClient) -> None:
    sid = api.create_session("import time; time.sleep(1)")["session_id"]
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda _: api.execute(sid), range(20)))
    accepted = [r for r in responses if r.status_code == 202]
    conflicts = [r for r in responses if r.status_code == 409]
    assert len(accepted) == 1, [r.status_code for r in responses]
    assert len(conflicts) == 19
    active_id = accepted[0].json()["execution_id"]
    assert all(r.json()["error"]["details"]["active_execution_id"] == active_id for r in conflicts)
    listing = api.request("GET", f"/api/v1/executions/session/{sid}").json()
    assert listing["total"] == 1
    api.wait_execution(active_id)
    # Once it is finished, the session can run again.
    assert api.execute(sid).status_code == 202


def test_list_executions_newest_first_paginated(api: ApiClient) -> None:
    sid = api.create_session("print(1)")["session_id"]
    ids = []
    for _ in range(3):
        eid = api.execute(sid).json()["execution_id"]
        api.wait_execution(eid)
        ids.append(eid)
    page1 = api.request("GET", f"/api/v1/executions/session/{sid}?per_page=2").json()
    assert page1["total"] == 3 and [e["execution_id"] for e in page1["items"]] == ids[::-1][:2]
    page2 = api.request("GET", f"/api/v1/executions/session/{sid}?per_page=2&page=2").json()
    assert [e["execution_id"] for e in page2["items"]] == ids[:1]


def test_delete_session_removes_its_executions(api: ApiClient) -> None:
    sid = api.create_session("print(1)")["session_id"]
    eid = api.execute(sid).json()["execution_id"]
    api.wait_execution(eid)
    assert api.request("DELETE", f"/api/v1/code-sessions/{sid}").status_code == 204
    assert api.request("GET", f"/api/v1/code-sessions/{sid}").status_code == 404
    assert api.request("GET", f"/api/v1/executions/{eid}").status_code == 404
    assert api.request("DELETE", f"/api/v1/code-sessions/{sid}").status_code == 404


def test_health_endpoints(api: ApiClient, system) -> None:  # type: ignore[no-untyped-def]
    for path in ("/health", "/health/redis", "/health/celery"):
        r = api.request("GET", path)
        assert r.status_code == 200, (path, r.text)
        assert r.json()["status"] == "ok"
    celery = api.request("GET", "/health/celery").json()["details"]["celery"]
    assert celery["workers"] >= 1
    redis_detail = api.request("GET", "/health/redis").json()["details"]["redis"]
    if system.env.get("REDIS_URL"):
        assert redis_detail["broker"] == "redis"
    else:
        assert "in-process" in redis_detail["broker"]


def test_swagger_documents_every_endpoint(api: ApiClient) -> None:
    assert api.request("GET", "/docs").status_code == 200
    spec = api.request("GET", "/swagger.json").json()
    paths = spec["paths"]
    expected = {
        "/api/v1/code-sessions": {"post"},
        "/api/v1/code-sessions/{session_id}": {"get", "patch", "delete"},
        "/api/v1/executions/session/{session_id}/execute": {"post"},
        "/api/v1/executions/{execution_id}": {"get"},
        "/api/v1/executions/session/{session_id}": {"get"},
        "/health": {"get"},
        "/health/redis": {"get"},
        "/health/celery": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, paths[path].keys())
    assert "Error" in spec["definitions"] and "Execution" in spec["definitions"]


def test_languages_lists_python(api: ApiClient) -> None:
    langs = {lang["id"]: lang for lang in api.request("GET", "/api/v1/languages").json()}
    assert langs["python"]["available"] is True
    assert langs["python"]["version"]
