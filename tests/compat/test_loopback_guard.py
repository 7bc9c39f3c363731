"""The compat tests' guard: a client that tries to leave loopback fails at once, in process."""

from __future__ import annotations

import socket

import pytest

from .conftest import OffLoopback


def test_lookups_and_connections_off_loopback_are_refused_before_they_leave(_loopback_only: list[str]) -> None:
    with pytest.raises(OffLoopback):
        socket.getaddrinfo("extra-ce.judge0.com", 443)
    with pytest.raises(OffLoopback), socket.socket() as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: refused here, never sent
    assert len(_loopback_only) == 2
    _loopback_only.clear()  # expected: the guard's own check at teardown must not fail this test
    assert socket.getaddrinfo("127.0.0.1", 80) and socket.getaddrinfo("localhost", 80)
