"""The front's deadline sweep (web/front_worker.GuardedThreadWorker.murder_pending): gunicorn calls
it after every turn of its loop, about once per request under load, and each sweep walks every
connection the front reads; it sweeps at most once per SWEEP_S, and at every turn once stopping."""

from __future__ import annotations

import selectors
import socket
from collections import deque
from typing import Any

import pytest

from livecode.web import front_worker
from livecode.web.front_worker import FrontConn, FrontLimits, GuardedThreadWorker


def _worker(sel: selectors.BaseSelector) -> GuardedThreadWorker:
    w = object.__new__(GuardedThreadWorker)  # the front's bookkeeping only: no gunicorn set-up
    w.poller = sel
    w.reading, w.per_address, w.lingering = {}, {}, {}
    w.limits = FrontLimits()
    w.tls, w.max_head, w.keepalive_s = False, 65536, 5.0
    w.nr_conns = 1
    return w


def test_the_deadline_sweep_runs_at_most_once_per_sweep_time(monkeypatch: pytest.MonkeyPatch) -> None:
    sel = selectors.DefaultSelector()
    w = _worker(sel)
    w.alive, w._swept, w.pending_conns = True, 0.0, deque()
    a, client = socket.socketpair()
    cfg: Any = type("Cfg", (), {"is_ssl": False})()
    conn = FrontConn(w, cfg, a, ("127.0.0.1", 1), ("127.0.0.1", 2), "127.0.0.1")
    clock = [100.0]
    monkeypatch.setattr(front_worker.time, "monotonic", lambda: clock[0])
    try:
        w._start_reading(conn)
        w.murder_pending()  # a sweep: nothing expired
        conn.deadline = clock[0] - 1  # now past its deadline
        clock[0] += front_worker.SWEEP_S / 2
        w.murder_pending()  # the next turn of the loop, too soon for another sweep
        assert conn in w.reading
        clock[0] += front_worker.SWEEP_S
        w.murder_pending()
        assert conn not in w.reading and w.nr_conns == 0  # closed
        assert client.recv(100) == b""  # never sent a byte: closed without an answer
        b, client_b = socket.socketpair()
        other = FrontConn(w, cfg, b, ("127.0.0.1", 3), ("127.0.0.1", 2), "127.0.0.1")
        w.nr_conns = 1
        w._start_reading(other)
        w.alive = False  # stopping: every turn sweeps, and requests that never started are closed
        w.murder_pending()
        assert other not in w.reading and w.nr_conns == 0
        client_b.close()
    finally:
        sel.close()
        client.close()
        a.close()
