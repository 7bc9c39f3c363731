"""/api/v1/code-sessions: create, read, autosave (with version conflicts), delete."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.inprocess import LiveApp, expect_error, uid

SESSIONS = "/api/v1/code-sessions"


def test_create_returns_the_session_with_version_1_and_stores_it(live: LiveApp) -> None:
    r = live.client.post(SESSIONS, json={"language": "python", "source_code": "print(1)"})
    assert r.status_code == 201
    body = r.get_json()
    assert body["language"] == "python" and body["source_code"] == "print(1)"
    assert body["status"] == "ACTIVE" and body["version"] == 1
    assert body["session_id"] == body["id"]
    assert r.headers["ETag"] == f'"{body["session_id"]}-v1"'
    row = live.rows.one("code_sessions", "id = :id", id=uid(body["session_id"]))
    assert (row["source_code"], row["version"], row["language"]) == ("print(1)", 1, "python")


def test_get_returns_the_current_source_and_version(live: LiveApp) -> None:
    sid = live.session("a = 1")["session_id"]
    r = live.client.get(f"{SESSIONS}/{sid}")
    assert r.status_code == 200
    assert (r.get_json()["source_code"], r.get_json()["version"]) == ("a = 1", 1)
    assert r.headers["ETag"] == f'"{sid}-v1"'


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"source_code": "x"}, 400, "MISSING_FIELD"),
        ({"language": "python"}, 400, "MISSING_FIELD"),
        ({"language": "cobol", "source_code": "x"}, 400, "UNSUPPORTED_LANGUAGE"),
        ({"language": "python", "source_code": 5}, 400, "INVALID_FIELD"),
        ({"language": "python", "source_code": "x", "owner": "me"}, 400, "UNKNOWN_FIELD"),
        ({"language": "python", "source_code": "a\u0000b"}, 400, "INVALID_FIELD"),
        ({"language": "p" * 51, "source_code": "x"}, 400, "INVALID_FIELD"),
        ([1, 2], 400, "INVALID_JSON"),
    ],
)
def test_create_with_bad_input_is_a_4xx_and_stores_nothing(live: LiveApp, body: Any, status: int, code: str) -> None:
    before = live.rows.snapshot()
    expect_error(live.client.post(SESSIONS, json=body), status, code)
    assert live.rows.snapshot() == before


def test_unknown_language_names_the_supported_ones(live: LiveApp) -> None:
    err = expect_error(live.client.post(SESSIONS, json={"language": "cobol", "source_code": "x"}), 400)
    assert "python" in err["details"]["supported"]


def test_not_json_and_broken_json_are_refused(live: LiveApp) -> None:
    before = live.rows.snapshot()
    expect_error(live.client.post(SESSIONS, data="language=python", content_type="text/plain"), 415,
                 "UNSUPPORTED_MEDIA_TYPE")
    expect_error(live.client.post(SESSIONS, data="{", content_type="application/json"), 400, "INVALID_JSON")
    expect_error(live.client.post(SESSIONS, data=b"\xff\xfe", content_type="application/json"), 400, "INVALID_JSON")
    expect_error(live.client.post(SESSIONS, data="[" * 100_000, content_type="application/json"), 400,
                 "INVALID_JSON")
    assert live.rows.snapshot() == before


def test_source_over_the_limit_is_413(make_live: Any) -> None:
    live = make_live(max_source_bytes=100)
    err = expect_error(live.client.post(SESSIONS, json={"language": "python", "source_code": "é" * 51}), 413,
                       "SOURCE_TOO_LARGE")
    assert err["details"] == {"limit_bytes": 100, "size_bytes": 102}
    assert live.rows.count("code_sessions") == 0
    assert live.client.post(SESSIONS, json={"language": "python", "source_code": "é" * 50}).status_code == 201


def test_a_request_body_over_the_limit_is_413(make_live: Any) -> None:
    live = make_live(max_request_bytes=1000)
    r = live.client.post(SESSIONS, json={"language": "python", "source_code": "x" * 2000})
    expect_error(r, 413)
    assert live.rows.count("code_sessions") == 0


def test_session_quota_refuses_with_429_and_creates_nothing(make_live: Any) -> None:
    live = make_live(max_sessions=2)
    live.session()
    live.session()
    before = live.rows.snapshot()
    err = expect_error(live.client.post(SESSIONS, json={"language": "python", "source_code": "x"}), 429,
                       "SESSION_QUOTA_EXCEEDED")
    assert "Retry-After" not in live.client.post(SESSIONS, json={"language": "python", "source_code": "x"}).headers
    assert err["message"]
    assert live.rows.snapshot() == before


def test_get_unknown_and_malformed_ids(live: LiveApp) -> None:
    expect_error(live.client.get(f"{SESSIONS}/{uuid.uuid4()}"), 404, "SESSION_NOT_FOUND")
    expect_error(live.client.get(f"{SESSIONS}/not-a-uuid"), 400, "INVALID_ID")


# ---- autosave --------------------------------------------------------------------------------


def test_autosave_with_the_current_version_saves_and_bumps_it(live: LiveApp) -> None:
    sid = live.session("v1")["session_id"]
    r = live.client.patch(f"{SESSIONS}/{sid}", json={"source_code": "v2", "version": 1})
    assert r.status_code == 200
    assert r.get_json()["version"] == 2
    assert r.headers["ETag"] == f'"{sid}-v2"'
    row = live.rows.one("code_sessions", "id = :id", id=uid(sid))
    assert (row["source_code"], row["version"]) == ("v2", 2)


def test_autosave_with_a_stale_version_is_409_and_overwrites_nothing(live: LiveApp) -> None:
    sid = live.session("v1")["session_id"]
    assert live.client.patch(f"{SESSIONS}/{sid}", json={"source_code": "mine", "version": 1}).status_code == 200
    before = live.rows.snapshot()
    err = expect_error(live.client.patch(f"{SESSIONS}/{sid}", json={"source_code": "theirs", "version": 1}), 409)
    assert err["code"] == "VERSION_CONFLICT"
    assert live.rows.snapshot() == before
    assert live.client.get(f"{SESSIONS}/{sid}").get_json()["source_code"] == "mine"


def test_autosave_by_if_match_etag(live: LiveApp) -> None:
    created = live.client.post(SESSIONS, json={"language": "python", "source_code": "v1"})
    sid, etag = created.get_json()["session_id"], created.headers["ETag"]
    r = live.client.patch(f"{SESSIONS}/{sid}", json={"source_code": "v2"}, headers={"If-Match": etag})
    assert r.status_code == 200 and r.get_json()["version"] == 2
    # The same (now stale) ETag again: refused, the newer save stays.
    expect_error(live.client.patch(f"{SESSIONS}/{sid}", json={"source_code": "v3"}, headers={"If-Match": etag}),
                 409)
    assert live.rows.one("code_sessions", "id = :id", id=uid(sid))["source_code"] == "v2"
    expect_error(live.client.patch(f"{SESSIONS}/{sid}", json={"source_code": "v3"}, headers={"If-Match": '"x"'}),
                 400, "INVALID_ETAG")


def test_autosave_without_a_version_is_last_write_wins(live: LiveApp) -> None:
    sid = live.session("v1")["session_id"]
    for n in range(2, 5):
        r = live.client.patch(f"{SESSIONS}/{sid}", json={"source_code": f"v{n}"})
        assert r.status_code == 200 and r.get_json()["version"] == n


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"version": 1}, "MISSING_FIELD"),
        ({"source_code": "x", "version": 0}, "INVALID_FIELD"),
        ({"source_code": "x", "version": "1"}, "INVALID_FIELD"),
        ({"source_code": "x", "version": True}, "INVALID_FIELD"),
        ({"source_code": "x", "language": "c"}, "UNKNOWN_FIELD"),
    ],
)
def test_autosave_bad_input_is_400_and_changes_nothing(live: LiveApp, body: dict[str, Any], code: str) -> None:
    sid = live.session("v1")["session_id"]
    before = live.rows.snapshot()
    expect_error(live.client.patch(f"{SESSIONS}/{sid}", json=body), 400, code)
    assert live.rows.snapshot() == before


def test_autosave_unknown_session_and_oversized_source(make_live: Any) -> None:
    live = make_live(max_source_bytes=10)
    expect_error(live.client.patch(f"{SESSIONS}/{uuid.uuid4()}", json={"source_code": "x"}), 404, "SESSION_NOT_FOUND")
    sid = live.session("v1")["session_id"]
    expect_error(live.client.patch(f"{SESSIONS}/{sid}", json={"source_code": "x" * 11}), 413, "SOURCE_TOO_LARGE")
    assert live.rows.one("code_sessions", "id = :id", id=uid(sid))["source_code"] == "v1"


def test_delete_removes_the_session_and_its_executions(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    live.execute(sid)
    r = live.client.delete(f"{SESSIONS}/{sid}")
    assert r.status_code == 204 and r.get_data() == b""
    assert live.rows.count("code_sessions") == 0 and live.rows.count("executions") == 0
    expect_error(live.client.get(f"{SESSIONS}/{sid}"), 404)
    expect_error(live.client.delete(f"{SESSIONS}/{sid}"), 404, "SESSION_NOT_FOUND")
