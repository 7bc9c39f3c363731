"""The in-process stdin channels (the embedded mode's side of streaming/stdin.py): what a client
sends reaches the program's source in order, EOF after it, the per-run limit holds, and input
sent after EOF or for a finished run is dropped. The Redis side is covered by the integration
tests of interactive runs."""

from __future__ import annotations

import time

import pytest

from livecode.errors import PayloadTooLarge
from livecode.streaming.stdin import MemoryStdinChannels


def read_all(source, deadline_s: float = 2.0) -> bytes:  # type: ignore[no-untyped-def]
    """Polls the source as the sandbox does until EOF (the source asks the store at most every 50 ms)."""
    out = b""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        chunk = source()
        if chunk == b"":
            return out
        if chunk:
            out += chunk
        time.sleep(0.01)
    raise AssertionError(f"no EOF after {out!r}")


def test_input_arrives_in_order_then_eof() -> None:
    channels = MemoryStdinChannels(limit=100)
    channels.send("run-1", "first\n")
    channels.send("run-1", "sécond\n")
    channels.close("run-1")
    channels.send("run-1", "after eof\n")  # never read
    assert read_all(channels.source("run-1")) == "first\nsécond\n".encode()


def test_the_limit_counts_bytes_per_run() -> None:
    channels = MemoryStdinChannels(limit=8)
    channels.send("run-1", "1234")
    channels.send("run-2", "12345678")  # another run has its own budget
    with pytest.raises(PayloadTooLarge) as refused:
        channels.send("run-1", "é" * 3)  # 6 bytes: 10 > 8
    assert refused.value.code == "STDIN_TOO_LARGE"
    channels.send("run-1", "5678")  # what was refused was not counted
    channels.close("run-1")
    assert read_all(channels.source("run-1")) == b"12345678"


def test_discard_drops_what_is_left() -> None:
    channels = MemoryStdinChannels(limit=100)
    channels.send("run-1", "unread")
    channels.discard("run-1")
    source = channels.source("run-1")
    assert source() is None  # nothing, and no EOF either


def read_signals(run_input, want: int, deadline_s: float = 2.0) -> list[int]:  # type: ignore[no-untyped-def]
    got: list[int] = []
    deadline = time.monotonic() + deadline_s
    while len(got) < want and time.monotonic() < deadline:
        sig = run_input.signals()
        if sig is not None:
            got.append(sig)
        time.sleep(0.01)
    return got


def test_signals_travel_beside_input_in_order() -> None:
    channels = MemoryStdinChannels(limit=100)
    channels.send("run-1", "typed\n")
    channels.signal("run-1", 2)
    channels.close("run-1")
    channels.signal("run-1", 9)  # after EOF: input is over, a signal still counts
    run = channels.run_input("run-1", interactive=True)
    assert read_all(run.stdin) == b"typed\n"
    assert read_signals(run, 2) == [2, 9]
    assert run.received_signal


def test_a_run_that_is_not_interactive_polls_only_for_signals_and_not_at_once() -> None:
    channels = MemoryStdinChannels(limit=100)
    channels.signal("run-1", 15)
    run = channels.run_input("run-1", interactive=False)
    assert run.signals() is None  # a short run never asks the store
    assert read_signals(run, 1) == [15]
    assert run.stdin() is None  # no input for it
