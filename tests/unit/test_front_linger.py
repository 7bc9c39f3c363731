"""The front worker's lingering close owns its socket: a socket object closed under it afterwards
(a WebSocket's reader thread closes its own) must not leave a dead fd number in the selector,
where the next accepted connection, given the same number, would collide and be reset."""

from __future__ import annotations

import selectors
import socket

from livecode.web.front_worker import FrontLimits, GuardedThreadWorker


def _worker() -> GuardedThreadWorker:
    w = object.__new__(GuardedThreadWorker)  # only the linger bookkeeping: no gunicorn set-up
    w.poller = selectors.DefaultSelector()
    w.lingering = {}
    w.limits = FrontLimits()
    return w


def test_a_socket_closed_after_its_linger_began_does_not_break_the_next_connection() -> None:
    w = _worker()
    served, client = socket.socketpair()
    w.linger(served)
    served.close()  # what the WebSocket's reader thread does, a moment later
    nxt, peer = socket.socketpair()  # the next connection: the lowest free fd numbers again
    try:
        w.poller.register(nxt, selectors.EVENT_READ)  # KeyError "already registered" before
        client.close()  # the client closes too: the linger ends and closes its socket
        for key, _ in w.poller.select(timeout=1):
            if key.fileobj is not nxt:
                key.data(key.fileobj)
        assert not w.lingering
        assert [k.fileobj for k in w.poller.get_map().values()] == [nxt]
    finally:
        for s in (nxt, peer, client):
            s.close()


def test_lingering_drains_then_closes_when_the_client_closes() -> None:
    w = _worker()
    served, client = socket.socketpair()
    w.linger(served)
    client.sendall(b"late bytes")  # unread bytes must be drained, not answered with a reset
    client.shutdown(socket.SHUT_WR)
    for _ in range(5):
        for key, _ in w.poller.select(timeout=1):
            key.data(key.fileobj)
        if not w.lingering:
            break
    assert not w.lingering and not w.poller.get_map()
    assert client.recv(10) == b""  # the server's side was half-closed: the client saw EOF
    client.close()
