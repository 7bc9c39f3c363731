"""Slow clients (issue 10, item 5): connections that send their headers or body a byte at a
time, or nothing at all, must not take the API's threads. A real `livecode api` with 8 threads
gets several times that many slow connections from one loopback address; /health and ordinary
requests from another address keep answering, the slow ones are told 408 after the header or
body timeout however steadily they trickle, and past the per-address cap a connection is
answered 429 at once."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.support.procs import Process, free_port, livecode, wait_api

pytestmark = pytest.mark.integration

ATTACKER, BYSTANDER, PROXY = "127.0.0.1", "127.0.0.2", "127.0.0.3"
THREADS = 8
SLOW = 36  # slow connections: 12 slow headers, 12 slow bodies, 12 silent
CAP = 40


class Api:
    def __init__(self, cluster: Cluster) -> None:
        self.port = free_port()
        env = {**cluster.env, "LIVECODE_HEADER_TIMEOUT_S": "4", "LIVECODE_BODY_TIMEOUT_S": "4",
               "LIVECODE_CONNECTIONS_PER_ADDRESS": str(CAP), "LIVECODE_CONNECTION_LIMIT_EXEMPT": f"{PROXY}/32"}
        self.proc = Process(livecode("api", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                                     "--threads", str(THREADS)), env, "api-slow")
        wait_api(self.proc, f"http://127.0.0.1:{self.port}")

    def request(self, method: str, path: str, body: Any = None, timeout: float = 5) -> tuple[int, Any]:
        """A request from the bystander's address, failing if no answer within `timeout`."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout, source_address=(BYSTANDER, 0))
        try:
            payload = None if body is None else json.dumps(body)
            conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    def connect(self, source: str = ATTACKER) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source, 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", self.port))
        return s


@pytest.fixture
def api(cluster: Cluster) -> Iterator[Api]:
    a = Api(cluster)
    yield a
    a.proc.stop()


class Trickle:
    """Slow clients that keep sending one byte a second, each to a request that never ends."""

    def __init__(self, api: Api) -> None:
        self.socks: list[socket.socket] = []
        for i in range(SLOW):
            s = api.connect()
            if i % 3 == 0:  # slow headers
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            elif i % 3 == 1:  # slow body, anonymous
                s.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100000\r\n\r\n{")
            self.socks.append(s)  # else: silent
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(1):
            for i, s in enumerate(self.socks):
                if i % 3 != 2:
                    try:
                        s.send(b"X-Slow: 1\r\n" if i % 3 == 0 else b" ")
                    except OSError:
                        pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for s in self.socks:
            s.close()


def answer_of(s: socket.socket, timeout: float) -> bytes:
    """What the server sent on a slow connection (b"" if it closed without a word)."""
    s.settimeout(timeout)
    try:
        return s.recv(200)
    except TimeoutError:
        return b"<no answer>"
    except OSError:
        return b""


def test_slow_clients_do_not_take_the_threads(api: Api) -> None:
    trickle = Trickle(api)
    try:
        time.sleep(1)  # every slow connection is in, and trickling
        # The bystander is served at once, many times over (each request needs a free thread).
        started = time.monotonic()
        for _ in range(3):
            assert api.request("GET", "/health")[0] == 200
            assert api.request("GET", "/api/v1/languages")[0] == 200
        status, body = api.request("POST", "/api/v1/code-sessions", {"language": "python", "source_code": "1"})
        assert status == 201, body
        assert time.monotonic() - started < 15  # generous: a busy 2-core machine

        # Past the per-address cap the attacker's next connection is turned away at once, while
        # the bystander's address is not affected.
        extra = [api.connect() for _ in range(CAP - SLOW)]
        over = api.connect()
        answer = answer_of(over, 10)
        assert answer.startswith(b"HTTP/1.1 429"), answer
        assert b"TOO_MANY_CONNECTIONS" in answer + over.recv(500)
        over.close()
        assert api.request("GET", "/health")[0] == 200
        # An exempt address (a reverse proxy's) is not capped.
        proxied = [api.connect(PROXY) for _ in range(CAP + 5)]
        assert answer_of(proxied[-1], 1) == b"<no answer>"  # open, waiting for its request
        proxied[-1].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer_of(proxied[-1], 10).startswith(b"HTTP/1.1 200")
        for s in proxied:
            s.close()

        # However steadily they trickle, the slow requests end at the header or body timeout (4 s).
        answers = [answer_of(s, 20) for s in trickle.socks]
        timed_out = [a for i, a in enumerate(answers) if i % 3 != 2]
        assert all(a.startswith(b"HTTP/1.1 408") for a in timed_out), timed_out
        assert all(a in (b"", b"<no answer>") or a.startswith(b"HTTP/1.1 408") for a in answers[2::3])
        assert all(a != b"<no answer>" for a in answers[2::3]), "silent connections are closed too"
        for s in extra:
            s.close()
    finally:
        trickle.close()
    # And the service is fine afterwards.
    assert api.request("GET", "/health")[0] == 200
