"""What the front worker saves per request: no socket mode switch (ioctl) for a socket that is
blocking already, and gunicorn's Date header formatted once a second."""

from __future__ import annotations

import os
import selectors
import socket
from typing import Any

import pytest
from gunicorn import util as gunicorn_util

from livecode.web import front_worker
from livecode.web.front_worker import FrontConn, GuardedThreadWorker, ModeKeepingSocket


def test_setblocking_true_on_a_blocking_socket_switches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    switched: list[bool] = []
    real = socket.socket.setblocking

    def counting(self: socket.socket, flag: bool) -> None:
        switched.append(flag)
        real(self, flag)

    monkeypatch.setattr(socket.socket, "setblocking", counting)
    a, b = socket.socketpair()
    try:
        a.__class__ = ModeKeepingSocket
        a.setblocking(True)  # what gthread's handle() does at every request
        assert switched == [] and os.get_blocking(a.fileno())
        a.setblocking(False)  # a real switch still happens, both ways
        assert switched == [False] and not os.get_blocking(a.fileno())
        a.setblocking(True)
        assert switched == [False, True] and os.get_blocking(a.fileno()) and a.gettimeout() is None
        a.settimeout(2.0)  # a timeout makes the file non-blocking under Python: True switches back
        assert not os.get_blocking(a.fileno())
        a.setblocking(True)
        assert switched[-1] is True and os.get_blocking(a.fileno()) and a.gettimeout() is None
    finally:
        a.close()
        b.close()


def test_a_plain_client_socket_keeps_its_mode_and_a_dup_too() -> None:
    w = object.__new__(GuardedThreadWorker)
    w.poller = selectors.DefaultSelector()
    w.per_address = {}
    a, b = socket.socketpair()
    cfg: Any = type("Cfg", (), {"is_ssl": False})()
    try:
        conn = FrontConn(w, cfg, a, ("127.0.0.1", 1), ("127.0.0.1", 2), "127.0.0.1")
        assert type(conn.sock) is ModeKeepingSocket
        dup = conn.sock.dup()  # the lingering close's own copy
        assert type(dup) is ModeKeepingSocket
        dup.close()
    finally:
        a.close()
        b.close()


def test_the_date_header_is_gunicorns_and_follows_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    assert gunicorn_util.http_date is front_worker.http_date  # what Response.default_headers calls
    original = front_worker._gunicorn_http_date
    now = [1_700_000_000.25]
    monkeypatch.setattr(front_worker.time, "time", lambda: now[0])
    assert front_worker.http_date() == original(now[0])
    now[0] = 1_700_000_000.99
    assert front_worker.http_date() == original(now[0])
    now[0] = 1_700_000_001.0  # the next second: formatted anew (fails with the cache not renewed)
    assert front_worker.http_date() == original(now[0]) != original(1_700_000_000.0)
    assert front_worker.http_date(86400.5) == original(86400.5)  # an explicit time: as gunicorn
