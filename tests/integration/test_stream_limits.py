"""Stream slots (issue 10, items 1, 2 and 12): every way a follower's request can end gives its
slot back (the count is read back at zero), one user or address cannot take every slot, a
client that stops reading is dropped, ordinary requests answer while the streams are full, and
an anonymous OPTIONS on /ws says nothing about whether an execution exists.

The first tests run the app in-process (create_app + test_client, SQLite, the in-memory event
bus); the last ones run real `livecode api` processes against the shared cluster."""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket
from flask import Flask, request
from flask.testing import FlaskClient

from livecode.api.stream_slots import StreamSlots
from livecode.app import create_app
from livecode.config import load_settings
from tests.conftest import Cluster
from tests.support.client import ApiClient
from tests.support.procs import Process, free_port, livecode, wait_api, wait_for

WS_HEADERS = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": "http://evil.example"}


# ---- in-process ----------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    monkeypatch.setenv("LIVECODE_API_THREADS", "8")  # as under `livecode api --threads 8`: 4 slots
    settings = load_settings("embedded", data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/lc.db",
                             streams_per_address=3)
    application = create_app(settings, enqueue=lambda *a, **k: None, run_migrations=True)
    application.config["TESTING"] = True

    @application.after_request
    def _fail_on_request(resp: Any) -> Any:  # an error after the view: see the first test
        if request.headers.get("X-Fail-After"):
            raise RuntimeError("after_request failed")
        return resp

    yield application
    application.extensions["livecode.runtime"].db.dispose()


def slot_count(app: Flask) -> int:
    slots: StreamSlots = app.extensions["livecode.stream_slots"]
    return slots.active


def gauge(client: FlaskClient) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    match = re.search(r"^livecode_stream_slots_in_use(?:\{[^}]*\})? (\S+)$", text, re.M)
    assert match, "the stream slot gauge is missing from /metrics"
    return float(match.group(1))


def queued_execution(client: FlaskClient) -> str:
    r = client.post("/api/v1/code-sessions", json={"language": "python", "source_code": "print(1)"})
    assert r.status_code == 201, r.get_data(as_text=True)
    r = client.post(f"/api/v1/executions/session/{r.get_json()['session_id']}/execute", json={})
    assert r.status_code == 202, r.get_data(as_text=True)
    return str(r.get_json()["execution_id"])


def test_every_way_a_stream_ends_gives_its_slot_back(app: Flask) -> None:
    client = app.test_client()
    eid = queued_execution(client)
    path = f"/api/v1/executions/{eid}/events"
    start_gauge = gauge(client)

    # HEAD: the attack of the issue. Far more than the 4 slots, then a real follower still fits.
    for _ in range(40):
        r = client.head(path)
        assert r.status_code == 200 and r.mimetype == "text/event-stream"
        r.close()
    assert slot_count(app) == 0

    # Refused before a slot is taken: unknown execution, bad resume point.
    assert client.get(f"/api/v1/executions/{uuid.uuid4()}/events").status_code == 404
    assert client.get(path, headers={"Last-Event-ID": "garbage"}).status_code == 400
    assert slot_count(app) == 0

    # A client that goes away mid-stream: the server closes the response.
    r = client.get(path, buffered=False)
    assert r.status_code == 200
    assert next(r.response) == b"retry: 2000\n\n"
    assert slot_count(app) == 1 and gauge(client) == start_gauge + 1
    r.close()
    assert slot_count(app) == 0

    # A stream that runs to its end.
    bus = app.extensions["livecode.runtime"].events
    bus.publish(eid, "end", {"status": "COMPLETED"})
    r = client.get(path)
    assert r.status_code == 200 and b"event: end" in r.data
    r.close()
    assert slot_count(app) == 0

    # An exception while following (the bus breaks in a way the follower does not expect).
    class Broken:
        def read(self, *_: Any) -> Any:
            raise RuntimeError("broken bus")

    tails = app.extensions["livecode.tails"]
    app.extensions["livecode.tails"] = Broken()
    try:
        r = client.get(path, buffered=False)
        assert r.status_code == 200
        with pytest.raises(RuntimeError):
            list(r.response)
        r.close()
    finally:
        app.extensions["livecode.tails"] = tails
    assert slot_count(app) == 0

    # An error after the view took the slot: a later hook fails and an error answer replaces
    # the stream, which is never sent.
    r = client.get(path, headers={"X-Fail-After": "1"})
    assert r.status_code == 500 and r.get_json()["error"]["code"]
    r.close()
    assert slot_count(app) == 0
    assert gauge(client) == start_gauge

    # And the slots are all there: four followers fit, the fifth is refused.
    held = []
    for i in range(4):
        # Two addresses, as the per-address cap (3) allows.
        r = client.get(path, buffered=False, environ_base={"REMOTE_ADDR": f"10.0.0.{i % 2}"})
        assert r.status_code == 200, r.get_data(as_text=True)
        held.append(r)
    busy = client.get(path, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert busy.status_code == 503 and busy.get_json()["error"]["code"] == "STREAMS_BUSY"
    for r in held:
        r.close()
    assert slot_count(app) == 0


def test_one_address_cannot_take_every_slot(app: Flask) -> None:
    client = app.test_client()
    eid = queued_execution(client)
    path = f"/api/v1/executions/{eid}/events"
    mine = [client.get(path, buffered=False, environ_base={"REMOTE_ADDR": "10.0.0.1"}) for _ in range(3)]
    assert all(r.status_code == 200 for r in mine)
    over = client.get(path, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert over.status_code == 429
    assert over.get_json()["error"]["code"] == "TOO_MANY_STREAMS" and over.headers["Retry-After"]
    # Another address still gets the slot that is left.
    other = client.get(path, buffered=False, environ_base={"REMOTE_ADDR": "10.0.0.2"})
    assert other.status_code == 200
    for r in [*mine, other]:
        r.close()
    assert slot_count(app) == 0


def test_per_user_cap_counts_the_account_not_the_address() -> None:
    slots = StreamSlots(limit=10, per_user=2, per_address=1)
    user = uuid.uuid4()
    leases = [slots.acquire(user, "10.0.0.1"), slots.acquire(user, "10.0.0.2")]
    with pytest.raises(Exception) as info:
        slots.acquire(user, "10.0.0.3")
    assert getattr(info.value, "code", None) == "TOO_MANY_STREAMS"
    other = slots.acquire(uuid.uuid4(), "10.0.0.1")  # another user from the same address
    for lease in [*leases, other, other]:  # releasing twice gives back one slot only
        lease.release()
    assert slots.active == 0 and slots.by_key == {}


def test_anonymous_websocket_options_does_not_reveal_executions(app: Flask) -> None:
    client = app.test_client()
    eid = queued_execution(client)
    for route in ("ws", "events"):
        answers = []
        for target in (eid, str(uuid.uuid4()), "not-a-uuid"):
            r = client.options(f"/api/v1/executions/{target}/{route}", headers=WS_HEADERS)
            answers.append((r.status_code, r.headers.get("Allow"), r.get_data()))
            r.close()
        assert answers[0] == answers[1] == answers[2], (route, answers)
        # /ws: 200 with Allow; /events: a WebSocket request on a plain route is a 400 either way.
        assert answers[0][0] == (200 if route == "ws" else 400), (route, answers)
    assert slot_count(app) == 0


# ---- real processes ----------------------------------------------------------------------


def start_small_api(cluster: Cluster, threads: int, **env: str) -> tuple[Process, ApiClient]:
    port = free_port()
    proc = Process(livecode("api", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                            "--threads", str(threads)), {**cluster.env, **env}, "api-streams")
    api = ApiClient(f"http://127.0.0.1:{port}")
    try:
        wait_api(proc, api.base)
    except Exception:
        proc.stop()
        raise
    return proc, api


def slots_in_use(api: ApiClient) -> float:
    text = requests.get(api.base + "/metrics", timeout=10).text
    match = re.search(r"^livecode_stream_slots_in_use(?:\{[^}]*\})? (\S+)$", text, re.M)
    assert match, "the stream slot gauge is missing from /metrics"
    return float(match.group(1))


def submit(api: ApiClient, source: str, **body: Any) -> str:
    sid = api.create_session(source)["session_id"]
    r = api.execute(sid, **body)
    assert r.status_code == 202, r.text
    return str(r.json()["execution_id"])


def ws_url(api: ApiClient, eid: str) -> str:
    return api.base.replace("http://", "ws://") + f"/api/v1/executions/{eid}/ws"


# 900 KB of control characters, which JSON sends as \u0001, twice (output events, then the
# result): far more than the socket buffers hold.
BIG_OUTPUT = "import sys\nfor i in range(9000):\n    sys.stdout.write(chr(1) * 99 + '\\n')\n"
TICKER = "import time\nfor i in range(20):\n    print(i, flush=True)\n    time.sleep(0.5)\n"


def test_head_flood_and_every_ending_leave_no_slot_held(cluster: Cluster) -> None:
    proc, api = start_small_api(cluster, 8)  # 4 stream slots
    try:
        done = submit(api, "print('done')")
        api.wait_execution(done)
        events = f"{api.base}/api/v1/executions/{done}/events"
        for _ in range(60):  # the attack: quick HEADs on a finished run
            assert requests.head(events, timeout=10).status_code == 200
        with requests.get(events, stream=True, timeout=30) as r:
            assert r.status_code == 200 and b"event: end" in r.content
        ws = websocket.create_connection(ws_url(api, done), timeout=30)
        while '"event":"end"' not in ws.recv():
            pass
        ws.close()

        # Refused requests, anonymous OPTIONS, a client that goes away mid-run (SSE and WS).
        assert requests.get(f"{api.base}/api/v1/executions/{uuid.uuid4()}/events", timeout=10).status_code == 404
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(ws_url(api, str(uuid.uuid4())), timeout=10)
        assert requests.options(ws_url(api, done).replace("ws://", "http://"), headers=WS_HEADERS,
                                timeout=10).status_code == 200
        # A handshake that fails after the slot was taken (no Sec-WebSocket-Key).
        bad = requests.get(ws_url(api, done).replace("ws://", "http://"),
                           headers={"Upgrade": "websocket", "Connection": "Upgrade"}, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "BAD_WEBSOCKET_HANDSHAKE"
        running = submit(api, TICKER)
        with requests.get(f"{api.base}/api/v1/executions/{running}/events", stream=True, timeout=30) as r:
            assert r.status_code == 200
            next(r.iter_lines())
        ws = websocket.create_connection(ws_url(api, running), timeout=30)
        ws.recv()
        ws.sock.close()  # gone without a goodbye
        # Both are noticed at their next write (the run prints twice a second).
        wait_for(lambda: slots_in_use(api) == 0, 30, 0.2, what="every stream slot given back")
        assert [requests.get(events, timeout=30).status_code for _ in range(6)] == [200] * 6
    finally:
        proc.stop()


def stalled_follower(port: int, eid: str, source: str, held: list[socket.socket], token: str = "") -> int:
    """An SSE request from `source` by a client that never reads past the status line (the
    socket is kept in `held`); returns the status."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # so that the server's writes stall soon
    held.append(s)
    s.bind((source, 0))
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    s.sendall(f"GET /api/v1/executions/{eid}/events HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    status = s.recv(15)
    assert status.startswith(b"HTTP/1.1 "), status
    return int(status[9:12])


def test_stalled_readers_are_capped_and_dropped_and_requests_still_answer(cluster: Cluster) -> None:
    proc, api = start_small_api(cluster, 8, LIVECODE_STREAMS_PER_ADDRESS="2", LIVECODE_SEND_TIMEOUT_S="3")
    port = int(api.base.rsplit(":", 1)[1])
    held: list[socket.socket] = []
    try:
        # One finished run with a lot of output.
        eid = submit(api, BIG_OUTPUT)
        assert api.wait_execution(eid)["status"] == "COMPLETED"

        assert [stalled_follower(port, eid, "127.0.0.1", held) for _ in range(2)] == [200, 200]
        assert stalled_follower(port, eid, "127.0.0.1", held) == 429  # the address's cap
        assert [stalled_follower(port, eid, "127.0.0.3", held) for _ in range(2)] == [200, 200]
        assert slots_in_use(api) == 4

        # Every slot is held; ordinary requests still answer at once, a fifth follower is told so.
        busy = requests.get(f"{api.base}/api/v1/executions/{eid}/events", timeout=10)
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "STREAMS_BUSY"
        started = time.monotonic()
        assert requests.get(api.base + "/health", timeout=10).status_code == 200
        assert requests.get(f"{api.base}/api/v1/executions/{eid}", timeout=10).json()["status"] == "COMPLETED"
        assert time.monotonic() - started < 10

        # The stalled writers are dropped after the send timeout, though the clients stay connected.
        wait_for(lambda: slots_in_use(api) == 0, 60, 0.5, what="the stalled followers to be dropped")
        with requests.get(f"{api.base}/api/v1/executions/{eid}/events", stream=True, timeout=60) as r:
            assert r.status_code == 200 and r.content.rstrip().endswith(b'"status":"COMPLETED"}')
    finally:
        for s in held:
            s.close()
        proc.stop()


def test_one_user_cannot_take_every_slot(auth_apis: Any) -> None:
    from tests.support.accounts import user_client

    base = auth_apis.bases[1]  # one gunicorn process: the caps are per process
    port = int(base.rsplit(":", 1)[1])
    greedy, other = user_client(base), user_client(base)
    token = greedy.http.headers["Authorization"].split(" ", 1)[1]
    eid = submit(greedy, BIG_OUTPUT)
    assert greedy.wait_execution(eid)["status"] == "COMPLETED"
    held: list[socket.socket] = []
    try:
        # The default cap: 8 per user, whatever address each connection comes from.
        statuses = [stalled_follower(port, eid, f"127.0.0.{2 + i}", held, token) for i in range(8)]
        assert statuses == [200] * 8
        over = requests.get(f"{base}/api/v1/executions/{eid}/events", headers=greedy.http.headers, timeout=10)
        assert over.status_code == 429 and over.json()["error"]["code"] == "TOO_MANY_STREAMS"
        # Another user still follows their own run.
        mine = submit(other, "print('mine')")
        other.wait_execution(mine)
        with other.http.get(f"{base}/api/v1/executions/{mine}/events", stream=True, timeout=30) as r:
            assert r.status_code == 200 and b"event: end" in r.content
    finally:
        for s in held:
            s.close()


def test_anonymous_websocket_options_is_the_same_for_any_execution(auth_apis: Any) -> None:
    from tests.support.accounts import user_client

    owner = user_client(auth_apis.base)
    eid = submit(owner, "print(1)")
    answers = []
    for target in (eid, str(uuid.uuid4())):
        r = requests.options(f"{auth_apis.base}/api/v1/executions/{target}/ws", headers=WS_HEADERS, timeout=10)
        answers.append((r.status_code, r.headers.get("Allow"), r.content))
    assert answers[0] == answers[1], answers
