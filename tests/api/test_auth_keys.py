"""Accounts (/api/v1/auth), API keys (/api/v1/api-keys) and who may see what."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.inprocess import LiveApp, expect_error
from tests.support.users import PASSWORD, sign_in, sign_up

AUTH = "/api/v1/auth"
KEYS = "/api/v1/api-keys"
SESSIONS = "/api/v1/code-sessions"


def test_with_sign_in_required_a_request_without_credentials_is_401(secure: LiveApp) -> None:
    before = secure.rows.snapshot()
    r = secure.client.post(SESSIONS, json={"language": "python", "source_code": "x"})
    expect_error(r, 401, "UNAUTHORIZED")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert secure.rows.snapshot() == before
    # Public routes stay reachable.
    assert secure.client.get("/api/v1/languages").status_code == 200
    assert secure.client.get("/health").status_code == 200


def test_register_sign_in_and_use_the_token(secure: LiveApp) -> None:
    r = secure.client.post(f"{AUTH}/register", json={"username": "Ada", "password": PASSWORD})
    assert r.status_code == 201
    created = r.get_json()
    assert (created["username"], created["role"]) == ("ada", "user")
    user = sign_in(secure, "ADA")  # usernames are case-insensitive
    me = secure.client.get(f"{AUTH}/me", headers=user.headers)
    assert me.status_code == 200 and me.get_json() == {"user_id": created["user_id"], "username": "ada",
                                                        "role": "user"}
    r = secure.client.post(SESSIONS, json={"language": "python", "source_code": "x"}, headers=user.headers)
    assert r.status_code == 201
    assert secure.rows.one("code_sessions", "1=1")["user_id"] == uuid.UUID(created["user_id"]).hex


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"username": "ab", "password": PASSWORD}, 400, "INVALID_USERNAME"),
        ({"username": "bad name", "password": PASSWORD}, 400, "INVALID_USERNAME"),
        ({"username": "someone", "password": "short"}, 400, "INVALID_PASSWORD"),
        ({"username": "someone", "password": "password123"}, 400, "COMMON_PASSWORD"),
        ({"username": "someone"}, 400, "MISSING_FIELD"),
        ({"username": "someone", "password": PASSWORD, "role": "admin"}, 400, "UNKNOWN_FIELD"),
        ({"username": "someone", "password": PASSWORD, "invitation": "x"}, 400, "UNKNOWN_FIELD"),
    ],
)
def test_register_refuses_bad_credentials(secure: LiveApp, body: dict[str, Any], status: int, code: str) -> None:
    before = secure.rows.snapshot()
    expect_error(secure.client.post(f"{AUTH}/register", json=body), status, code)
    assert secure.rows.snapshot() == before


def test_a_taken_username_is_409(secure: LiveApp) -> None:
    sign_up(secure, "grace")
    before = secure.rows.snapshot()
    expect_error(secure.client.post(f"{AUTH}/register", json={"username": "GRACE", "password": PASSWORD}), 409,
                 "USERNAME_TAKEN")
    assert secure.rows.snapshot() == before


def test_wrong_password_and_unknown_user_are_the_same_401(secure: LiveApp) -> None:
    sign_up(secure, "linus")
    a = expect_error(secure.client.post(f"{AUTH}/login", json={"username": "linus", "password": "wrong-password"}),
                     401, "INVALID_CREDENTIALS")
    b = expect_error(secure.client.post(f"{AUTH}/login", json={"username": "nobody", "password": "wrong-password"}),
                     401, "INVALID_CREDENTIALS")
    assert a == b


@pytest.mark.parametrize(
    ("header", "code"),
    [("Bearer not-a-jwt", "INVALID_TOKEN"), ("Basic abc", "INVALID_TOKEN"), ("Bearer ", "INVALID_TOKEN")],
)
def test_bad_tokens_are_401(secure: LiveApp, header: str, code: str) -> None:
    expect_error(secure.client.get(f"{AUTH}/me", headers={"Authorization": header}), 401, code)


def test_a_refresh_token_is_not_an_access_token(secure: LiveApp) -> None:
    user = sign_up(secure)
    expect_error(secure.client.get(f"{AUTH}/me", headers={"Authorization": f"Bearer {user.refresh}"}), 401,
                 "INVALID_TOKEN")


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_sign_in(secure: LiveApp) -> None:
    user = sign_up(secure)
    r = secure.client.post(f"{AUTH}/refresh", json={"refresh_token": user.refresh})
    assert r.status_code == 200
    fresh = r.get_json()
    assert fresh["refresh_token"] != user.refresh and fresh["token_type"] == "Bearer"
    fresh_headers = {"Authorization": f"Bearer {fresh['access_token']}"}
    assert secure.client.get(f"{AUTH}/me", headers=fresh_headers).status_code == 200
    # The first refresh token again: a stolen copy. Every token of that sign-in stops working.
    expect_error(secure.client.post(f"{AUTH}/refresh", json={"refresh_token": user.refresh}), 401, "TOKEN_REUSED")
    expect_error(secure.client.post(f"{AUTH}/refresh", json={"refresh_token": fresh["refresh_token"]}), 401,
                 "TOKEN_REVOKED")
    expect_error(secure.client.get(f"{AUTH}/me", headers={"Authorization": f"Bearer {fresh['access_token']}"}), 401,
                 "TOKEN_REVOKED")


def test_refresh_errors(secure: LiveApp) -> None:
    user = sign_up(secure)
    expect_error(secure.client.post(f"{AUTH}/refresh", json={}), 401, "INVALID_TOKEN")
    expect_error(secure.client.post(f"{AUTH}/refresh", json={"refresh_token": "x.y.z"}), 401, "INVALID_TOKEN")
    expect_error(secure.client.post(f"{AUTH}/refresh", json={"refresh_token": user.access}), 401, "INVALID_TOKEN")
    expect_error(secure.client.post(f"{AUTH}/refresh", json={"refresh_token": user.refresh, "x": 1}), 400,
                 "UNKNOWN_FIELD")
    # The header form works too.
    r = secure.client.post(f"{AUTH}/refresh", headers={"Authorization": f"Bearer {user.refresh}"})
    assert r.status_code == 200


def test_logout_ends_that_sign_in_only(secure: LiveApp) -> None:
    user = sign_up(secure)
    other = sign_in(secure, user.username)
    r = secure.client.post(f"{AUTH}/logout", json={"refresh_token": user.refresh})
    assert r.status_code == 204
    expect_error(secure.client.get(f"{AUTH}/me", headers=user.headers), 401, "TOKEN_REVOKED")
    expect_error(secure.client.post(f"{AUTH}/refresh", json={"refresh_token": user.refresh}), 401)
    assert secure.client.get(f"{AUTH}/me", headers=other.headers).status_code == 200
    # Logging out with the access token works as well.
    assert secure.client.post(f"{AUTH}/logout", headers=other.headers).status_code == 204
    expect_error(secure.client.get(f"{AUTH}/me", headers=other.headers), 401, "TOKEN_REVOKED")
    expect_error(secure.client.post(f"{AUTH}/logout", json={"refresh_token": "junk"}), 401, "INVALID_TOKEN")


def test_password_change_revokes_earlier_tokens_and_returns_new_ones(secure: LiveApp) -> None:
    user = sign_up(secure)
    new_password = "another long passphrase here"
    expect_error(secure.client.post(f"{AUTH}/password", headers=user.headers,
                                    json={"current_password": "wrong-password", "new_password": new_password}),
                 403, "INVALID_CREDENTIALS")
    expect_error(secure.client.post(f"{AUTH}/password", headers=user.headers,
                                    json={"current_password": PASSWORD, "new_password": "short"}),
                 400, "INVALID_PASSWORD")
    r = secure.client.post(f"{AUTH}/password", headers=user.headers,
                           json={"current_password": PASSWORD, "new_password": new_password})
    assert r.status_code == 200
    expect_error(secure.client.get(f"{AUTH}/me", headers=user.headers), 401, "TOKEN_REVOKED")
    assert secure.client.get(f"{AUTH}/me", headers={"Authorization": f"Bearer {r.get_json()['access_token']}"}
                             ).status_code == 200
    expect_error(secure.client.post(f"{AUTH}/login", json={"username": user.username, "password": PASSWORD}), 401)
    assert sign_in(secure, user.username, password=new_password)
    expect_error(secure.client.post(f"{AUTH}/password", json={"current_password": "a", "new_password": "b"}), 401)


def test_registration_closed_and_by_invitation(make_live: Any) -> None:
    closed = make_live(auth_required=True, registration="closed")
    expect_error(closed.client.post(f"{AUTH}/register", json={"username": "zed", "password": PASSWORD}), 403,
                 "REGISTRATION_CLOSED")
    assert closed.rows.count("users") == 0

    invite = make_live(auth_required=True, registration="invite")
    expect_error(invite.client.post(f"{AUTH}/register", json={"username": "zed", "password": PASSWORD}), 403,
                 "INVITATION_REQUIRED")
    from livecode.services import accounts

    accounts.create_user(invite.db, "root_admin", PASSWORD, role="admin")
    admin = sign_in(invite, "root_admin")
    user_code = invite.client.post(f"{AUTH}/invitations", json={"days": 1}, headers=admin.headers)
    assert user_code.status_code == 201
    code = user_code.get_json()["code"]
    expect_error(invite.client.post(f"{AUTH}/register", json={"username": "zed", "password": PASSWORD,
                                                              "invitation": "inv_wrong"}), 400, "INVALID_INVITATION")
    ok = invite.client.post(f"{AUTH}/register", json={"username": "zed", "password": PASSWORD, "invitation": code})
    assert ok.status_code == 201
    # One use only.
    expect_error(invite.client.post(f"{AUTH}/register", json={"username": "zoe", "password": PASSWORD,
                                                              "invitation": code}), 400, "INVALID_INVITATION")
    zed = sign_in(invite, "zed")
    expect_error(invite.client.post(f"{AUTH}/invitations", json={}, headers=zed.headers), 403, "ADMIN_REQUIRED")
    expect_error(invite.client.post(f"{AUTH}/invitations", json={"days": 91}, headers=admin.headers), 400)


def test_sign_in_attempts_are_rate_limited_per_address(make_live: Any) -> None:
    live = make_live(auth_required=True, login_rate_limit="3/minute")
    for _ in range(3):
        expect_error(live.client.post(f"{AUTH}/login", json={"username": "x" * 3, "password": "p" * 8}), 401)
    r = live.client.post(f"{AUTH}/login", json={"username": "xxx", "password": "p" * 8})
    expect_error(r, 429)
    assert int(r.headers["Retry-After"]) >= 1


def test_users_see_only_their_own_sessions_and_executions(secure: LiveApp) -> None:
    alice, bob = sign_up(secure), sign_up(secure)
    sid = secure.session(headers=alice.headers)["session_id"]
    eid = secure.execute(sid, headers=alice.headers)["execution_id"]
    before = secure.rows.snapshot()
    expect_error(secure.client.get(f"{SESSIONS}/{sid}", headers=bob.headers), 404)
    expect_error(secure.client.patch(f"{SESSIONS}/{sid}", json={"source_code": "x"}, headers=bob.headers), 404)
    expect_error(secure.client.delete(f"{SESSIONS}/{sid}", headers=bob.headers), 404)
    expect_error(secure.client.get(f"/api/v1/executions/{eid}", headers=bob.headers), 404)
    expect_error(secure.client.get(f"/api/v1/executions/session/{sid}", headers=bob.headers), 404)
    expect_error(secure.client.post(f"/api/v1/executions/session/{sid}/execute", json={}, headers=bob.headers), 404)
    expect_error(secure.client.post("/api/v1/executions/batch", json={"executions": [{"session_id": sid}]},
                                    headers=bob.headers), 404)
    assert secure.rows.snapshot() == before
    assert secure.client.get(f"{SESSIONS}/{sid}", headers=alice.headers).status_code == 200


# ---- API keys --------------------------------------------------------------------------------


def test_api_key_lifecycle(secure: LiveApp) -> None:
    user = sign_up(secure)
    r = secure.client.post(KEYS, json={"name": "ci", "expires_in_days": 30}, headers=user.headers)
    assert r.status_code == 201
    created = r.get_json()
    key = created["key"]
    assert key.startswith("lc_") and created["name"] == "ci" and created["expires_at"]
    # Only the hash is stored.
    assert key not in str(secure.rows.snapshot())
    by_key = {"X-API-Key": key}
    assert secure.client.get(f"{AUTH}/me", headers=by_key).get_json()["user_id"] == user.user_id
    listed = secure.client.get(KEYS, headers=by_key).get_json()["items"]
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]
    # A key cannot make more keys or change the password.
    expect_error(secure.client.post(KEYS, json={}, headers=by_key), 403, "SIGN_IN_TOKEN_REQUIRED")
    expect_error(secure.client.post(f"{AUTH}/password", headers=by_key,
                                    json={"current_password": PASSWORD, "new_password": "x" * 20}),
                 403, "SIGN_IN_TOKEN_REQUIRED")
    assert secure.client.delete(f"{KEYS}/{created['id']}", headers=user.headers).status_code == 204
    expect_error(secure.client.get(f"{AUTH}/me", headers=by_key), 401, "INVALID_API_KEY")
    listed = secure.client.get(KEYS, headers=user.headers).get_json()["items"]
    assert listed[0]["revoked_at"] is not None


def test_api_key_errors(secure: LiveApp) -> None:
    alice, bob = sign_up(secure), sign_up(secure)
    expect_error(secure.client.post(KEYS, json={}), 401)
    expect_error(secure.client.get(KEYS), 401)
    expect_error(secure.client.post(KEYS, json={"expires_in_days": 0}, headers=alice.headers), 400, "INVALID_FIELD")
    expect_error(secure.client.post(KEYS, json={"name": "n" * 101}, headers=alice.headers), 400)
    expect_error(secure.client.post(KEYS, json={"scope": "all"}, headers=alice.headers), 400, "UNKNOWN_FIELD")
    key_id = secure.client.post(KEYS, json={}, headers=alice.headers).get_json()["id"]
    expect_error(secure.client.delete(f"{KEYS}/{key_id}", headers=bob.headers), 404, "API_KEY_NOT_FOUND")
    expect_error(secure.client.delete(f"{KEYS}/{uuid.uuid4()}", headers=alice.headers), 404, "API_KEY_NOT_FOUND")
    expect_error(secure.client.delete(f"{KEYS}/nope", headers=alice.headers), 400, "INVALID_ID")
    expect_error(secure.client.get(f"{AUTH}/me", headers={"X-API-Key": "lc_made_up"}), 401, "INVALID_API_KEY")


def test_keys_need_an_account_even_when_sign_in_is_optional(live: LiveApp) -> None:
    expect_error(live.client.post(KEYS, json={}), 401)
    expect_error(live.client.get(f"{AUTH}/me"), 401)



def test_flask_limiters_hooks_run_only_for_requests_it_looked_at(make_live: Any) -> None:
    """Its after-request hook and teardown (api/ratelimit.py _only_where_used) make its
    per-request context no more for a request no limit looked at; sign-in's limit still has it
    (and a 429 its headers: test_sign_in_attempts_are_rate_limited_per_address)."""
    from flask.globals import request_ctx

    live = make_live(auth_required=True, login_rate_limit="3/minute")
    with live.client:
        assert live.client.get("/api/v1/languages").status_code == 200
        assert not hasattr(request_ctx._get_current_object(), "_limiter_request_context")
    with live.client:
        live.client.post(f"{AUTH}/login", json={"username": "xxx", "password": "p" * 8})
        assert hasattr(request_ctx._get_current_object(), "_limiter_request_context")
