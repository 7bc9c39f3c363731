"""The worker's front (livecode.web.front_worker.RequestReader): when a request has fully arrived,
whatever pieces it comes in, and that a request sent in many tiny pieces costs no more than one
sent at once."""

from __future__ import annotations

import time

import pytest

from livecode.web.front_worker import RequestReader

MAX_HEAD, MAX_BODY = 8192, 4096


def arrives(request: bytes, piece: int = 1) -> int | None:
    """Feed `request` `piece` bytes at a time; the number of bytes in when it was complete."""
    reader, buf = RequestReader(MAX_HEAD, MAX_BODY), bytearray()
    for i in range(0, len(request), piece):
        buf += request[i:i + piece]
        if reader.complete(buf):
            return len(buf)
    return None


GET = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"
TRAILERS = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n"


@pytest.mark.parametrize("request_bytes", [GET, POST, CHUNKED, TRAILERS])
@pytest.mark.parametrize("piece", [1, 3, 1000])
def test_complete_exactly_when_the_last_byte_arrives(request_bytes: bytes, piece: int) -> None:
    assert arrives(request_bytes, piece) == len(request_bytes)
    assert arrives(request_bytes[:-1], piece) is None


def test_slow_head_and_body_are_not_complete() -> None:
    assert arrives(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: 1\r\n" * 50) is None
    assert arrives(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b" " * 99) is None


@pytest.mark.parametrize("request_bytes", [
    b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",  # the parser answers 400
    b"POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n",  # the app answers 413 unread
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",  # both framings
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n{}",  # absurd chunk size
    b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD + 10),  # head too long
])
def test_refused_requests_are_handed_on_without_waiting(request_bytes: bytes) -> None:
    assert arrives(request_bytes, 1000) is not None


def test_chunked_body_past_the_cap_is_handed_on() -> None:
    head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert arrives(head + b"1\r\nx\r\n" * (MAX_BODY // 6 + 10), 100) is not None


def test_many_tiny_pieces_cost_little() -> None:
    reader = RequestReader(1_000_000, 4_000_000)
    buf = bytearray(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n" + b"X-A: b\r\n" * 20_000 + b"\r\n")
    assert not reader.complete(buf)
    started = time.process_time()
    for _ in range(50_000):  # 300 KB of 1-byte chunks, one piece at a time
        buf += b"1\r\nx\r\n"
        assert not reader.complete(buf)
    buf += b"0\r\n\r\n"
    assert reader.complete(buf)
    # Rescanning the 180 KB head or the body each time would take minutes.
    assert time.process_time() - started < 10


@pytest.mark.parametrize(("request_bytes", "partial"), [
    (GET, False),
    (POST, False),
    (CHUNKED, False),
    (b"POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n", True),  # past the cap: the app answers unread
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", True),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * (MAX_BODY // 6 + 10), True),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD + 10), True),
])
def test_a_request_handed_over_before_it_was_whole_is_marked(request_bytes: bytes, partial: bool) -> None:
    """The connection of a request handed over unread must close after its answer (what is left of
    it would be read as the next request)."""
    reader, buf = RequestReader(MAX_HEAD, MAX_BODY), bytearray()
    for i in range(0, len(request_bytes), 100):
        buf += request_bytes[i:i + 100]
        if reader.complete(buf):
            break
    assert reader.partial is partial
