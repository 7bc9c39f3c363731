"""Rate limits (design 4.3): executions per user per minute, exact under concurrency and across two
API processes; sign-in attempts per client address. The `auth_apis` processes run with
LIVECODE_EXECUTION_RATE_LIMIT=10/minute and LIVECODE_LOGIN_RATE_LIMIT=50/minute."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.support.accounts import register, user_client
from tests.support.client import ApiClient

pytestmark = pytest.mark.integration

LIMIT = 10


def fire(requests_: list[Any], workers: int = 30) -> list[requests.Response]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda call: call(), requests_))


def check_refusal(r: requests.Response, remaining: int = 0) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "RATE_LIMITED"
    assert "rate limit" in r.json()["error"]["message"]
    assert int(r.headers["Retry-After"]) >= 1
    assert r.headers["X-RateLimit-Limit"] == str(LIMIT)
    assert r.headers["X-RateLimit-Remaining"] == str(remaining)


def executions_of(client: ApiClient, sid: str) -> int:
    r = client.request("GET", f"/api/v1/executions/session/{sid}", params={"per_page": 100})
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def test_thirty_parallel_requests_admit_exactly_ten(auth_apis: Any) -> None:
    client = user_client(auth_apis.base)
    sid = client.create_session("pass")["session_id"]
    # Batch priority: many may be queued for one session, so only the limit refuses.
    results = fire([lambda: client.execute(sid, priority="batch") for _ in range(30)])
    codes = sorted(r.status_code for r in results)
    assert codes.count(202) == LIMIT, codes
    assert codes.count(429) == 30 - LIMIT, codes
    for r in results:
        if r.status_code == 429:
            check_refusal(r)
    # A refused request created nothing.
    assert executions_of(client, sid) == LIMIT


def test_limit_holds_across_two_api_processes(auth_apis: Any) -> None:
    first = user_client(auth_apis.bases[0])
    token = first.http.headers["Authorization"]
    second = ApiClient(auth_apis.bases[1], headers={"Authorization": str(token)})
    sid = first.create_session("pass")["session_id"]
    calls = [(lambda c=c: c.execute(sid, priority="batch")) for c in [first, second] * 15]
    results = fire(calls)
    admitted = [r for r in results if r.status_code == 202]
    assert len(admitted) == LIMIT, sorted(r.status_code for r in results)
    assert {r.url.split("/api/")[0] for r in results} == set(auth_apis.bases)
    assert executions_of(first, sid) == LIMIT


def test_limit_is_per_user_and_counts_batch_items(auth_apis: Any) -> None:
    a = user_client(auth_apis.base)
    b = user_client(auth_apis.base)
    sid_a = a.create_session("pass")["session_id"]
    sid_b = b.create_session("pass")["session_id"]
    # A batch bigger than the whole budget is refused outright, and queues nothing.
    too_many = a.request("POST", "/api/v1/executions/batch",
                         json={"executions": [{"session_id": sid_a}] * (LIMIT + 1)})
    check_refusal(too_many, remaining=LIMIT)  # refused whole: it used none of the budget
    assert executions_of(a, sid_a) == 0
    ok = a.request("POST", "/api/v1/executions/batch", json={"executions": [{"session_id": sid_a}] * LIMIT})
    assert ok.status_code == 202, ok.text
    assert ok.json()["count"] == LIMIT
    check_refusal(a.execute(sid_a, priority="batch"))
    # Another user's budget is untouched.
    assert b.execute(sid_b).status_code == 202


class SourceAddressAdapter(HTTPAdapter):
    """Connect from another loopback address, so this test's sign-in budget is its own."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def test_sign_in_attempts_are_limited_per_client_address(auth_apis: Any) -> None:
    username, password = register(auth_apis.base)
    guesser = requests.Session()
    guesser.mount("http://", SourceAddressAdapter("127.0.0.77"))
    url = auth_apis.base + "/api/v1/auth/login"
    results = fire([lambda: guesser.post(url, json={"username": username, "password": "guess-guess"}, timeout=120)
                    for _ in range(60)], workers=20)  # argon2 makes each slow
    codes = sorted(r.status_code for r in results)
    assert codes.count(401) == 50 and codes.count(429) == 10, codes
    refused = next(r for r in results if r.status_code == 429)
    assert refused.json()["error"]["code"] == "RATE_LIMITED"
    assert "sign-in" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    # Even the right password is refused from that address now; other addresses are not affected.
    assert guesser.post(url, json={"username": username, "password": password}, timeout=30).status_code == 429
    assert requests.post(url, json={"username": username, "password": password}, timeout=30).status_code == 200
