"""The pool of spare sandboxes (sandbox/pool.py) with stand-in sandboxes: which spare a run gets,
and which the pool replaces. The real sandboxes' side is tests/sandbox/test_pool.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from livecode.sandbox.pool import SandboxPool

KEY = (256, 1024)


@dataclass(eq=False)
class Spare:
    warm: str | None
    built: float = field(default_factory=time.monotonic)


class Builder:
    """Builds stand-ins warm-started for whatever `warm` says at the time."""

    def __init__(self) -> None:
        self.warm: str | None = None
        self.discarded: list[Spare] = []
        self.lock = threading.Lock()

    def build(self, key: tuple[int, int], soon: bool) -> Spare:
        return Spare(self.warm)

    def discard(self, spare: Spare) -> None:
        with self.lock:
            self.discarded.append(spare)


def wait_for(what: Callable[[], bool], deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while not what():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_a_spare_passed_over_for_a_newer_one_that_suits_the_runs_is_replaced() -> None:
    """A worker's first spares are built before any run said what it warm-starts. Once runs
    take the warm spares built after them, a cold one left at the head of the pool would stay
    there (until it is 5 minutes old) while every run took the newest spare, the one whose
    interpreter the refill had only just started: a pool of one. It is replaced instead."""
    b = Builder()
    pool: SandboxPool[tuple[int, int], Spare] = SandboxPool(b.build, b.discard, 2, KEY)
    try:
        wait_for(lambda: pool.ready_count(KEY) == 2)
        b.warm = "python"
        warm = lambda s: s.warm == "python"  # noqa: E731
        stale = lambda s: s.warm != "python"  # noqa: E731 - the runs want only Python now
        first = pool.take(KEY, prefer=warm, stale=stale)
        assert first is not None and first.warm is None  # none warm yet: the oldest
        pool.done()
        wait_for(lambda: pool.ready_count(KEY, where=warm) == 1)
        (cold,) = [s for _, _, s in pool._ready if s.warm is None]
        second = pool.take(KEY, prefer=warm, stale=stale)
        assert second is not None and second.warm == "python"
        pool.done()
        wait_for(lambda: pool.ready_count(KEY, where=warm) == 2)
        assert pool.ready_count(KEY) == 2, "the cold spare is still in the pool"
        wait_for(lambda: cold in b.discarded)
        # The next run gets the older of two warm spares, not the one just built.
        third = pool.take(KEY, prefer=warm, stale=stale)
        assert third is not None and third.warm == "python"
        assert third.built < max(s.built for _, _, s in pool._ready)
    finally:
        pool.close()


def test_the_oldest_spare_is_taken_when_none_suits_better() -> None:
    b = Builder()
    pool: SandboxPool[tuple[int, int], Spare] = SandboxPool(b.build, b.discard, 2, KEY)
    try:
        wait_for(lambda: pool.ready_count(KEY) == 2)
        oldest = pool._ready[0][2]
        assert pool.take(KEY, prefer=lambda s: s.warm == "node") is oldest
        assert b.discarded == []  # nothing passed over: the others stay
        assert pool.ready_count(KEY) == 1
    finally:
        pool.close()


def test_a_spare_passed_over_that_runs_still_want_stays() -> None:
    """Two languages with the same limits: a Node spare passed over by a Python run stays for the
    Node runs (the review of b2b: replacing every spare passed over cost a mix a third of its
    warm starts)."""
    b = Builder()
    b.warm = "node"
    pool: SandboxPool[tuple[int, int], Spare] = SandboxPool(b.build, b.discard, 2, KEY)
    try:
        wait_for(lambda: pool.ready_count(KEY) == 2)
        b.warm = "python"
        node = pool.take(KEY, prefer=lambda s: s.warm == "node")  # a Node run: the refill builds Python's
        assert node is not None
        pool.done()
        wait_for(lambda: pool.ready_count(KEY, where=lambda s: s.warm == "python") == 1)
        wanted = ["node", "python"]
        py = pool.take(KEY, prefer=lambda s: s.warm == "python", stale=lambda s: s.warm not in wanted)
        assert py is not None and py.warm == "python"
        assert b.discarded == [] and pool.ready_count(KEY, where=lambda s: s.warm == "node") == 1
        # Once no run wants Node, the spare passed over goes.
        pool.done()
        wait_for(lambda: pool.ready_count(KEY, where=lambda s: s.warm == "python") == 1)
        assert pool.take(KEY, prefer=lambda s: s.warm == "python", stale=lambda s: s.warm != "python") is not None
        wait_for(lambda: any(s.warm == "node" for s in b.discarded))
    finally:
        pool.close()
