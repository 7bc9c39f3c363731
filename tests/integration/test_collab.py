"""Live co-editing over real WebSockets (issue 15, part 2): two `livecode api` processes sharing
PostgreSQL and Redis, with clients speaking the Yjs sync protocol (pycrdt, as a browser's
y-websocket provider does), signed in as the rest of the API is (`?access_token=`)."""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.conftest import base_env, flush_redis
from tests.support.client import ApiClient
from tests.support.procs import Process, RedisServer, create_migrated_database, start_api
from tests.support.yjs import WsClient

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery staple"
MAX_SOURCE = 4096


@dataclass
class Pair:
    a: str  # base URL of API process A
    b: str  # and of B
    procs: list[Process]


@pytest.fixture(scope="module")
def pair(pg_admin_url: str, redis_base_url: str) -> Iterator[Pair]:
    flush_redis(redis_base_url)
    env = base_env(
        REDIS_URL=redis_base_url,
        LIVECODE_AUTH_REQUIRED="true",
        LIVECODE_COLLAB_PERSIST_MS="100",
        LIVECODE_MAX_SOURCE_BYTES=str(MAX_SOURCE),
    )
    env["DATABASE_URL"] = create_migrated_database(pg_admin_url, env)
    (pa, a), (pb, b) = start_api(env), start_api(env)
    yield Pair(a, b, [pa, pb])
    for p in (pa, pb):
        p.stop(20)


def account(base: str) -> tuple[ApiClient, str]:
    name = f"u{secrets.token_hex(4)}"
    r = requests.post(f"{base}/api/v1/auth/register", json={"username": name, "password": PASSWORD}, timeout=30)
    assert r.status_code == 201, r.text
    token = requests.post(
        f"{base}/api/v1/auth/login", json={"username": name, "password": PASSWORD}, timeout=30
    ).json()["access_token"]
    return ApiClient(base, {"Authorization": f"Bearer {token}"}), token


def ws_url(base: str, sid: str, token: str) -> str:
    return base.replace("http://", "ws://") + f"/api/v1/code-sessions/{sid}/ws?access_token={token}"


def test_editors_on_two_processes_converge_byte_for_byte(pair: Pair) -> None:
    owner, token = account(pair.a)
    sid = owner.create_session("ab")["session_id"]
    clients = [WsClient(ws_url(base, sid, token)) for base in (pair.a, pair.b, pair.b)]
    try:
        assert {c.text() for c in clients} == {"ab"}
        # Concurrent inserts at one position, from both processes, before either has seen the other.
        updates = [clients[0].insert(1, "XX", send=False), clients[1].insert(1, "YY", send=False)]
        for client, update in zip(clients, updates, strict=False):
            client.post(bytes([0, 2]) + _framed(update))
        for client in clients:
            client.wait(lambda c=client: len(c.text()) == 6, what="both inserts")
        texts = {c.text() for c in clients}
        assert len(texts) == 1 and texts.pop() in ("aXXYYb", "aYYXXb")
        # Typing on both sides at once, many keystrokes.
        for _ in range(20):
            clients[0].insert(0, "a")
            clients[2].insert(len(clients[2].text().encode()), "z")
        for client in clients:
            client.wait(lambda c=client: c.text().count("a") == 21 and c.text().count("z") == 20, what="all keys")
        assert len({c.text() for c in clients}) == 1
        final = clients[1].text()
        # The source (REST, executions) is what the editors see. Each process's room writes
        # the document when it has changes it has not written: both may write the final text
        # (the one that learns of the other's write too late writes it again), so the version
        # is the later of what each says once written.
        version = max(clients[1].saved_version(), clients[0].saved_version())
        got = owner.request("GET", f"/api/v1/code-sessions/{sid}").json()
        assert (got["source_code"], got["version"]) == (final, version)
    finally:
        for c in clients:
            c.disconnect()


def test_offline_edits_converge_on_reconnect_and_rest_autosave_merges(pair: Pair) -> None:
    owner, token = account(pair.a)
    sid = owner.create_session("base\n")["session_id"]
    alice, bob = WsClient(ws_url(pair.a, sid, token)), WsClient(ws_url(pair.b, sid, token))
    try:
        alice.disconnect()
        alice.insert(0, "offline ", send=False)
        bob.insert(len(b"base\n"), "online\n")
        alice.url = ws_url(pair.b, sid, token)  # comes back through the other process
        alice.connect()
        for c in (alice, bob):
            c.wait_text("offline base\nonline\n")
        bob.saved_version()
        # A REST autosave from a client that is not co-editing is merged, not lost.
        r = owner.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "offline base\nonline\nrest\n"})
        assert r.status_code == 200, r.text
        for c in (alice, bob):
            c.wait_text("offline base\nonline\nrest\n")
        alice.insert(0, "# ")
        bob.wait_text("# offline base\nonline\nrest\n")
        alice.saved_version()
        assert owner.request("GET", f"/api/v1/code-sessions/{sid}").json()["source_code"] == (
            "# offline base\nonline\nrest\n"
        )
    finally:
        alice.disconnect()
        bob.disconnect()


def test_a_document_past_the_size_limit_is_refused_and_viewers_cannot_edit(pair: Pair) -> None:
    owner, token = account(pair.a)
    viewer, viewer_token = account(pair.a)
    stranger, stranger_token = account(pair.a)
    sid = owner.create_session("small")["session_id"]
    name = viewer.request("GET", "/api/v1/auth/me").json()["username"]
    r = owner.request("POST", f"/api/v1/code-sessions/{sid}/members", json={"username": name, "role": "viewer"})
    assert r.status_code == 201, r.text
    # A stranger is refused before the handshake, as everywhere: 404.
    r = requests.get(
        ws_url(pair.b, sid, stranger_token).replace("ws://", "http://"),
        timeout=30,
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "SESSION_NOT_FOUND"
    editor, watcher = WsClient(ws_url(pair.a, sid, token)), WsClient(ws_url(pair.b, sid, viewer_token))
    try:
        watcher.insert(0, "evil ")
        watcher.wait(lambda: any(n.get("code") == "READ_ONLY_MEMBER" for n in watcher.notices), what="refusal")
        editor.insert(0, "x" * (MAX_SOURCE + 1))
        editor.wait(lambda: editor.closed is not None, what="the socket closed")
        assert editor.closed is not None and editor.closed[0] == 4413
        assert any(n.get("code") == "SOURCE_TOO_LARGE" for n in editor.notices)
        again = WsClient(ws_url(pair.b, sid, token))
        try:
            assert again.text() == "small"
            again.insert(5, "!")
            # The viewer's own refused change stays in its copy only (a browser's editor is read-only).
            watcher.wait(lambda: watcher.text() == "evil small!", what="the editor's change")
            again.saved_version()
            assert again.text() == "small!"
        finally:
            again.disconnect()
        assert owner.request("GET", f"/api/v1/code-sessions/{sid}").json()["source_code"] == "small!"
    finally:
        editor.disconnect()
        watcher.disconnect()


def test_a_rest_save_while_no_process_hosts_the_document_is_kept(pair: Pair) -> None:
    """Every editor gone (the document persisted, its log kept in Redis): a PATCH on the other
    process is in the document the next editor opens, and stays in what is written."""
    owner, token = account(pair.a)
    sid = owner.create_session("one\n")["session_id"]
    alice = WsClient(ws_url(pair.a, sid, token))
    alice.insert(len(b"one\n"), "two\n")
    alice.saved_version()
    alice.disconnect()
    r = ApiClient(pair.b, {"Authorization": f"Bearer {token}"}).request(
        "PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "one\ntwo\nthree\n"}
    )
    assert r.status_code == 200, r.text
    bob = WsClient(ws_url(pair.a, sid, token))
    try:
        bob.wait_text("one\ntwo\nthree\n")
        bob.insert(0, "# ")
        version = bob.saved_version()
        got = owner.request("GET", f"/api/v1/code-sessions/{sid}").json()
        assert (got["source_code"], got["version"]) == ("# one\ntwo\nthree\n", version)
    finally:
        bob.disconnect()


def test_a_rest_save_on_one_process_keeps_what_editors_on_the_other_typed(pair: Pair) -> None:
    owner, token = account(pair.a)
    rest = ApiClient(pair.b, {"Authorization": f"Bearer {token}"})
    sid = owner.create_session("a\nb\n")["session_id"]
    alice = WsClient(ws_url(pair.a, sid, token))
    try:
        alice.insert(0, "# alice\n")
        # A REST client saves the version it read; alice's typing may be written before or after.
        for _ in range(3):
            current = rest.request("GET", f"/api/v1/code-sessions/{sid}").json()
            text = current["source_code"] + "rest\n"
            r = rest.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": text,
                                                                              "version": current["version"]})
            if r.status_code != 409:
                break
        assert r.status_code == 200, r.text
        alice.wait_text("# alice\na\nb\nrest\n")
        alice.saved_version()
        assert rest.request("GET", f"/api/v1/code-sessions/{sid}").json()["source_code"] == "# alice\na\nb\nrest\n"
    finally:
        alice.disconnect()


def _framed(update: bytes) -> bytes:
    from pycrdt import write_message

    return write_message(update)


def test_an_api_process_killed_mid_session_loses_no_relayed_edit(pair: Pair) -> None:
    """Last in the module: it kills process A (SIGKILL, no shutdown)."""
    owner, token = account(pair.b)
    sid = owner.create_session("start\n")["session_id"]
    alice, bob = WsClient(ws_url(pair.a, sid, token)), WsClient(ws_url(pair.b, sid, token))
    try:
        alice.insert(len(b"start\n"), "alice 1\n")
        bob.wait_text("start\nalice 1\n")
        pair.procs[0].signal(signal.SIGKILL)  # A dies before its debounced write, perhaps
        alice.wait(lambda: alice.closed is not None, what="alice's socket to drop")
        alice.disconnect()
        alice.insert(0, "# offline\n", send=False)
        bob.insert(len(bob.text().encode()), "bob 1\n")
        alice.url = ws_url(pair.b, sid, token)  # the load balancer sends her to B
        alice.connect()
        for c in (alice, bob):
            c.wait_text("# offline\nstart\nalice 1\nbob 1\n")
        bob.saved_version()
        got = owner.request("GET", f"/api/v1/code-sessions/{sid}").json()
        assert got["source_code"] == "# offline\nstart\nalice 1\nbob 1\n"
    finally:
        alice.disconnect()
        bob.disconnect()


def test_a_rest_save_while_redis_is_away_is_merged_and_never_overwritten(pg_admin_url: str) -> None:
    """Redis (the document's log) stops while alice co-edits on A; a PATCH on B is answered 200:
    it is in PostgreSQL, merged into the document's state there, and reaches alice's document
    when A checks the row, even though the restarted Redis has forgotten the document; what A
    writes next keeps it. A Redis server of this test's own: it is stopped."""
    redis_server = RedisServer().start()
    env = base_env(REDIS_URL=redis_server.url, LIVECODE_AUTH_REQUIRED="true", LIVECODE_COLLAB_PERSIST_MS="100")
    env["DATABASE_URL"] = create_migrated_database(pg_admin_url, env)
    (pa, a), (pb, b) = start_api(env), start_api(env)
    alice = None
    try:
        owner, token = account(a)
        rest = ApiClient(b, {"Authorization": f"Bearer {token}"})
        sid = owner.create_session("a\nb\n")["session_id"]
        alice = WsClient(ws_url(a, sid, token))
        alice.insert(0, "0\n")
        alice.saved_version()
        redis_server.stop()
        r = rest.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "0\na\nb\nc\n"})
        # Acknowledged (the save and its merge are in PostgreSQL), or refused naming Redis.
        assert r.status_code in (200, 503), r.text
        if r.status_code == 503:
            assert "redis" in r.text.lower()
            return
        saved = r.json()["version"]
        assert "co_edited" not in r.json()
        redis_server.start()  # empty: no persistence
        alice.wait_text("0\na\nb\nc\n", timeout=40)  # A's periodic check of the row
        alice.insert(0, "#")
        assert alice.saved_version() > saved
        assert rest.request("GET", f"/api/v1/code-sessions/{sid}").json()["source_code"] == "#0\na\nb\nc\n"
        # A newcomer on B (whose log is new) opens the same document: no text twice.
        bob = WsClient(ws_url(b, sid, token))
        try:
            bob.wait_text("#0\na\nb\nc\n")
        finally:
            bob.disconnect()
    finally:
        if alice is not None:
            alice.disconnect()
        for p in (pa, pb):
            p.stop(20)
        redis_server.destroy()
