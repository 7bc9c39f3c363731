"""A few sandboxes set up ahead of time, each used for exactly one run and then destroyed.

bubblewrap's set-up (namespaces, mounts, tmpfs) and the run's cgroup are done by a background
thread, off the request path. A pooled sandbox never carries state between runs: it is built
empty, takes one job through its launcher, and is killed with its cgroup afterwards.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
_MAX_IDLE_S = 300.0  # rebuild idle sandboxes now and then so none lingers for hours


class SandboxPool(Generic[T]):
    def __init__(self, build: Callable[[], T], discard: Callable[[T], None], size: int) -> None:
        self._build = build
        self._discard = discard
        self._size = size
        self._ready: collections.deque[tuple[float, T]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._failures = 0
        self.served = 0  # runs that got a pre-built sandbox
        # The filler thread is the sandboxes' parent: bwrap --die-with-parent follows the thread
        # that forked it, so this thread lives as long as the pool.
        self._thread = threading.Thread(target=self._fill, name="sandbox-pool", daemon=True)
        self._thread.start()

    def take(self) -> T | None:
        """A ready sandbox, or None (the caller then builds one on the request path)."""
        with self._cond:
            item = None
            while self._ready:
                built, candidate = self._ready.popleft()
                if time.monotonic() - built < _MAX_IDLE_S:
                    item = candidate
                    self.served += 1
                    break
                self._discard_later(candidate)
            # No refill yet: building a sandbox now would compete with this run for the CPU
            # (and the GIL). done() asks for it once the run is over.
            return item

    def done(self) -> None:
        """A run finished: time to top the pool up again."""
        with self._cond:
            self._cond.notify_all()

    def ready_count(self) -> int:
        with self._cond:
            return len(self._ready)

    def _discard_later(self, item: T) -> None:
        threading.Thread(target=self._discard, args=(item,), daemon=True).start()

    def _fill(self) -> None:
        while True:
            with self._cond:
                while not self._closed and len(self._ready) >= self._size:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                item = self._build()
                self._failures = 0
            except Exception:
                self._failures += 1
                log.exception("could not pre-build a sandbox (attempt %d)", self._failures)
                time.sleep(min(0.1 * 2**self._failures, 30.0))
                continue
            with self._cond:
                if self._closed:
                    self._discard(item)
                    return
                self._ready.append((time.monotonic(), item))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            items = [item for _, item in self._ready]
            self._ready.clear()
            self._cond.notify_all()
        for item in items:
            self._discard(item)
