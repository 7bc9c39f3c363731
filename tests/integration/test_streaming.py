"""Live output over Server-Sent Events and the WebSocket, against the distributed system (API and
worker in separate processes, events through Redis) and the embedded one (in-process bus)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket

from tests.conftest import Cluster
from tests.support.client import TERMINAL, ApiClient
from tests.support.procs import wait_for

pytestmark = pytest.mark.integration

Event = dict[str, Any]  # {"id", "event", "data", "t": arrival time}

TICKER = """
import sys, time
for i in range(6):
    print(f"line {i}", flush=True)
    time.sleep(0.5)
"""
TWO_QUESTIONS = """
name = input("name? ")
age = input("age? ")
print(f"hello {name}, {age}")
"""


def sse_events(resp: requests.Response) -> Iterator[Event]:
    """Parse a text/event-stream response as it arrives."""
    event: Event = {}
    for raw in resp.iter_lines(chunk_size=1, decode_unicode=True):
        line = raw or ""
        if not line:
            if "event" in event:
                event["t"] = time.monotonic()
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                event["data"] = json.loads(value)
            elif name in ("id", "event"):
                event[name] = value


def open_sse(api: ApiClient, eid: str, last_event_id: str | None = None, query: bool = False) -> requests.Response:
    headers, params = {}, {}
    if last_event_id and query:
        params["last_event_id"] = last_event_id
    elif last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return requests.get(f"{api.base}/api/v1/executions/{eid}/events", headers=headers, params=params,
                        stream=True, timeout=30)


def collect(api: ApiClient, eid: str, last_event_id: str | None = None, query: bool = False) -> list[Event]:
    with open_sse(api, eid, last_event_id, query) as r:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/event-stream")
        return list(sse_events(r))


def joined(events: list[Event], stream: str = "stdout") -> str:
    return "".join(e["data"]["text"] for e in events if e["event"] == "output" and e["data"]["stream"] == stream)


def submit(api: ApiClient, source: str, **body: Any) -> str:
    sid = api.create_session(source)["session_id"]
    r = api.execute(sid, **body)
    assert r.status_code == 202, r.text
    return str(r.json()["execution_id"])


def ws_url(api: ApiClient, eid: str) -> str:
    return api.base.replace("http://", "ws://") + f"/api/v1/executions/{eid}/ws"


def test_sse_lines_arrive_while_the_program_runs(api: ApiClient) -> None:
    eid = submit(api, TICKER)
    events: list[Event] = []
    status_at_first_output = None
    with open_sse(api, eid) as r:
        assert r.status_code == 200, r.text
        for event in sse_events(r):
            events.append(event)
            if event["event"] == "output" and status_at_first_output is None:
                status_at_first_output = api.get_execution(eid)["status"]
    # The first line reached us while the run was still going, not with the result.
    assert status_at_first_output == "RUNNING"
    kinds = [e["event"] for e in events]
    assert kinds[0] == "status" and events[0]["data"]["status"] == "QUEUED"
    assert kinds[-3:] == ["status", "result", "end"]
    outputs = [e for e in events if e["event"] == "output"]
    assert len(outputs) >= 4, outputs  # line by line, not one lump at the end
    assert outputs[-1]["t"] - outputs[0]["t"] > 1.0  # spread over the run's 3 s
    stored = api.get_execution(eid)
    assert stored["status"] == "COMPLETED"
    assert joined(events) == stored["stdout"] == "".join(f"line {i}\n" for i in range(6))
    assert events[-2]["data"] == stored  # the result event is the execution as GET returns it
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)


def test_merged_stderr_is_one_stdout_in_the_order_written_stored_and_streamed(api: ApiClient) -> None:
    alternate = (
        "import sys\nfor i in range(5):\n"
        "    print(f'out{i}', flush=True)\n    print(f'err{i}', file=sys.stderr, flush=True)\n"
    )
    merged_id, apart_id = submit(api, alternate, merge_stderr=True), submit(api, alternate)
    merged, apart = api.wait_execution(merged_id), api.wait_execution(apart_id)
    assert merged["status"] == apart["status"] == "COMPLETED", (merged, apart)
    assert merged["stdout"] == "".join(f"out{i}\nerr{i}\n" for i in range(5)) and merged["stderr"] == ""
    assert merged["merge_stderr"] is True and apart["merge_stderr"] is False
    events = collect(api, merged_id)
    assert joined(events) == merged["stdout"] and joined(events, "stderr") == ""  # streamed as stdout
    assert apart["stdout"] == "".join(f"out{i}\n" for i in range(5))
    assert apart["stderr"] == "".join(f"err{i}\n" for i in range(5))


def test_late_connect_replays_everything_and_reconnect_resumes(api: ApiClient) -> None:
    source = "import sys\nfor i in range(5):\n    print(i, flush=True)\n    print('e', i, file=sys.stderr, flush=True)"
    eid = submit(api, source)
    stored = api.wait_execution(eid)
    events = collect(api, eid)
    assert [e["event"] for e in events][-3:] == ["status", "result", "end"]
    assert joined(events) == stored["stdout"] and joined(events, "stderr") == stored["stderr"]
    assert stored["stdout"] == "0\n1\n2\n3\n4\n"

    # Resuming after any event gives exactly the ones after it, by header or by query.
    middle = len(events) // 2
    rest = collect(api, eid, last_event_id=events[middle]["id"])
    assert [e["id"] for e in rest] == [e["id"] for e in events[middle + 1 :]]
    rest_q = collect(api, eid, last_event_id=events[1]["id"], query=True)
    assert [e["id"] for e in rest_q] == [e["id"] for e in events[2:]]
    # After the end there is nothing more: 204 makes an EventSource stop reconnecting.
    done = open_sse(api, eid, last_event_id=events[-1]["id"])
    assert done.status_code == 204


def test_reconnect_mid_run_has_no_gap_and_no_duplicate(system: Cluster) -> None:
    api = system.client()
    eid = submit(api, TICKER)
    first: list[Event] = []
    with open_sse(api, eid) as r:
        for event in sse_events(r):
            first.append(event)
            if sum(e["event"] == "output" for e in first) == 2:
                break  # the client goes away mid-run
    assert api.get_execution(eid)["status"] == "RUNNING"
    rest = collect(api, eid, last_event_id=first[-1]["id"])
    everything = first + rest
    ids = [e["id"] for e in everything]
    assert len(set(ids)) == len(ids)
    assert rest[-1]["event"] == "end"
    assert joined(everything) == api.get_execution(eid)["stdout"] == "".join(f"line {i}\n" for i in range(6))


def test_expired_stream_is_made_from_the_stored_row(cluster: Cluster) -> None:
    import redis

    api = cluster.client()
    eid = submit(api, "print('kept in the row')")
    stored = api.wait_execution(eid)
    # The worker publishes its final events just after saving the row: let it finish, so the
    # stream is deleted whole rather than half and then topped up.
    client = redis.Redis.from_url(cluster.env["REDIS_URL"])
    key = f"livecode:events:{eid}"
    wait_for(lambda: any(f.get(b"k") == b"end" for _, f in client.xrange(key)), 30, what="the end event")
    client.delete(key)
    events = collect(api, eid)
    assert [e["event"] for e in events] == ["output", "status", "result", "end"]
    assert joined(events) == stored["stdout"] == "kept in the row\n"
    assert events[1]["data"]["status"] == "COMPLETED" and events[2]["data"] == stored
    rest = collect(api, eid, last_event_id=events[1]["id"])
    assert [e["event"] for e in rest] == ["result", "end"]


def test_flood_and_output_cap_stream_what_is_stored(cluster: Cluster) -> None:
    api = cluster.client()
    # Thousands of tiny writes are coalesced into far fewer events; bytes split mid-character
    # (é is 2 bytes, the snowman 3) still join to the stored text.
    source = (
        "import sys, time\n"
        "for i in range(3000):\n    print(i, flush=True)\n"
        "for ch in 'é☃':\n"
        "    for b in ch.encode():\n        sys.stdout.buffer.write(bytes([b])); sys.stdout.flush(); time.sleep(0.05)\n"
    )
    eid = submit(api, source)
    events = collect(api, eid)
    stored = api.get_execution(eid)
    assert stored["status"] == "COMPLETED"
    assert joined(events) == stored["stdout"] and stored["stdout"].endswith("2999\né☃")
    assert "\ufffd" not in joined(events)
    assert sum(e["event"] == "output" for e in events) < 1000

    capped = submit(api, "while True:\n    print('x' * 100, flush=True)", max_output_bytes=5000)
    events = collect(api, capped)
    stored = api.get_execution(capped)
    assert stored["status"] == "FAILED" and stored["reason"] == "OUTPUT_LIMIT"
    assert joined(events) == stored["stdout"] and len(stored["stdout"]) == 5000


def test_websocket_interactive_input(system: Cluster) -> None:
    api = system.client()
    eid = submit(api, TWO_QUESTIONS, interactive=True)
    ws = websocket.create_connection(ws_url(api, eid), timeout=30)
    received: list[Event] = []
    answers = {"name? ": "Ada\n", "name? age? ": "36\n"}  # answer each prompt once it shows
    try:
        while True:
            msg = json.loads(ws.recv())
            received.append(msg)
            answer = answers.pop(joined(received), None)
            if answer:
                ws.send(json.dumps({"type": "stdin", "data": answer}))
            if msg["event"] == "end":
                break
    finally:
        ws.close()
    stored = api.get_execution(eid)
    assert stored["status"] == "COMPLETED", stored
    assert stored["interactive"] is True
    assert stored["stdout"] == "name? age? hello Ada, 36\n"
    assert not answers
    assert all(set(m) == {"id", "event", "data"} for m in received)
    assert joined(received) == stored["stdout"]


def test_websocket_input_before_start_eof_and_errors(cluster: Cluster) -> None:
    api = cluster.client()
    # Input sent at once (before the worker starts the run) waits for it; EOF ends the input.
    eid = submit(api, "import sys\nprint(sys.stdin.read().upper(), end='')", interactive=True, stdin="a\n")
    ws = websocket.create_connection(ws_url(api, eid), timeout=30)
    ws.send(json.dumps({"type": "stdin", "data": "b\n"}))
    ws.send(json.dumps({"type": "stdin_eof"}))
    ws.send(json.dumps({"type": "nonsense"}))
    errors, kinds = [], []
    while True:
        msg = json.loads(ws.recv())
        kinds.append(msg["event"])
        if msg["event"] == "error":
            errors.append(msg["data"]["error"]["code"])
        if msg["event"] == "end":
            break
    ws.close()
    assert errors == ["BAD_MESSAGE"]
    assert api.get_execution(eid)["stdout"] == "A\nB\n"  # the stored stdin first, then the typed input

    # A run that was not submitted as interactive does not take input; too much input is refused.
    plain = submit(api, "import time\ntime.sleep(1)")
    ws = websocket.create_connection(ws_url(api, plain), timeout=30)
    ws.send(json.dumps({"type": "stdin", "data": "x"}))
    msg = json.loads(ws.recv())
    while msg["event"] != "error":
        msg = json.loads(ws.recv())
    assert msg["data"]["error"]["code"] == "NOT_INTERACTIVE"
    ws.close()

    waiting = submit(api, "input()", interactive=True, time_limit_ms=2000)
    ws = websocket.create_connection(ws_url(api, waiting), timeout=30)
    ws.send(json.dumps({"type": "stdin", "data": "x" * (256 * 1024 + 1)}))
    msg = json.loads(ws.recv())
    while msg["event"] != "error":
        msg = json.loads(ws.recv())
    assert msg["data"]["error"]["code"] == "STDIN_TOO_LARGE"
    ws.close()
    # Nobody answers: the time limit ends the run rather than a hang.
    assert api.wait_execution(waiting)["status"] == "TIMEOUT"


def test_unknown_execution_and_bad_resume_point(api: ApiClient) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    r = requests.get(f"{api.base}/api/v1/executions/{missing}/events", timeout=10)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "EXECUTION_NOT_FOUND"
    assert requests.get(f"{api.base}/api/v1/executions/nope/events", timeout=10).status_code == 400

    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(ws_url(api, missing), timeout=10)
    assert info.value.status_code == 404

    eid = submit(api, "print(1)")
    r = requests.get(f"{api.base}/api/v1/executions/{eid}/events", headers={"Last-Event-ID": "garbage"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_LAST_EVENT_ID"
    assert api.wait_execution(eid)["status"] in TERMINAL


def test_followers_beyond_the_thread_budget_get_503_and_requests_still_work(cluster: Cluster) -> None:
    from tests.support.procs import Process, free_port, livecode, wait_api, wait_for

    port = free_port()
    # 5 threads: 1 may follow, 4 stay for ordinary requests.
    proc = Process(livecode("api", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--threads", "5"),
                   cluster.env, "api-small")
    try:
        api = ApiClient(f"http://127.0.0.1:{port}")
        wait_api(proc, api.base)
        eid = submit(api, "import time\ntime.sleep(3)")
        with open_sse(api, eid) as first:
            assert first.status_code == 200
            busy = open_sse(api, eid)
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "STREAMS_BUSY"
            assert busy.headers["Retry-After"] == "2"
            with pytest.raises(websocket.WebSocketBadStatusException) as info:
                websocket.create_connection(ws_url(api, eid), timeout=10)
            assert info.value.status_code == 503
            assert api.request("GET", f"/api/v1/executions/{eid}").status_code == 200
        # The slot is given back when the client goes away (seen at its next event or heartbeat).
        wait_for(lambda: open_sse(api, eid).status_code in (200, 204), timeout=30, what="a free slot")
    finally:
        proc.stop()


def test_shared_tail_gives_every_follower_every_event_in_order() -> None:
    import threading

    from livecode.streaming.bus import MemoryEventBus
    from livecode.streaming.tails import SharedTails

    bus = MemoryEventBus()
    tails = SharedTails(bus, keep=5)
    got: dict[int, list[str]] = {i: [] for i in range(4)}

    def follower(i: int) -> None:
        cursor = None
        while not got[i] or got[i][-1] != "end":
            for event_id, kind, data in tails.read("x", cursor, 500):
                cursor = event_id
                got[i].append(kind if kind == "end" else data["n"])

    threads = [threading.Thread(target=follower, args=(i,)) for i in range(4)]
    for t in threads[:2]:
        t.start()
    for n in range(40):
        bus.publish("x", "output", {"n": str(n)})
        if n == 20:  # late followers start behind the shared window (keep=5) and catch up
            for t in threads[2:]:
                t.start()
    bus.publish("x", "end", {})
    for t in threads:
        t.join(10)
    expected = [str(n) for n in range(40)] + ["end"]
    assert all(got[i] == expected for i in got), got
