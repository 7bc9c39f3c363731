"""The compat tests' guard: name lookups and connections go through the loopback check (checked
without ever aiming at another address, so that a broken guard sends nothing either)."""

from __future__ import annotations

import socket

import pytest

from .conftest import _loopback


def test_lookups_and_connections_go_through_the_guard() -> None:
    assert socket.getaddrinfo.__module__ == "tests.compat.conftest"
    assert socket.socket.connect.__module__ == "tests.compat.conftest"
    assert socket.getaddrinfo("127.0.0.1", 80) and socket.getaddrinfo("localhost", 80)


@pytest.mark.parametrize(("host", "ok"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True), (b"127.0.0.1", True),
    ("extra-ce.judge0.com", False), ("10.0.0.1", False), ("0.0.0.0", False), ("::", False), ("", False), (None, False),
])
def test_only_loopback_passes(host: object, ok: bool) -> None:
    assert _loopback(host) is ok
