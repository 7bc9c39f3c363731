"""Ending a stolen session: logout, password change, refresh-token rotation with reuse detection,
API keys that need a sign-in token and can expire, roles and accounts checked at request time, and
who may register. Against two API processes sharing one database (fixture `auth_apis`)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tests.integration.test_rate_limits import from_address
from tests.support import accounts
from tests.support.client import ApiClient
from tests.support.procs import run_livecode, start_api, wait_for

pytestmark = pytest.mark.integration

PROPAGATION_S = 15  # each API process caches a principal for 5 s
# Sign-in attempts are limited per client address: this module signs in from an address of its own.
HTTP = from_address("127.0.0.83")


def register(base: str, username: str | None = None, password: str = "correct-horse-42") -> tuple[str, str]:
    return accounts.register(base, username, password, http=HTTP)


def login(base: str, username: str, password: str) -> dict[str, str]:
    return accounts.login(base, username, password, http=HTTP)


def bearer(base: str, token: str) -> ApiClient:
    return ApiClient(base, headers={"Authorization": f"Bearer {token}"})


def status_everywhere(apis: Any, token: str, path: str = "/api/v1/auth/me") -> list[int]:
    return [bearer(b, token).request("GET", path).status_code for b in apis.bases]


def refused_everywhere(apis: Any, token: str, path: str = "/api/v1/auth/me") -> bool:
    return all(code == 401 for code in status_everywhere(apis, token, path))


def refresh(base: str, token: str) -> requests.Response:
    return requests.post(base + "/api/v1/auth/refresh", json={"refresh_token": token}, timeout=30)


def cli(env: dict[str, str], *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**env, **({"LIVECODE_PASSWORD": password} if password else {})}
    out = run_livecode("user", *args, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out


def test_logout_ends_that_sign_in_only(auth_apis: Any) -> None:
    base = auth_apis.base
    name, password = register(base)
    laptop, phone = login(base, name, password), login(base, name, password)
    assert status_everywhere(auth_apis, laptop["access_token"]) == [200, 200]

    r = requests.post(base + "/api/v1/auth/logout", json={"refresh_token": laptop["refresh_token"]}, timeout=30)
    assert r.status_code == 204, r.text
    # The refresh token is dead at once, its access token on every process within seconds...
    assert refresh(base, laptop["refresh_token"]).status_code == 401
    wait_for(lambda: refused_everywhere(auth_apis, laptop["access_token"]), PROPAGATION_S, 0.5,
             what="every API process to refuse the signed-out access token")
    # ...while the other device's sign-in goes on.
    assert status_everywhere(auth_apis, phone["access_token"]) == [200, 200]
    assert refresh(base, phone["refresh_token"]).status_code == 200

    # Logging out with only the access token works too, and garbage is a 401.
    r = requests.post(base + "/api/v1/auth/logout", headers={"Authorization": f"Bearer {phone['access_token']}"},
                      timeout=30)
    assert r.status_code == 204, r.text
    wait_for(lambda: refused_everywhere(auth_apis, phone["access_token"]), PROPAGATION_S, 0.5,
             what="the access token used to log out to be refused")
    r = requests.post(base + "/api/v1/auth/logout", json={"refresh_token": "nonsense"}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "INVALID_TOKEN"


def test_refresh_rotates_and_a_replayed_token_revokes_the_sign_in(auth_apis: Any) -> None:
    base = auth_apis.base
    name, password = register(base)
    first = login(base, name, password)
    r = refresh(base, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] and second["refresh_token"] != first["refresh_token"]
    assert bearer(base, second["access_token"]).request("GET", "/api/v1/auth/me").status_code == 200

    # The attacker replays the stolen first refresh token: refused, and the whole sign-in ends,
    # including the legitimate client's newer tokens.
    replay = refresh(base, first["refresh_token"])
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "TOKEN_REUSED", replay.text
    assert refresh(base, second["refresh_token"]).status_code == 401
    wait_for(lambda: refused_everywhere(auth_apis, second["access_token"]), PROPAGATION_S, 0.5,
             what="the revoked sign-in's access token to be refused everywhere")
    # Signing in again works.
    assert bearer(base, login(base, name, password)["access_token"]).request("GET", "/api/v1/auth/me").status_code \
        == 200


def test_password_change_revokes_every_token(auth_apis: Any) -> None:
    base = auth_apis.base
    name, password = register(base)
    old = login(base, name, password)
    other_device = login(base, name, password)
    me = bearer(base, old["access_token"])

    wrong = me.request("POST", "/api/v1/auth/password",
                       json={"current_password": "not-the-password", "new_password": "a-new-password-77"})
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "INVALID_CREDENTIALS"
    common = me.request("POST", "/api/v1/auth/password",
                        json={"current_password": password, "new_password": "password123"})
    assert common.status_code == 400 and common.json()["error"]["code"] == "COMMON_PASSWORD"

    r = me.request("POST", "/api/v1/auth/password",
                   json={"current_password": password, "new_password": "a-new-password-77"})
    assert r.status_code == 200, r.text
    new = r.json()
    for token in (old["access_token"], other_device["access_token"]):
        wait_for(lambda t=token: refused_everywhere(auth_apis, t), PROPAGATION_S, 0.5,
                 what="tokens from before the password change to be refused")
    assert refresh(base, old["refresh_token"]).status_code == 401
    assert refresh(base, other_device["refresh_token"]).status_code == 401
    assert status_everywhere(auth_apis, new["access_token"]) == [200, 200]
    assert HTTP.post(base + "/api/v1/auth/login", json={"username": name, "password": password},
                     timeout=30).status_code == 401
    login(base, name, "a-new-password-77")


def test_api_keys_need_a_sign_in_token_and_can_expire(auth_apis: Any) -> None:
    base = auth_apis.base
    name, password = register(base)
    user = bearer(base, login(base, name, password)["access_token"])
    r = user.request("POST", "/api/v1/api-keys", json={"name": "ci", "expires_in_days": 30})
    assert r.status_code == 201, r.text
    key = r.json()
    assert key["expires_at"] and key["expires_at"] > key["created_at"]
    by_key = ApiClient(base, headers={"X-API-Key": key["key"]})
    assert by_key.request("GET", "/api/v1/auth/me").status_code == 200

    # A stolen API key cannot mint more keys (which would outlive its revocation).
    r = by_key.request("POST", "/api/v1/api-keys", json={"name": "persist"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "SIGN_IN_TOKEN_REQUIRED", r.text
    r = by_key.request("POST", "/api/v1/auth/password", json={"current_password": password,
                                                              "new_password": "another-password-88"})
    assert r.status_code == 403, r.text
    bad = user.request("POST", "/api/v1/api-keys", json={"expires_in_days": 0})
    assert bad.status_code == 400

    # A key past its expiry is refused (set in the database: nobody waits 30 days).
    short = user.request("POST", "/api/v1/api-keys", json={"name": "short", "expires_in_days": 1}).json()
    engine = sa.create_engine(auth_apis.env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = :id"),
                     {"id": short["id"]})
    engine.dispose()
    r = ApiClient(base, headers={"X-API-Key": short["key"]}).request("GET", "/api/v1/auth/me")
    assert r.status_code == 401 and r.json()["error"]["code"] == "INVALID_API_KEY"


def test_demoted_admin_and_deleted_user_lose_access_at_request_time(auth_apis: Any) -> None:
    base, env = auth_apis.base, auth_apis.env
    name = f"boss{uuid.uuid4().hex[:8]}"
    cli(env, "create", name, "--admin", password="boss-password-91")
    tokens = login(base, name, "boss-password-91")
    assert all(bearer(b, tokens["access_token"]).request("GET", "/api/v1/admin/stats").status_code == 200
               for b in auth_apis.bases)

    cli(env, "set-role", name)  # back to "user"
    wait_for(lambda: all(bearer(b, tokens["access_token"]).request("GET", "/api/v1/admin/stats").status_code == 403
                         for b in auth_apis.bases), PROPAGATION_S, 0.5,
             what="the demoted admin to lose the admin role on every process, with the same token")

    victim, password = register(base)
    vt = login(base, victim, password)
    client = bearer(base, vt["access_token"])
    assert client.request("POST", "/api/v1/code-sessions", json={"language": "python", "source_code": "1"}) \
        .status_code == 201
    cli(env, "delete", victim)

    def refused_write() -> bool:
        codes = [bearer(b, vt["access_token"]).request(
            "POST", "/api/v1/code-sessions", json={"language": "python", "source_code": "1"}).status_code
            for b in auth_apis.bases]
        assert all(c in (201, 401) for c in codes), codes  # never a 500
        return all(c == 401 for c in codes)

    wait_for(refused_write, PROPAGATION_S, 0.5, what="a deleted user's token to be refused")
    assert refresh(base, vt["refresh_token"]).status_code == 401


def test_usernames_are_normalised_and_common_passwords_refused(auth_apis: Any) -> None:
    base = auth_apis.base
    stem = f"Case{uuid.uuid4().hex[:6]}"
    register(base, stem, "long-enough-pass-3")

    def reg(username: str, password: str = "long-enough-pass-3") -> requests.Response:
        return HTTP.post(base + "/api/v1/auth/register", json={"username": username, "password": password},
                         timeout=30)

    # Case variants and full-width look-alikes are the same account.
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in stem.lower())
    for variant in (stem.lower(), stem.upper(), fullwidth):
        r = reg(variant)
        assert r.status_code == 409 and r.json()["error"]["code"] == "USERNAME_TAKEN", (variant, r.text)
    # Control characters make no separate look-alike account.
    for bad in (stem + "\n", stem + "\t", "\u200b" + stem, stem + "\x00"):
        r = reg(bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["code"] in {"INVALID_USERNAME", "INVALID_FIELD", "INVALID_JSON"}, r.text
    # Signing in is case-insensitive too.
    assert login(base, stem.upper(), "long-enough-pass-3")["access_token"]

    for weak in ("password123", "iloveyou", "qwertyuiop"):
        r = reg(f"w{uuid.uuid4().hex[:8]}", weak)
        assert r.status_code == 400 and r.json()["error"]["code"] == "COMMON_PASSWORD", (weak, r.text)
    r = reg(f"w{uuid.uuid4().hex[:8]}", "short")
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_PASSWORD"


@pytest.fixture(scope="module")
def gated_apis(auth_apis: Any) -> Iterator[dict[str, str]]:
    """API processes on the same database with registration by invitation, and closed."""
    invite_proc, invite_base = start_api({**auth_apis.env, "LIVECODE_REGISTRATION": "invite"})
    closed_proc, closed_base = start_api({**auth_apis.env, "LIVECODE_REGISTRATION": "closed"})
    yield {"invite": invite_base, "closed": closed_base}
    invite_proc.stop()
    closed_proc.stop()


def test_registration_can_be_closed_or_by_invitation(auth_apis: Any, gated_apis: dict[str, str]) -> None:
    body = {"username": f"n{uuid.uuid4().hex[:8]}", "password": "long-enough-pass-3"}
    r = HTTP.post(gated_apis["closed"] + "/api/v1/auth/register", json=body, timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "REGISTRATION_CLOSED", r.text

    base = gated_apis["invite"]
    r = HTTP.post(base + "/api/v1/auth/register", json=body, timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "INVITATION_REQUIRED", r.text
    r = HTTP.post(base + "/api/v1/auth/register", json={**body, "invitation": "inv_made-up"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_INVITATION", r.text

    # An ordinary user cannot invite; an admin can, and each code works once.
    user = bearer(base, login(auth_apis.base, *register(auth_apis.base))["access_token"])
    assert user.request("POST", "/api/v1/auth/invitations", json={}).status_code == 403
    admin_name = f"inv{uuid.uuid4().hex[:8]}"
    cli(auth_apis.env, "create", admin_name, "--admin", password="inviter-pass-12")
    admin = bearer(base, login(base, admin_name, "inviter-pass-12")["access_token"])
    r = admin.request("POST", "/api/v1/auth/invitations", json={"days": 2})
    assert r.status_code == 201, r.text
    code = r.json()["code"]
    r = HTTP.post(base + "/api/v1/auth/register", json={**body, "invitation": code}, timeout=30)
    assert r.status_code == 201, r.text
    again = {"username": f"n{uuid.uuid4().hex[:8]}", "password": "long-enough-pass-3", "invitation": code}
    r = HTTP.post(base + "/api/v1/auth/register", json=again, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_INVITATION", r.text
    # The failed attempt created no account.
    r = HTTP.post(base + "/api/v1/auth/login", json={"username": again["username"],
                                                         "password": again["password"]}, timeout=30)
    assert r.status_code == 401
