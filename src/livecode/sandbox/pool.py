"""A few sandboxes set up ahead of time, each used for exactly one run and then destroyed.

bubblewrap's set-up (namespaces, mounts, tmpfs) and the run's cgroup are done by a background
thread, off the request path. A pooled sandbox never carries state between runs: it is built
empty, takes one job through its launcher, and is killed with its cgroup afterwards.

A sandbox is built for a key (the limits fixed at build time: the tmpfs size, the memory shown
in its /proc/meminfo) and only serves a run with the same key. The pool builds for the key the
runs asked for last, so it follows the limits a deployment actually uses.

Runs that come back to back (a program's test cases) say how many more follow (`ahead`): the
pool then builds that many (at most MAX_AHEAD) as soon as a run has started, instead of
one after each run, so that bubblewrap sets up the next runs' sandboxes on the other core while
the current run goes on and each run finds its sandbox ready. Runs announced before a compile
(`expect`) get up to MAX_EXPECTED built while the compiler runs, on the core it leaves idle. They
are still built empty and used once; only the moment they are built changes. Sandboxes built
ahead take only free slots, and never the quarter of them reserved for runs that build their own
(`build` raises NoFreeSlot rather than wait for one: the runs in progress need them more; the pool
tries again at the next run's news), and those no run will take (a compile error, a budget spent)
are destroyed at once (`expect(key, 0)`).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from .types import NoFreeSlot

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
_MAX_IDLE_S = 300.0  # rebuild idle sandboxes now and then so none lingers for hours
# Sandboxes built ahead for runs that follow (each holds a slot uid until used): setting one up
# takes about three runs of a small program, so a few in flight keep back-to-back runs fed.
MAX_AHEAD = 4
# While a program compiles (the compiler keeps one core busy, the other is mostly idle), up to
# this many of its tests' sandboxes are built: each is ~11 ms of CPU the tests no longer spend
# (on a 2-core machine, 4 -> 8 -> 16 took the 50-test figure from 2.13x to 1.95x and 1.79x).
MAX_EXPECTED = 16
_NO_SLOT_WAIT_S = 0.1  # every slot taken: look again after this long (or at the next run's news)


class SandboxPool(Generic[K, T]):
    def __init__(self, build: Callable[[K, bool], T], discard: Callable[[T], None], size: int, key: K) -> None:
        """`build(key, soon)` makes a sandbox; `soon` is True when a run announced it will take it
        (take's `ahead`), so it need not yield to the runs in progress."""
        self._build = build
        self._discard = discard
        self._size = size
        self._want = key  # what the next sandbox is built for
        self._ahead = 0  # runs announced to follow the current one at once (take's `ahead`)
        self._ready: collections.deque[tuple[float, K, T]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._failures = 0
        self.served = 0  # runs that got a pre-built sandbox
        self._discarding: set[threading.Thread] = set()
        # The filler thread is the sandboxes' parent: bwrap --die-with-parent follows the thread
        # that forked it, so this thread lives as long as the pool.
        self._thread = threading.Thread(target=self._fill, name="sandbox-pool", daemon=True)
        self._thread.start()

    def take(
        self,
        key: K,
        ahead: int = 0,
        prefer: Callable[[T], bool] | None = None,
        stale: Callable[[T], bool] | None = None,
    ) -> T | None:
        """A ready sandbox built for `key`, or None (the caller then builds one on the request path);
        of those, the first that `prefer` accepts if any. `ahead`: how many runs with the same key
        follow this one at once; the pool starts building their sandboxes now (up to MAX_AHEAD
        ready at a time). `stale`: which of the spares passed over for the one `prefer` chose
        no run wants any more (they are replaced)."""
        with self._cond:
            item = None
            keep: collections.deque[tuple[float, K, T]] = collections.deque()
            now = time.monotonic()
            fits = [c for built, k, c in self._ready if k == key and now - built < _MAX_IDLE_S]
            chosen = next((c for c in fits if prefer(c)), None) if prefer is not None else None
            # Spares passed over for a newer one that suits the run better, and that no run wants
            # any more (`stale`: built before the runs changed what they want, as a worker's first
            # spares, made before any run said what it would warm-start), are replaced. Kept, each
            # would sit at the head of the pool until _MAX_IDLE_S while the runs took the newest
            # spare, the one the refill has just started, as though the pool held one. A spare a
            # run still wants (another language's, in a mix) stays for it.
            passed = [c for c in fits[: fits.index(chosen)] if stale(c)] if chosen is not None and stale else []
            if chosen is None and fits:
                chosen = fits[0]
            while self._ready:
                built, k, candidate = self._ready.popleft()
                if now - built >= _MAX_IDLE_S or any(candidate is c for c in passed):
                    self._discard_later(candidate)
                elif item is None and candidate is chosen:
                    item = candidate
                    self.served += 1
                else:
                    keep.append((built, k, candidate))
            if item is None and key != self._want and len(keep) >= self._size:
                # The runs changed their limits: make room for a sandbox that fits them.
                self._discard_later(keep.popleft()[2])
            self._want = key
            self._ready = keep
            self._ahead = min(max(ahead, 0), MAX_AHEAD)
            # No refill yet: building a sandbox now would compete with this run's set-up for the
            # CPU and the GIL (the fork and exec of bubblewrap hold it). running() asks for the
            # announced runs' sandboxes once its program runs, done() for spares once it is over.
            return item

    def running(self) -> None:
        """The run that took a sandbox handed it its job; its thread now waits for the program.
        Time to build the sandboxes of the runs announced to follow it."""
        with self._cond:
            if self._ahead > len(self._ready):
                self._cond.notify_all()

    def expect(self, key: K, count: int) -> None:
        """`count` runs with `key` will come soon (a program about to compile, its test cases
        next): their sandboxes are built from the next running() on (the compiler's start: not
        before, so that building them does not delay the compile's own set-up). `count` 0: none
        will come after all; sandboxes built for them beyond the spares are destroyed."""
        with self._cond:
            self._want = key
            self._ahead = min(max(count, 0), MAX_EXPECTED)
            while len(self._ready) > self._target():
                self._discard_later(self._ready.pop()[2])  # the newest: built for the runs announced

    def done(self) -> None:
        """A run finished: time to top the pool up again."""
        with self._cond:
            self._ahead = 0  # the next take says again how many follow
            self._cond.notify_all()

    def _target(self) -> int:
        return max(self._size, self._ahead)

    def ready_count(self, key: K | None = None, where: Callable[[T], bool] | None = None) -> int:
        """Sandboxes ready (for `key`, if given; those `where` accepts, if given)."""
        with self._cond:
            return sum(1 for _, k, t in self._ready if (key is None or k == key) and (where is None or where(t)))

    def _discard_later(self, item: T) -> None:
        t = threading.Thread(target=self._discard_now, args=(item,), daemon=True)
        self._discarding.add(t)
        t.start()

    def _discard_now(self, item: T) -> None:
        try:
            self._discard(item)
        finally:
            self._discarding.discard(threading.current_thread())

    def _fill(self) -> None:
        while True:
            with self._cond:
                while not self._closed and len(self._ready) >= self._target():
                    if not any(k == self._want for _, k, _ in self._ready):
                        # Full of sandboxes built for limits the runs no longer ask for (they
                        # changed while this thread was building): make room for one that fits.
                        self._discard_later(self._ready.popleft()[2])
                        break
                    self._cond.wait()
                if self._closed:
                    return
                key, soon = self._want, self._ahead > 0
            try:
                item = self._build(key, soon)
                self._failures = 0
            except NoFreeSlot:
                with self._cond:
                    self._cond.wait(_NO_SLOT_WAIT_S)
                continue
            except Exception:
                self._failures += 1
                log.exception("could not pre-build a sandbox (attempt %d)", self._failures)
                time.sleep(min(0.1 * 2**self._failures, 30.0))
                continue
            with self._cond:
                if self._closed:
                    self._discard(item)
                    return
                self._ready.append((time.monotonic(), key, item))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            items = [item for _, _, item in self._ready]
            self._ready.clear()
            self._cond.notify_all()
        for item in items:
            self._discard(item)
        for t in list(self._discarding):  # a discard cut short at exit would leave zombies
            t.join(10.0)
