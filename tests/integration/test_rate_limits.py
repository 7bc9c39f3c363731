"""Rate limits (design 4.3): executions per user per minute, exact under concurrency and across two
API processes; sign-in attempts per client address. The `auth_apis` processes run with
LIVECODE_EXECUTION_RATE_LIMIT=10/minute and LIVECODE_LOGIN_RATE_LIMIT=50/minute."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import requests
from requests.adapters import HTTPAdapter

from tests.support.accounts import register, user_client
from tests.support.client import ApiClient
from tests.support.procs import start_api

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


# ---- issue 10: the batch is charged by what it queues ------------------------------------------

BATCH = "/api/v1/executions/batch"


def batch_body(sid: str, n: int) -> bytes:
    return json.dumps({"executions": [{"session_id": sid}] * n}).encode()


@pytest.mark.parametrize("content_type", ["text/x+json", "application/vnd.livecode+json",
                                          "application/json; charset=utf-8", "chunked"])
def test_batch_cost_counts_whatever_body_the_api_accepts(auth_apis: Any, content_type: str) -> None:
    """A batch sent as text/x+json (which the body parser accepts and Flask's get_json does not)
    was charged as one run while every item was queued: 55 runs in seconds against 10/minute."""
    client = user_client(auth_apis.base)
    sid = client.create_session("pass")["session_id"]

    def send(n: int) -> requests.Response:
        if content_type == "chunked":  # no Content-Length: a generator makes requests stream it
            return client.request("POST", BATCH, data=iter([batch_body(sid, n)]),
                                  headers={"Content-Type": "application/json"})
        return client.request("POST", BATCH, data=batch_body(sid, n), headers={"Content-Type": content_type})

    check_refusal(send(LIMIT + 1), remaining=LIMIT)
    assert executions_of(client, sid) == 0
    ok = send(LIMIT - 1)
    assert ok.status_code == 202, ok.text
    assert ok.json()["count"] == LIMIT - 1
    check_refusal(send(2), remaining=1)  # one left: a batch of two does not fit, and takes nothing
    assert client.execute(sid, priority="batch").status_code == 202  # ... so the last one is still there
    check_refusal(send(1))
    check_refusal(client.execute(sid, priority="batch"))
    assert executions_of(client, sid) == LIMIT


def test_concurrent_batches_never_exceed_the_limit(auth_apis: Any) -> None:
    """Five batches of 11 at once (the 55-run attack) all refused; then eight batches of 3 at once:
    exactly three fit in 10, atomically, and exactly 9 runs are queued."""
    client = user_client(auth_apis.base)
    sid = client.create_session("pass")["session_id"]
    headers = {"Content-Type": "text/x+json"}
    big = fire([lambda: client.request("POST", BATCH, data=batch_body(sid, 11), headers=headers) for _ in range(5)])
    assert sorted(r.status_code for r in big) == [429] * 5, [r.text[:200] for r in big]
    small = fire([lambda: client.request("POST", BATCH, data=batch_body(sid, 3), headers=headers) for _ in range(8)])
    codes = sorted(r.status_code for r in small)
    assert codes == [202] * 3 + [429] * 5, codes
    assert executions_of(client, sid) == 9


# ---- issue 10: the sign-in limit behind a reverse proxy -----------------------------------------


def _api_with(cluster_env: dict[str, str], **env: str) -> tuple[Any, str]:
    return start_api({**cluster_env, "LIVECODE_AUTH_REQUIRED": "true", **env})


SIGN_IN_LIMIT = 4  # an amount no other test uses, so these buckets are this module's own


def from_address(source: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", SourceAddressAdapter(source))
    return session


def _register(base: str, source: str) -> tuple[str, str]:
    """Register from an address of its own, so registering uses no attempt of the buckets under test."""
    username, password = f"u{uuid.uuid4().hex[:12]}", "correct-horse-42"
    r = from_address(source).post(base + "/api/v1/auth/register", json={"username": username, "password": password},
                                  timeout=60)
    assert r.status_code == 201, r.text
    return username, password


def _wrong_password(base: str, username: str, headers: dict[str, str], session: requests.Session | None = None
                    ) -> int:
    r = (session or requests).post(base + "/api/v1/auth/login", json={"username": username, "password": "x" * 12},
                                   headers=headers, timeout=60)
    assert r.status_code in (401, 429), r.text
    if r.status_code == 429:
        assert r.json()["error"]["code"] == "RATE_LIMITED"
    return r.status_code


def test_behind_a_trusted_proxy_each_client_has_its_own_sign_in_bucket(cluster: Any) -> None:
    proc, base = _api_with(cluster.env, LIVECODE_TRUSTED_PROXY_HOPS="1",
                           LIVECODE_LOGIN_RATE_LIMIT=f"{SIGN_IN_LIMIT}/minute")
    try:
        username, password = _register(base, "127.0.0.79")
        # The proxy appends the address it saw; whatever the client put before it is not trusted.
        guesser = {"X-Forwarded-For": "198.51.100.7"}
        codes = [_wrong_password(base, username, guesser) for _ in range(SIGN_IN_LIMIT + 2)]
        assert codes == [401] * SIGN_IN_LIMIT + [429, 429], codes
        # The same client cannot get a fresh bucket by sending its own X-Forwarded-For first.
        spoofed = {"X-Forwarded-For": "203.0.113.99, 198.51.100.7"}
        assert _wrong_password(base, username, spoofed) == 429
        # Other clients behind the same proxy are not locked out, and the right password works.
        for n in range(1, 4):
            other = {"X-Forwarded-For": f"192.0.2.{n}"}
            assert _wrong_password(base, username, other) == 401
            r = requests.post(base + "/api/v1/auth/login", json={"username": username, "password": password},
                              headers=other, timeout=60)
            assert r.status_code == 200, r.text
    finally:
        proc.stop()


def test_without_trusted_proxies_a_forwarded_header_is_ignored(cluster: Any) -> None:
    proc, base = _api_with(cluster.env, LIVECODE_LOGIN_RATE_LIMIT=f"{SIGN_IN_LIMIT}/minute")  # hops: default 0
    try:
        username, _ = _register(base, "127.0.0.79")
        guesser = from_address("127.0.0.78")
        codes = [_wrong_password(base, username, {"X-Forwarded-For": f"192.0.2.{n}"}, guesser)
                 for n in range(SIGN_IN_LIMIT + 2)]
        # Every made-up address is the same client: the peer address counts, nothing else.
        assert codes == [401] * SIGN_IN_LIMIT + [429, 429], codes
        assert _wrong_password(base, username, {"X-Forwarded-For": "192.0.2.200"}, guesser) == 429
        assert _wrong_password(base, username, {"X-Real-IP": "192.0.2.201", "Forwarded": "for=192.0.2.202"},
                               guesser) == 429
    finally:
        proc.stop()


def _client_from(base: str, source: str) -> ApiClient:
    """A new account whose requests all come from the loopback address `source`."""
    username, password = _register(base, source)
    session = from_address(source)
    r = session.post(base + "/api/v1/auth/login", json={"username": username, "password": password}, timeout=60)
    assert r.status_code == 200, r.text
    client = ApiClient(base, headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    client.http.mount("http://", SourceAddressAdapter(source))
    return client


def test_fresh_accounts_do_not_multiply_one_address_budget(cluster: Any) -> None:
    per_user, per_address = 4, 6
    proc, base = _api_with(cluster.env, LIVECODE_EXECUTION_RATE_LIMIT=f"{per_user}/minute",
                           LIVECODE_EXECUTION_RATE_LIMIT_PER_ADDRESS=f"{per_address}/minute")
    try:
        first, second, third = (_client_from(base, "127.0.0.61") for _ in range(3))
        elsewhere = _client_from(base, "127.0.0.62")
        sids = [c.create_session("pass")["session_id"] for c in (first, second, third, elsewhere)]
        # The first account uses its whole per-user budget...
        codes = [first.execute(sids[0], priority="batch").status_code for _ in range(per_user + 1)]
        assert codes == [202] * per_user + [429], codes
        # ...a second account from the same address gets only what is left of the address's...
        codes = [second.execute(sids[1], priority="batch").status_code for _ in range(per_user)]
        assert codes == [202] * (per_address - per_user) + [429] * (2 * per_user - per_address), codes
        refused = second.execute(sids[1], priority="batch")
        assert refused.status_code == 429 and "per client address" in refused.json()["error"]["message"]
        # ...and a third account, or a batch, gets nothing more: nothing is queued for them.
        assert third.execute(sids[2], priority="batch").status_code == 429
        batch = third.request("POST", "/api/v1/executions/batch", json={"executions": [{"session_id": sids[2]}]})
        assert batch.status_code == 429 and batch.json()["error"]["code"] == "RATE_LIMITED", batch.text
        assert executions_of(third, sids[2]) == 0
        assert executions_of(second, sids[1]) == per_address - per_user
        # Another address has its own budget.
        assert elsewhere.execute(sids[3], priority="batch").status_code == 202
    finally:
        proc.stop()


def test_concurrent_accounts_never_exceed_one_address_budget(cluster: Any) -> None:
    """Both budgets are charged together, atomically: requests of several accounts from one
    address at once cannot all pass the address's check before any of them is charged to it."""
    per_user, per_address, accounts = 4, 5, 6
    proc, base = _api_with(cluster.env, LIVECODE_EXECUTION_RATE_LIMIT=f"{per_user}/minute",
                           LIVECODE_EXECUTION_RATE_LIMIT_PER_ADDRESS=f"{per_address}/minute")
    try:
        for address in ("127.0.0.64", "127.0.0.65"):  # two rounds, each with a budget of its own
            clients = [_client_from(base, address) for _ in range(accounts)]
            sids = [c.create_session("pass")["session_id"] for c in clients]
            calls = [lambda c=c, sid=sid: c.execute(sid, priority="batch")
                     for c, sid in zip(clients, sids, strict=True) for _ in range(per_user)]
            codes = sorted(r.status_code for r in fire(calls, workers=len(calls)))
            assert codes == [202] * per_address + [429] * (len(calls) - per_address), codes
            assert sum(executions_of(c, sid) for c, sid in zip(clients, sids, strict=True)) == per_address
    finally:
        proc.stop()


def test_a_spent_budget_answers_429_whatever_else_is_wrong_and_survives_a_script_flush(cluster: Any) -> None:
    """The submission's charge is sent before the handler and its answer read after the session
    read (the two round trips overlap): a refusal still comes first, whatever the handler found,
    and creates nothing. Redis forgetting its scripts (a restart) does not break a charge."""
    per_user = 3
    proc, base = _api_with(cluster.env, LIVECODE_EXECUTION_RATE_LIMIT=f"{per_user}/minute",
                           LIVECODE_EXECUTION_RATE_LIMIT_PER_ADDRESS="")
    try:
        client = _client_from(base, "127.0.0.66")
        sid = client.create_session("pass")["session_id"]
        redis.Redis.from_url(cluster.env["REDIS_URL"]).script_flush()  # as after a Redis restart
        codes = [client.execute(sid, priority="batch").status_code for _ in range(per_user)]
        assert codes == [202] * per_user, codes
        assert executions_of(client, sid) == per_user
        for refused in (
            client.execute(sid, priority="batch"),
            client.execute(str(uuid.uuid4()), priority="batch"),  # no such session
            client.execute(sid, priority="nonsense"),  # a bad body
            client.request("POST", f"/api/v1/executions/session/{sid}/execute", data=b"{not json",
                           headers={"Content-Type": "application/json"}),
        ):
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "RATE_LIMITED"
        assert executions_of(client, sid) == per_user
    finally:
        proc.stop()


class ClaimCounter:
    """Counts every row ever inserted into idempotency_keys (a trigger writes to a table of its
    own), even one deleted at once."""

    def __init__(self, database_url: str) -> None:
        import psycopg

        self.url = database_url.replace("postgresql+psycopg://", "postgresql://")
        self.name = f"claims_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {self.name} (n int)")
            conn.execute(f"CREATE FUNCTION {self.name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                         f"INSERT INTO {self.name} VALUES (1); RETURN NEW; END $$")
            conn.execute(f"CREATE TRIGGER {self.name} AFTER INSERT ON idempotency_keys FOR EACH ROW "
                         f"EXECUTE FUNCTION {self.name}()")

    def count(self) -> int:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(f"SELECT count(*) FROM {self.name}").fetchone()
        return int(row[0]) if row else 0

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP TRIGGER {self.name} ON idempotency_keys")
            conn.execute(f"DROP FUNCTION {self.name}()")
            conn.execute(f"DROP TABLE {self.name}")


def test_a_refused_submission_with_a_key_writes_nothing_and_a_replay_waits_for_nothing(cluster: Any) -> None:
    """Over its budget, a request with an Idempotency-Key is refused before the key's claim is
    written, and a replay asking to wait (wait=true) is refused at once, not after its wait."""
    import time

    per_user = 2
    proc, base = _api_with(cluster.env, LIVECODE_EXECUTION_RATE_LIMIT=f"{per_user}/minute",
                           LIVECODE_EXECUTION_RATE_LIMIT_PER_ADDRESS="")
    claims = ClaimCounter(cluster.env["DATABASE_URL"])
    try:
        client = _client_from(base, "127.0.0.67")
        sid = client.create_session("pass")["session_id"]
        path = f"/api/v1/executions/session/{sid}/execute"
        body = {"priority": "batch"}  # several runs of one session may be queued at once
        for key in ("first", "second"):
            r = client.request("POST", path, json=body, headers={"Idempotency-Key": key})
            assert r.status_code == 202, r.text
        assert claims.count() == 2
        refused = client.request("POST", path, json=body, headers={"Idempotency-Key": "third"})
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "RATE_LIMITED", refused.text
        assert claims.count() == 2  # no claim written, even for a moment
        t0 = time.monotonic()
        replay = client.request("POST", path + "?wait=true&timeout_ms=20000", json=body,
                                headers={"Idempotency-Key": "first"})
        assert replay.status_code == 429 and replay.json()["error"]["code"] == "RATE_LIMITED", replay.text
        assert time.monotonic() - t0 < 10  # refused, not after its 20 s wait
    finally:
        claims.drop()
        proc.stop()
