"""What a submission leaves for after its 202 (web/after_response.py): Redis's replies to the
QUEUED event and the run's message. The commands are on the wire before the answer, so the run is
queued all the same; the answer does not wait for Redis to say so. Shown with a TCP proxy in front
of the real Redis that can hold Redis's replies back while still passing the API's commands on."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from livecode import redis_split
from livecode.config import load_settings
from livecode.streaming.bus import RedisEventBus
from tests.support.client import ApiClient
from tests.support.procs import start_api

pytestmark = pytest.mark.integration


class ReplyHoldingProxy:
    """Forwards TCP both ways; while `held`, what the server sends waits in the proxy."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.released = threading.Event()
        self.released.set()
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                if replies:
                    self.released.wait()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.released.set()
        self.listener.close()
        for s in self.socks:
            s.close()


@pytest.fixture
def proxied_api(cluster: Any) -> Iterator[tuple[str, Any, ReplyHoldingProxy]]:
    real = redis.Redis.from_url(cluster.env["REDIS_URL"])
    kwargs = real.connection_pool.connection_kwargs
    proxy = ReplyHoldingProxy((kwargs["host"], kwargs["port"]))
    url = f"redis://127.0.0.1:{proxy.port}/{kwargs.get('db', 0)}"
    # Rate limits off: a charge's answer is awaited before the insert (api/ratelimit.py).
    proc, base = start_api({**cluster.env, "REDIS_URL": url, "LIVECODE_RATE_LIMITS_ENABLED": "false"})
    try:
        yield base, proc, proxy
    finally:
        proc.stop()
        proxy.close()


def _queued_ids(client: redis.Redis, queue: str) -> list[str]:
    ids = []
    for raw in client.lrange(queue, 0, -1):
        ids.append(json.loads(raw)["headers"]["id"])
    return ids


def test_a_submission_is_answered_before_redis_replies_and_its_run_is_queued(
    cluster: Any, proxied_api: tuple[str, Any, ReplyHoldingProxy],
) -> None:
    base, proc, proxy = proxied_api
    api = ApiClient(base)
    sid = api.create_session("print('after the answer')")["session_id"]
    # One run with the proxy open: the API's Redis connection is made and in its pool.
    first = api.execute(sid, priority="batch")
    assert first.status_code == 202, first.text
    api.wait_execution(first.json()["execution_id"])

    real = redis.Redis.from_url(cluster.env["REDIS_URL"])
    queue = cluster.env.get("LIVECODE_QUEUE_LOW", load_settings("embedded").queue_low)
    proxy.released.clear()  # Redis still gets every command; the API hears nothing back
    try:
        # Redis's socket timeout in the API is 5 s: a submission that waited for the replies
        # would answer after it, with the enqueue logged as failed.
        r = requests.post(f"{base}/api/v1/executions/session/{sid}/execute", json={"priority": "batch"}, timeout=4)
        assert r.status_code == 202, r.text
        eid = r.json()["execution_id"]
        deadline = time.monotonic() + 10
        seen: list[str] = []
        while time.monotonic() < deadline:  # queued by the commands sent before the answer
            events = real.xrange(f"livecode:events:{eid}")
            seen = [json.loads(f[b"d"])["status"] for _, f in events if f[b"k"] == b"status"]
            if seen and (eid in _queued_ids(real, queue) or len(seen) > 1):  # or a worker took it
                break
            time.sleep(0.05)
        assert seen[:1] == ["QUEUED"], seen
    finally:
        proxy.released.set()
    done = api.wait_execution(eid)
    assert done["status"] == "COMPLETED" and done["stdout"] == "after the answer\n", done
    assert "enqueue failed" not in proc.output()
    # The held connection went back to the pool healthy: the next submission is as any other.
    again = api.execute(sid, priority="batch")
    assert again.status_code == 202, again.text
    assert api.wait_execution(again.json()["execution_id"])["status"] == "COMPLETED"


def test_replies_read_later_are_those_of_a_pipeline(redis_base_url: str) -> None:
    """redis_split: commands written now, replies read later, as one pipeline would give them;
    an error reply is raised once every reply is read, and the connection serves on."""
    client = redis.Redis.from_url(redis_base_url)
    key = f"lc-split-{uuid.uuid4().hex}"
    try:
        sent = redis_split.send(client, [("SET", key, "v"), ("LPUSH", key, "x"), ("GET", key)])
        assert sent.on_the_wire
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            sent.replies()
        assert client.get(key) == b"v"  # nothing left unread on a pooled connection
        ok = redis_split.send(client, [("INCR", key + ":n"), ("INCR", key + ":n")])
        assert ok.replies() == [1, 2] and ok.replies() == [1, 2]  # read once
        dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)  # nothing listens
        failed = redis_split.send(dead, [("LPUSH", key, "y")])
        assert not failed.on_the_wire
        with pytest.raises(redis.ConnectionError):
            failed.replies()
    finally:
        client.delete(key, key + ":n")


def test_a_runs_events_whose_replies_stall_are_published_once(redis_base_url: str) -> None:
    """The final events go to Redis in one write (RedisEventBus.publish_many). When Redis ran them
    but its replies come only after the socket timeout, the publish fails as a redis-py Pipeline
    without retries (the runtime's client) does; it is not sent again once Redis answers: the
    stream holds each event once, never twice."""
    real = redis.Redis.from_url(redis_base_url)
    kwargs = real.connection_pool.connection_kwargs
    proxy = ReplyHoldingProxy((kwargs["host"], kwargs["port"]))
    # runtime.redis_client's options (no retry), with a 1 s socket timeout instead of 5.
    client = redis.Redis(host="127.0.0.1", port=proxy.port, db=kwargs.get("db", 0), socket_connect_timeout=1,
                         socket_timeout=1.0, retry=Retry(NoBackoff(), 0))
    eid = f"stall-{uuid.uuid4().hex}"
    bus = RedisEventBus(client)
    final = [("output", {"stream": "stdout", "text": "hi\n"}), ("status", {"status": "COMPLETED"}),
             ("end", {"status": "COMPLETED"})]
    try:
        bus.publish(eid, "status", {"status": "RUNNING"})  # the connection is made and pooled
        proxy.released.clear()  # Redis runs what it gets; its replies come 1.5 s later
        threading.Timer(1.5, proxy.released.set).start()
        with pytest.raises(redis.TimeoutError):
            bus.publish_many(eid, final)  # a resend would connect, and be answered, before its own timeout
        time.sleep(1.5)
        kinds = [f[b"k"].decode() for _, f in real.xrange(f"livecode:events:{eid}")]
        assert kinds == ["status", "output", "status", "end"], kinds
        assert bus.publish(eid, "status", {"status": "COMPLETED"})  # the pool serves on
    finally:
        proxy.close()
        real.delete(f"livecode:events:{eid}")
