"""Bad input gets a clear 4xx in the one JSON error shape and changes nothing."""

from __future__ import annotations

import pytest

from tests.support.client import ApiClient

pytestmark = pytest.mark.integration


def assert_error(resp, status: int, code: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers["Content-Type"]
    err = resp.json()["error"]
    assert err["message"]
    if code:
        assert err["code"] == code, err
    return err


@pytest.fixture
def client(cluster) -> ApiClient:  # type: ignore[no-untyped-def]
    return cluster.client()


def test_invalid_json(client: ApiClient) -> None:
    r = client.request("POST", "/api/v1/code-sessions", data=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(r, 400, "INVALID_JSON")


def test_deeply_nested_json(client: ApiClient) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    r = client.request("POST", "/api/v1/code-sessions", data=body, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "INVALID_JSON")


def test_wrong_content_type(client: ApiClient) -> None:
    r = client.request("POST", "/api/v1/code-sessions", data="language=python", headers={"Content-Type": "text/plain"})
    assert_error(r, 415)


def test_missing_and_mistyped_fields(client: ApiClient) -> None:
    assert_error(client.request("POST", "/api/v1/code-sessions", json={"language": "python"}), 400, "MISSING_FIELD")
    assert_error(client.request("POST", "/api/v1/code-sessions", json={"language": 3, "source_code": "x"}), 400)
    assert_error(client.request("POST", "/api/v1/code-sessions", json=["python"]), 400)
    assert_error(
        client.request("POST", "/api/v1/code-sessions", json={"language": "python", "source_code": "x", "extra": 1}),
        400,
        "UNKNOWN_FIELD",
    )


def test_unknown_language_lists_supported(client: ApiClient) -> None:
    err = assert_error(
        client.request("POST", "/api/v1/code-sessions", json={"language": "cobol", "source_code": "x"}),
        400,
        "UNSUPPORTED_LANGUAGE",
    )
    assert "python" in err["message"] and "python" in err["details"]["supported"]


def test_id_not_a_uuid(client: ApiClient) -> None:
    assert_error(client.request("GET", "/api/v1/code-sessions/not-a-uuid"), 400, "INVALID_ID")
    assert_error(client.request("GET", "/api/v1/executions/123"), 400, "INVALID_ID")
    assert_error(client.request("POST", "/api/v1/executions/session/nope/execute", json={}), 400, "INVALID_ID")


def test_unknown_ids_are_404(client: ApiClient) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    assert_error(client.request("GET", f"/api/v1/code-sessions/{missing}"), 404, "SESSION_NOT_FOUND")
    assert_error(client.request("PATCH", f"/api/v1/code-sessions/{missing}", json={"source_code": "x"}), 404)
    assert_error(client.request("POST", f"/api/v1/executions/session/{missing}/execute", json={}), 404)
    assert_error(client.request("GET", f"/api/v1/executions/{missing}"), 404, "EXECUTION_NOT_FOUND")
    assert_error(client.request("GET", f"/api/v1/executions/session/{missing}"), 404)


def test_source_too_large_is_413_and_changes_nothing(client: ApiClient) -> None:
    sid = client.create_session("small")["session_id"]
    big = "x" * (256 * 1024 + 1)
    assert_error(client.request("POST", "/api/v1/code-sessions", json={"language": "python", "source_code": big}), 413)
    assert_error(client.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": big}), 413)
    assert client.request("GET", f"/api/v1/code-sessions/{sid}").json()["source_code"] == "small"


def test_request_body_of_many_megabytes(client: ApiClient) -> None:
    body = b'{"language": "python", "source_code": "' + b"x" * (8 * 1024 * 1024) + b'"}'
    r = client.request("POST", "/api/v1/code-sessions", data=body, headers={"Content-Type": "application/json"})
    assert_error(r, 413)


def test_nul_bytes_and_invalid_utf8(client: ApiClient) -> None:
    sid = client.create_session("ok")["session_id"]
    assert_error(client.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "a\x00b"}), 400)
    raw = b'{"language": "python", "source_code": "\xff\xfe"}'
    r = client.request("POST", "/api/v1/code-sessions", data=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "INVALID_JSON")
    lone = b'{"language": "python", "source_code": "\\ud800"}'
    r = client.request("POST", "/api/v1/code-sessions", data=lone, headers={"Content-Type": "application/json"})
    assert_error(r, 400)
    assert client.request("GET", f"/api/v1/code-sessions/{sid}").json()["source_code"] == "ok"


def test_limits_above_maximum_and_bad_options(client: ApiClient) -> None:
    sid = client.create_session("print(1)")["session_id"]
    err = assert_error(client.execute(sid, time_limit_ms=10**7), 400, "LIMIT_ABOVE_MAXIMUM")
    assert "time_limit_ms" in err["message"]
    assert_error(client.execute(sid, memory_limit_mb=0), 400)
    assert_error(client.execute(sid, args="not a list"), 400)
    assert_error(client.execute(sid, priority="urgent"), 400)
    assert_error(client.execute(sid, bogus=1), 400, "UNKNOWN_FIELD")
    assert client.request("GET", f"/api/v1/executions/session/{sid}").json()["total"] == 0


def test_bad_version_and_paging(client: ApiClient) -> None:
    sid = client.create_session("x")["session_id"]
    assert_error(
        client.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "y", "version": "1"}), 400
    )
    assert_error(
        client.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "y", "version": 10**30}), 400
    )
    assert_error(
        client.request(
            "PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "y"}, headers={"If-Match": '"garbage"'}
        ),
        400,
        "INVALID_ETAG",
    )
    assert_error(client.request("GET", f"/api/v1/executions/session/{sid}?page=0"), 400)
    assert_error(client.request("GET", f"/api/v1/executions/session/{sid}?per_page=abc"), 400)


def test_unknown_path_and_method(client: ApiClient) -> None:
    assert_error(client.request("GET", "/api/v1/nothing-here"), 404)
    assert_error(client.request("PUT", "/api/v1/code-sessions"), 405)
    assert_error(client.request("GET", "/%F0%9F%92%A9" * 50), 404)


@pytest.mark.parametrize("value", ["true", 1, [True], {"on": True}])
def test_merge_stderr_must_be_a_boolean(client: ApiClient, value: object) -> None:
    sid = client.create_session("print(1)")["session_id"]
    err = assert_error(client.execute(sid, merge_stderr=value), 400, "INVALID_FIELD")
    assert "merge_stderr" in err["message"]
    assert client.request("GET", f"/api/v1/executions/session/{sid}").json()["total"] == 0
