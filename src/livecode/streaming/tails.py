"""The API's side of the bus: one blocking read per followed execution, shared by its followers."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from .bus import READ_COUNT, Event, EventBus, Finish, events_after, parse_id

log = logging.getLogger(__name__)


class _Tail:
    """The recent events of one execution, kept by one thread that follows the bus."""

    def __init__(self, base: tuple[int, int], cursor: str | None) -> None:
        self.cond = threading.Condition()
        self.base = base  # every event after this id, up to `events[-1]`, is in `events`
        self.cursor = cursor
        self.events: list[Event] = []
        self.keys: list[tuple[int, int]] = []
        self.last_used = time.monotonic()
        self.alive = True


class SharedTails:
    """For an API process: all followers of one execution share one blocking bus read.

    Without it every SSE/WebSocket client issues its own XREAD and decodes every event; with it
    one thread per followed execution reads, keeps the last `keep` events, and wakes the
    followers. A follower whose cursor is older than that window (a replay) reads the bus
    directly, in bounded pages, until it reaches the window. Memory: `keep` events per followed
    execution, whatever the number of followers.
    """

    def __init__(self, bus: EventBus, keep: int = 1000, idle_s: float = 10.0, tick_ms: int = 1000) -> None:
        self.bus = bus
        self.keep = keep
        self.idle_s = idle_s
        self.tick_ms = tick_ms
        self._tails: dict[str, _Tail] = {}
        self._lock = threading.Lock()

    def publish(self, execution_id: str, kind: str, data: dict[str, Any]) -> str:
        return self.bus.publish(execution_id, kind, data)

    def publish_many(self, execution_id: str, events: list[tuple[str, dict[str, Any]]]) -> list[str]:
        return self.bus.publish_many(execution_id, events)

    def publish_each(self, execution_ids: list[str], kind: str, data: dict[str, Any],
                     pushes: Sequence[tuple[str, str]] = ()) -> None:
        self.bus.publish_each(execution_ids, kind, data, pushes)

    def read_last(self, execution_id: str) -> Event | None:
        return self.bus.read_last(execution_id)

    def watch_finished(self, execution_id: str) -> Finish:
        return self.bus.watch_finished(execution_id)

    def unwatch_finished(self, execution_id: str, event: threading.Event) -> None:
        self.bus.unwatch_finished(execution_id, event)

    def read(self, execution_id: str, after: str | None, block_ms: int, count: int = READ_COUNT) -> list[Event]:
        start = parse_id(after) if after else (0, 0)
        tail = self._tail(execution_id, start, after)
        if start < tail.base:
            return self.bus.read(execution_id, after, block_ms, count)  # replay: older than the window
        deadline = time.monotonic() + block_ms / 1000
        with tail.cond:
            while True:
                tail.last_used = time.monotonic()
                if not tail.alive or start < tail.base:
                    break
                found = events_after(tail.keys, tail.events, start, count)
                if found:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                tail.cond.wait(remaining)
        return self.bus.read(execution_id, after, max(0, int((deadline - time.monotonic()) * 1000)), count)

    def _tail(self, execution_id: str, start: tuple[int, int], after: str | None) -> _Tail:
        with self._lock:
            tail = self._tails.get(execution_id)
            if tail is None or not tail.alive:
                tail = self._tails[execution_id] = _Tail(start, after)
                threading.Thread(target=self._follow, args=(execution_id, tail), daemon=True,
                                 name=f"tail-{execution_id[:8]}").start()
            return tail

    def _follow(self, execution_id: str, tail: _Tail) -> None:
        try:
            while time.monotonic() - tail.last_used < self.idle_s:
                try:
                    events = self.bus.read(execution_id, tail.cursor, self.tick_ms)
                except Exception:  # noqa: BLE001 - followers just see nothing new meanwhile
                    log.debug("tail read failed", exc_info=True)
                    time.sleep(0.5)
                    continue
                if not events:
                    continue
                with tail.cond:
                    tail.events.extend(events)
                    tail.keys.extend(parse_id(e[0]) for e in events)
                    tail.cursor = events[-1][0]
                    if len(tail.events) > 2 * self.keep:
                        cut = len(tail.events) - self.keep
                        tail.base = tail.keys[cut - 1]
                        del tail.events[:cut], tail.keys[:cut]
                    tail.cond.notify_all()
        finally:
            with self._lock:
                if self._tails.get(execution_id) is tail:
                    del self._tails[execution_id]
            with tail.cond:
                tail.alive = False
                tail.cond.notify_all()
