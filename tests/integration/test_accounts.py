"""Accounts and ownership: sign-in, tokens, API keys, and one user never seeing or touching another's
data through any endpoint. Runs against API processes with sign-in required (fixture `auth_apis`)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from tests.support.accounts import login, register, user_client
from tests.support.client import ApiClient
from tests.support.procs import run_livecode, wait_for

pytestmark = pytest.mark.integration


def assert_error(r: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    if code:
        assert err["code"] == code, r.text
    return err  # type: ignore[no-any-return]


def test_everything_but_public_endpoints_needs_sign_in(auth_apis: Any) -> None:
    anon = ApiClient(auth_apis.base)
    err = assert_error(anon.request("POST", "/api/v1/code-sessions", json={"language": "python", "source_code": "1"}),
                       401, "UNAUTHORIZED")
    assert "Bearer" in err["message"] and "X-API-Key" in err["message"]
    assert_error(anon.request("GET", f"/api/v1/executions/{uuid.uuid4()}"), 401)
    assert_error(anon.request("GET", "/api/v1/api-keys"), 401)
    for path in ("/health", "/api/v1/languages", "/docs", "/swagger.json", "/metrics"):
        assert anon.request("GET", path).status_code == 200, path
    bad = ApiClient(auth_apis.base, headers={"Authorization": "Bearer not-a-token"})
    assert_error(bad.request("GET", f"/api/v1/executions/{uuid.uuid4()}"), 401, "INVALID_TOKEN")
    basic = ApiClient(auth_apis.base, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_error(basic.request("GET", f"/api/v1/executions/{uuid.uuid4()}"), 401, "INVALID_TOKEN")


def test_register_login_refresh(auth_apis: Any) -> None:
    base = auth_apis.base
    username, password = register(base)
    assert_error(requests.post(base + "/api/v1/auth/register", json={"username": username, "password": password}),
                 409, "USERNAME_TAKEN")
    assert_error(requests.post(base + "/api/v1/auth/register", json={"username": "x", "password": password}),
                 400, "INVALID_USERNAME")
    assert_error(requests.post(base + "/api/v1/auth/register", json={"username": "shortpw", "password": "123"}),
                 400, "INVALID_PASSWORD")
    assert_error(requests.post(base + "/api/v1/auth/login", json={"username": username, "password": "wrong-password"}),
                 401, "INVALID_CREDENTIALS")
    assert_error(requests.post(base + "/api/v1/auth/login",
                               json={"username": "nobody-" + username, "password": password}),
                 401, "INVALID_CREDENTIALS")

    tokens = login(base, username, password)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] > 0
    me = requests.get(base + "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200 and me.json()["username"] == username and me.json()["role"] == "user"

    # A refresh token is not an access token, and the other way round.
    assert_error(requests.get(base + "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}),
                 401, "INVALID_TOKEN")
    assert_error(requests.post(base + "/api/v1/auth/refresh", json={"refresh_token": tokens["access_token"]}),
                 401, "INVALID_TOKEN")
    fresh = requests.post(base + "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert fresh.status_code == 200, fresh.text
    # The token works on the other API process too: any replica accepts it.
    me2 = requests.get(auth_apis.bases[1] + "/api/v1/auth/me",
                       headers={"Authorization": f"Bearer {fresh.json()['access_token']}"})
    assert me2.status_code == 200 and me2.json()["username"] == username


def test_api_keys(auth_apis: Any) -> None:
    owner = user_client(auth_apis.base)
    other = user_client(auth_apis.base)
    r = owner.request("POST", "/api/v1/api-keys", json={"name": "ci"})
    assert r.status_code == 201, r.text
    created = r.json()
    key = created["key"]
    assert key.startswith(created["prefix"])

    listed = owner.request("GET", "/api/v1/api-keys").json()["items"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert all("key" not in k for k in listed)  # the secret is shown once
    assert other.request("GET", "/api/v1/api-keys").json()["items"] == []

    by_key = ApiClient(auth_apis.base, headers={"X-API-Key": key})
    session = by_key.create_session("print(6 * 7)")
    assert owner.request("GET", f"/api/v1/code-sessions/{session['session_id']}").status_code == 200
    assert other.request("GET", f"/api/v1/code-sessions/{session['session_id']}").status_code == 404

    assert_error(other.request("DELETE", f"/api/v1/api-keys/{created['id']}"), 404, "API_KEY_NOT_FOUND")
    assert by_key.request("GET", "/api/v1/auth/me").status_code == 200  # the other user's try did nothing
    assert owner.request("DELETE", f"/api/v1/api-keys/{created['id']}").status_code == 204
    # Refused at once by the process that revoked it; every API process caches a valid key for
    # at most 5 s, so within that the key is refused everywhere.
    def refused_everywhere() -> bool:
        return all(requests.get(base + "/api/v1/auth/me", headers={"X-API-Key": key, "Connection": "close"},
                                timeout=10).status_code == 401
                   for base in auth_apis.bases for _ in range(4))

    wait_for(refused_everywhere, 15, 0.5, what="every API process to refuse the revoked key")
    # by_key keeps one connection open, to whichever gunicorn process served it first; that
    # process may still hold the key in its 5 s cache when the probes above all hit the other one.
    wait_for(lambda: by_key.request("GET", "/api/v1/auth/me").status_code == 401, 15, 0.5,
             what="the kept-alive connection to refuse the revoked key")
    assert_error(by_key.request("GET", "/api/v1/auth/me"), 401, "INVALID_API_KEY")
    assert_error(ApiClient(auth_apis.base, headers={"X-API-Key": "lc_guess"}).request("GET", "/api/v1/auth/me"),
                 401, "INVALID_API_KEY")


def test_another_users_data_is_404_through_every_endpoint(auth_apis: Any) -> None:
    alice = user_client(auth_apis.base)
    mallory = user_client(auth_apis.bases[1])  # on the other API process: same answers
    session = alice.create_session("print('alice secret')")
    sid = session["session_id"]
    run = alice.execute(sid)
    assert run.status_code == 202, run.text
    eid = run.json()["execution_id"]
    done = alice.wait_execution(eid)
    assert done["stdout"] == "alice secret\n"

    attempts = {
        "read session": mallory.request("GET", f"/api/v1/code-sessions/{sid}"),
        "autosave": mallory.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "print('pwned')"}),
        "autosave with version": mallory.request("PATCH", f"/api/v1/code-sessions/{sid}",
                                                 json={"source_code": "print('pwned')", "version": 1}),
        "execute": mallory.execute(sid),
        "batch execute": mallory.request("POST", "/api/v1/executions/batch",
                                         json={"executions": [{"session_id": sid}]}),
        "list executions": mallory.request("GET", f"/api/v1/executions/session/{sid}"),
        "read execution": mallory.request("GET", f"/api/v1/executions/{eid}"),
        "delete session": mallory.request("DELETE", f"/api/v1/code-sessions/{sid}"),
    }
    paths = requests.get(auth_apis.base + "/swagger.json", timeout=10).json()["paths"]
    if "/api/v1/executions/{execution_id}/events" in paths:
        attempts["events"] = mallory.request("GET", f"/api/v1/executions/{eid}/events", stream=True, timeout=10)
        # Browsers cannot set headers on EventSource/WebSocket requests: the token may be a query
        # parameter there, and it is checked the same way.
        token = str(mallory.http.headers["Authorization"]).split()[1]
        attempts["events with ?access_token"] = requests.get(
            f"{auth_apis.base}/api/v1/executions/{eid}/events", params={"access_token": token}, stream=True,
            timeout=10)
        own_token = str(alice.http.headers["Authorization"]).split()[1]
        own = requests.get(f"{auth_apis.base}/api/v1/executions/{eid}/events", params={"access_token": own_token},
                           stream=True, timeout=10)
        assert own.status_code == 200, own.text[:200]
        own.close()
    for what, r in attempts.items():
        assert r.status_code == 404, f"{what}: {r.status_code} {r.text[:200]}"
        assert r.json()["error"]["code"] in {"SESSION_NOT_FOUND", "EXECUTION_NOT_FOUND"}, what
        # The answer is the same as for an id that never existed: nothing leaks.
        assert sid not in r.json()["error"].get("details", {}).values()

    # Nothing changed for the owner.
    mine = alice.request("GET", f"/api/v1/code-sessions/{sid}").json()
    assert mine["source_code"] == "print('alice secret')" and mine["version"] == 1
    listed = alice.request("GET", f"/api/v1/executions/session/{sid}").json()
    assert [e["execution_id"] for e in listed["items"]] == [eid]
    assert alice.request("DELETE", f"/api/v1/code-sessions/{sid}").status_code == 204


def test_admin_reaches_operator_endpoints(auth_apis: Any) -> None:
    user = user_client(auth_apis.base)
    assert_error(user.request("GET", "/api/v1/admin/stats"), 403, "ADMIN_REQUIRED")
    assert_error(ApiClient(auth_apis.base).request("GET", "/api/v1/admin/stats"), 401)

    name = f"admin{uuid.uuid4().hex[:8]}"
    env = {**auth_apis.env, "LIVECODE_PASSWORD": "admin-password-1"}
    out = run_livecode("user", "create", name, "--admin", env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    tokens = login(auth_apis.base, name, "admin-password-1")
    admin = ApiClient(auth_apis.base, headers={"Authorization": f"Bearer {tokens['access_token']}"})
    r = admin.request("GET", "/api/v1/admin/stats", params={"window_s": 600})
    assert r.status_code == 200, r.text
    stats = r.json()
    assert stats["window_s"] == 600
    assert stats["workers"]["count"] >= 1
    assert set(stats["queues"]) == {"high_priority", "low_priority"}
    assert isinstance(stats["executions"]["by_status"], dict)
    assert_error(admin.request("GET", "/api/v1/admin/stats", params={"window_s": 1}), 400)


def test_swagger_lets_a_user_authorize(auth_apis: Any) -> None:
    doc = requests.get(auth_apis.base + "/swagger.json", timeout=10).json()
    assert {"Bearer", "ApiKey"} <= set(doc["securityDefinitions"])
    assert doc["securityDefinitions"]["ApiKey"]["name"] == "X-API-Key"
    for path in ("/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/api-keys",
                 "/api/v1/admin/stats", "/api/v1/executions/batch"):
        assert path in doc["paths"], path
    assert doc["paths"]["/api/v1/auth/login"]["post"].get("security") == []
    assert "swagger" in requests.get(auth_apis.base + "/docs", timeout=10).text.lower()
