"""Kept-alive connections through the front worker (web/front_worker.py): after an answer the
thread that served a request gives its connection straight back to the front, which waits for
the next request. What a client relies on still holds: many requests (pipelined, or with a body
the route never read) on one connection each get their own answer; an idle connection is closed
after gunicorn's keep-alive time (5 s), not kept for the longer header timeout; once its next
request has begun, the header timeout applies, not the keep-alive time."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from tests.conftest import Cluster
from tests.support.procs import Process, free_port, livecode, wait_api

pytestmark = pytest.mark.integration

HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def port(cluster: Cluster) -> Iterator[int]:
    p = free_port()
    env = {**cluster.env, "LIVECODE_HEADER_TIMEOUT_S": "30", "LIVECODE_BODY_TIMEOUT_S": "30"}
    proc = Process(livecode("api", "--host", "127.0.0.1", "--port", str(p), "--workers", "1", "--threads", "4"),
                   env, "api-keepalive")
    wait_api(proc, f"http://127.0.0.1:{p}")
    yield p
    proc.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_answers(s: socket.socket, count: int) -> list[bytes]:
    """`count` whole HTTP answers (each with a Content-Length) from `s`."""
    buf, answers = b"", []
    while len(answers) < count:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode("latin-1")
            length = next(int(line.split(":", 1)[1]) for line in head.split("\r\n")
                          if line.lower().startswith("content-length:"))
            if len(buf) >= head_end + 4 + length:
                answers.append(buf[:head_end + 4 + length])
                buf = buf[head_end + 4 + length:]
                continue
        chunk = s.recv(65536)
        assert chunk, f"closed after {len(answers)} answers"
        buf += chunk
    return answers


def closed_within(s: socket.socket, seconds: float) -> float | None:
    """How long until the server closed `s` (None: still open after `seconds`)."""
    t0 = time.monotonic()
    s.settimeout(seconds)
    try:
        data = s.recv(100)
    except TimeoutError:
        return None
    except OSError:
        return time.monotonic() - t0
    assert data == b"", data
    return time.monotonic() - t0


def test_many_requests_on_one_connection_each_get_their_answer(port: int) -> None:
    s = connect(port)
    try:
        for i in range(30):
            ids = [f"keepalive-{i}-a", f"keepalive-{i}-b", f"keepalive-{i}-c"]
            # A body /health never reads, then two requests sent at once (pipelined).
            s.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"X-Request-ID: " + ids[0].encode() + b"\r\nContent-Length: 17\r\n\r\n{\"unread\": true}\n")
            s.sendall(b"".join(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: " + rid.encode() + b"\r\n\r\n"
                               for rid in ids[1:]))
            answers = read_answers(s, 3)
            for rid, answer in zip(ids, answers, strict=True):
                assert answer.split(b"\r\n", 1)[0] in (b"HTTP/1.1 200 OK", b"HTTP/1.1 405 METHOD NOT ALLOWED")
                assert b"\r\nX-Request-ID: " + rid.encode() + b"\r\n" in answer
            assert answers[1].startswith(b"HTTP/1.1 200") and answers[2].startswith(b"HTTP/1.1 200")
    finally:
        s.close()


@contextlib.contextmanager
def kept_alive(port: int) -> Iterator[socket.socket]:
    """A connection that has had one request answered, now kept alive; closed after the block."""
    s = connect(port)
    try:
        s.sendall(HEALTH)
        assert read_answers(s, 1)[0].startswith(b"HTTP/1.1 200")
        yield s
    finally:
        s.close()


def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_time(port: int) -> None:
    with kept_alive(port) as s:
        # Closed by the keep-alive time (5 s; checked about once a second), well before the
        # 30 s header timeout that applies once a request has begun.
        waited = closed_within(s, 20)
        assert waited is not None, "an idle kept-alive connection stayed open"


def test_a_next_request_that_has_begun_gets_the_header_timeout(port: int) -> None:
    with kept_alive(port) as s:
        # The next request starts at once, then takes longer than the keep-alive time (5 s)
        # to arrive: it is under the header timeout (30 s) now, and is answered.
        rest = HEALTH
        s.sendall(rest[:1])
        rest_sent = 1
        deadline = time.monotonic() + 8
        for i in range(1, len(rest) - 1):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
            s.sendall(rest[i:i + 1])
            rest_sent = i + 1
        s.sendall(rest[rest_sent:])
        assert read_answers(s, 1)[0].startswith(b"HTTP/1.1 200")
