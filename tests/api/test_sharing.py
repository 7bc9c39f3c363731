"""Sharing a session (issue 15, part 2): members, share links, and the one membership rule every
session and execution route goes through. A member sees; a viewer cannot edit or run (403); a
stranger gets 404 everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.inprocess import LiveApp, expect_error, finish_like_a_worker
from tests.support.users import User, sign_up

SESSIONS = "/api/v1/code-sessions"
EXECS = "/api/v1/executions"
WS_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@dataclass
class Cast:
    live: LiveApp
    owner: User
    editor: User
    viewer: User
    stranger: User
    sid: str


@pytest.fixture
def cast(secure: LiveApp) -> Cast:
    owner, editor, viewer, stranger = (sign_up(secure, n) for n in ("olga", "edith", "vic", "sam"))
    sid = secure.session("print(1)", headers=owner.headers)["session_id"]
    for user, role in ((editor, "editor"), (viewer, "viewer")):
        r = secure.client.post(
            f"{SESSIONS}/{sid}/members", json={"username": user.username, "role": role}, headers=owner.headers
        )
        assert r.status_code == 201, r.get_json()
        assert r.get_json()["role"] == role and r.get_json()["user_id"] == user.user_id
    return Cast(secure, owner, editor, viewer, stranger, sid)


def test_members_list_shows_the_owner_and_roles_to_every_member(cast: Cast) -> None:
    for user in (cast.owner, cast.editor, cast.viewer):
        r = cast.live.client.get(f"{SESSIONS}/{cast.sid}/members", headers=user.headers)
        assert r.status_code == 200
        assert [(m["username"], m["role"]) for m in r.get_json()["items"]] == [
            ("olga", "owner"),
            ("edith", "editor"),
            ("vic", "viewer"),
        ]
    expect_error(
        cast.live.client.get(f"{SESSIONS}/{cast.sid}/members", headers=cast.stranger.headers), 404, "SESSION_NOT_FOUND"
    )


def test_members_see_the_session_and_its_executions(cast: Cast) -> None:
    c = cast.live.client
    run = cast.live.execute(cast.sid, headers=cast.editor.headers)  # an editor runs
    finish_like_a_worker(cast.live, run["execution_id"], stdout=b"1\n", exit_code=0)
    for user in (cast.owner, cast.editor, cast.viewer):
        got = c.get(f"{SESSIONS}/{cast.sid}", headers=user.headers)
        assert got.status_code == 200 and got.get_json()["source_code"] == "print(1)"
        listed = c.get(f"{EXECS}/session/{cast.sid}", headers=user.headers)
        assert [e["execution_id"] for e in listed.get_json()["items"]] == [run["execution_id"]]
        one = c.get(f"{EXECS}/{run['execution_id']}", headers=user.headers)
        assert one.status_code == 200 and one.get_json()["stdout"] == "1\n"
        program = c.get(f"{EXECS}/{run['execution_id']}/program", headers=user.headers)
        assert program.status_code == 200 and program.get_json()["files"][0]["content"] == "print(1)"
        assert c.get(f"{EXECS}/{run['execution_id']}/files", headers=user.headers).status_code == 200
        events = c.get(f"{EXECS}/{run['execution_id']}/events", headers=user.headers)
        assert events.status_code == 200
        assert "event: end" in events.get_data(as_text=True)


def test_a_stranger_gets_404_everywhere_and_changes_nothing(cast: Cast) -> None:
    c, h = cast.live.client, cast.stranger.headers
    run = cast.live.execute(cast.sid, headers=cast.owner.headers)
    finish_like_a_worker(cast.live, run["execution_id"])
    before = cast.live.rows.snapshot()
    sid, eid = cast.sid, run["execution_id"]
    for resp in (
        c.get(f"{SESSIONS}/{sid}", headers=h),
        c.patch(f"{SESSIONS}/{sid}", json={"source_code": "x"}, headers=h),
        c.delete(f"{SESSIONS}/{sid}", headers=h),
        c.post(f"{EXECS}/session/{sid}/execute", json={}, headers=h),
        c.post(f"{EXECS}/batch", json={"executions": [{"session_id": sid}]}, headers=h),
        c.get(f"{EXECS}/session/{sid}", headers=h),
        c.get(f"{SESSIONS}/{sid}/members", headers=h),
        c.post(f"{SESSIONS}/{sid}/members", json={"username": "sam", "role": "editor"}, headers=h),
        c.post(f"{SESSIONS}/{sid}/share-links", json={"role": "editor"}, headers=h),
        c.get(f"{SESSIONS}/{sid}/share-links", headers=h),
        c.get(f"{SESSIONS}/{sid}/ws", headers={**h, **WS_HEADERS}),
        c.get(f"{SESSIONS}/{sid}/ws?access_token={cast.stranger.access}", headers=WS_HEADERS),
    ):
        expect_error(resp, 404, "SESSION_NOT_FOUND")
    for resp in (
        c.get(f"{EXECS}/{eid}", headers=h),
        c.get(f"{EXECS}/{eid}/events", headers=h),
        c.get(f"{EXECS}/{eid}/program", headers=h),
        c.get(f"{EXECS}/{eid}/files", headers=h),
        c.get(f"{EXECS}/{eid}/ws", headers={**h, **WS_HEADERS}),
    ):
        expect_error(resp, 404, "EXECUTION_NOT_FOUND")
    assert cast.live.rows.snapshot() == before


def test_a_viewer_cannot_edit_run_delete_or_share(cast: Cast) -> None:
    c, h, sid = cast.live.client, cast.viewer.headers, cast.sid
    before = cast.live.rows.snapshot()
    for resp in (
        c.patch(f"{SESSIONS}/{sid}", json={"source_code": "evil()"}, headers=h),
        c.patch(f"{SESSIONS}/{sid}", json={"source_code": "evil()", "version": 1}, headers=h),
        c.post(f"{EXECS}/session/{sid}/execute", json={}, headers=h),
        c.post(f"{EXECS}/batch", json={"executions": [{"session_id": sid}]}, headers=h),
    ):
        err = expect_error(resp, 403, "READ_ONLY_MEMBER")
        assert err["details"]["your_role"] == "viewer"
    for resp in (
        c.delete(f"{SESSIONS}/{sid}", headers=h),
        c.post(f"{SESSIONS}/{sid}/members", json={"username": "sam", "role": "viewer"}, headers=h),
        c.post(f"{SESSIONS}/{sid}/share-links", json={"role": "editor"}, headers=h),
        c.get(f"{SESSIONS}/{sid}/share-links", headers=h),
        c.delete(f"{SESSIONS}/{sid}/members/{cast.editor.user_id}", headers=h),
    ):
        expect_error(resp, 403, "OWNER_ONLY")
    assert cast.live.rows.snapshot() == before


def test_an_editor_edits_with_optimistic_locking_and_runs_but_cannot_delete(cast: Cast) -> None:
    c, h, sid = cast.live.client, cast.editor.headers, cast.sid
    r = c.patch(f"{SESSIONS}/{sid}", json={"source_code": "print(2)", "version": 1}, headers=h)
    assert r.status_code == 200 and r.get_json()["version"] == 2
    expect_error(
        c.patch(f"{SESSIONS}/{sid}", json={"source_code": "print(3)", "version": 1}, headers=h), 409, "VERSION_CONFLICT"
    )
    assert c.get(f"{SESSIONS}/{sid}", headers=cast.owner.headers).get_json()["source_code"] == "print(2)"
    run = cast.live.execute(sid, headers=h)
    assert cast.live.enqueued.ids == [run["execution_id"]]
    # The run is the session's: it counts against the owner's storage, as the owner's own runs do.
    assert cast.live.rows.one("executions", "1=1")["user_id"] == cast.live.rows.one("code_sessions", "1=1")["user_id"]
    expect_error(c.delete(f"{SESSIONS}/{sid}", headers=h), 403, "OWNER_ONLY")


def test_owner_changes_a_role_removes_a_member_and_a_member_can_leave(cast: Cast) -> None:
    c, sid = cast.live.client, cast.sid
    r = c.post(f"{SESSIONS}/{sid}/members", json={"username": "VIC", "role": "editor"}, headers=cast.owner.headers)
    assert r.status_code == 200 and r.get_json()["role"] == "editor"
    assert c.patch(f"{SESSIONS}/{sid}", json={"source_code": "ok"}, headers=cast.viewer.headers).status_code == 200
    assert c.delete(f"{SESSIONS}/{sid}/members/{cast.viewer.user_id}", headers=cast.owner.headers).status_code == 204
    expect_error(c.get(f"{SESSIONS}/{sid}", headers=cast.viewer.headers), 404, "SESSION_NOT_FOUND")
    assert c.delete(f"{SESSIONS}/{sid}/members/{cast.editor.user_id}", headers=cast.editor.headers).status_code == 204
    expect_error(c.get(f"{SESSIONS}/{sid}", headers=cast.editor.headers), 404, "SESSION_NOT_FOUND")
    expect_error(
        c.delete(f"{SESSIONS}/{sid}/members/{cast.editor.user_id}", headers=cast.owner.headers), 404, "MEMBER_NOT_FOUND"
    )


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"username": "sam", "role": "owner"}, 400, "INVALID_ROLE"),
        ({"username": "sam", "role": "admin"}, 400, "INVALID_ROLE"),
        ({"username": "sam"}, 400, "MISSING_FIELD"),
        ({"username": "sam", "role": "viewer", "extra": 1}, 400, "UNKNOWN_FIELD"),
        ({"username": "nobody-here", "role": "viewer"}, 404, "USER_NOT_FOUND"),
        ({"username": "olga", "role": "viewer"}, 400, "ALREADY_OWNER"),
    ],
)
def test_bad_member_requests_change_nothing(cast: Cast, body: dict[str, Any], status: int, code: str) -> None:
    before = cast.live.rows.snapshot()
    expect_error(
        cast.live.client.post(f"{SESSIONS}/{cast.sid}/members", json=body, headers=cast.owner.headers), status, code
    )
    assert cast.live.rows.snapshot() == before


def test_share_link_create_list_redeem_revoke(cast: Cast) -> None:
    c, sid, oh = cast.live.client, cast.sid, cast.owner.headers
    r = c.post(f"{SESSIONS}/{sid}/share-links", json={"role": "viewer", "expires_in_s": 3600}, headers=oh)
    assert r.status_code == 201
    link = r.get_json()
    assert link["role"] == "viewer" and link["token"].startswith("lcs_") and not link["revoked"]
    assert link["token"] not in str(cast.live.rows.snapshot())  # only its hash is stored
    listed = c.get(f"{SESSIONS}/{sid}/share-links", headers=oh).get_json()["items"]
    assert [x["link_id"] for x in listed] == [link["link_id"]] and "token" not in listed[0]
    # The stranger redeems it and becomes a viewer.
    joined = c.post(f"{SESSIONS}/join", json={"token": link["token"]}, headers=cast.stranger.headers)
    assert joined.status_code == 200 and joined.get_json() == {"session_id": sid, "role": "viewer"}
    assert c.get(f"{SESSIONS}/{sid}", headers=cast.stranger.headers).status_code == 200
    expect_error(
        c.patch(f"{SESSIONS}/{sid}", json={"source_code": "x"}, headers=cast.stranger.headers), 403, "READ_ONLY_MEMBER"
    )
    # A viewer link never lowers an editor; the owner stays the owner.
    assert (
        c.post(f"{SESSIONS}/join", json={"token": link["token"]}, headers=cast.editor.headers).get_json()["role"]
        == "editor"
    )
    assert c.post(f"{SESSIONS}/join", json={"token": link["token"]}, headers=oh).get_json()["role"] == "owner"
    # Revoked: nobody else can join; who joined stays.
    assert c.delete(f"{SESSIONS}/{sid}/share-links/{link['link_id']}", headers=oh).status_code == 204
    latecomer = sign_up(cast.live, "late")
    expect_error(
        c.post(f"{SESSIONS}/join", json={"token": link["token"]}, headers=latecomer.headers), 404, "SHARE_LINK_INVALID"
    )
    assert c.get(f"{SESSIONS}/{sid}", headers=cast.stranger.headers).status_code == 200
    expect_error(c.delete(f"{SESSIONS}/{sid}/share-links/{link['link_id']}", headers=oh), 404, "SHARE_LINK_NOT_FOUND")


def test_an_expired_or_unknown_link_is_refused(cast: Cast) -> None:
    c, sid = cast.live.client, cast.sid
    link = c.post(f"{SESSIONS}/{sid}/share-links", json={"role": "editor"}, headers=cast.owner.headers).get_json()
    cast.live.rows.execute("UPDATE session_share_links SET expires_at = '2000-01-01 00:00:00'")
    before = cast.live.rows.snapshot()
    for token in (link["token"], "lcs_made-up", "x" * 500):
        expect_error(
            c.post(f"{SESSIONS}/join", json={"token": token}, headers=cast.stranger.headers),
            404 if len(token) < 300 else 400,
        )
    assert cast.live.rows.snapshot() == before
    for body in ({"role": "editor", "expires_in_s": 10}, {"role": "editor", "expires_in_s": 10**9}, {"role": "root"}):
        expect_error(c.post(f"{SESSIONS}/{sid}/share-links", json=body, headers=cast.owner.headers), 400)


def test_sharing_needs_an_account(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    expect_error(live.client.post(f"{SESSIONS}/{sid}/share-links", json={"role": "editor"}), 401, "UNAUTHORIZED")
    expect_error(live.client.post(f"{SESSIONS}/join", json={"token": "lcs_x"}), 401, "UNAUTHORIZED")


def test_deleting_the_session_deletes_members_and_links(cast: Cast) -> None:
    c = cast.live.client
    c.post(f"{SESSIONS}/{cast.sid}/share-links", json={"role": "editor"}, headers=cast.owner.headers)
    assert c.delete(f"{SESSIONS}/{cast.sid}", headers=cast.owner.headers).status_code == 204
    assert cast.live.rows.count("session_members") == 0
    assert cast.live.rows.count("session_share_links") == 0


def test_a_viewer_may_follow_an_interactive_run_but_not_type_into_it(cast: Cast) -> None:
    from livecode.api.stream import _may_send_input

    live = cast.live
    r = live.client.post(f"{EXECS}/session/{cast.sid}/execute", json={"interactive": True}, headers=cast.owner.headers)
    assert r.status_code == 202, r.get_json()
    row = {"interactive": True, "session_id": cast.sid}
    for user, may in ((cast.owner, True), (cast.editor, True), (cast.viewer, False)):
        with live.app.test_request_context("/api/v1/auth/me", headers=user.headers):
            live.app.preprocess_request()  # authenticates the caller, as for the WebSocket route
            assert _may_send_input(row) is may, user.username
