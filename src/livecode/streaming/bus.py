"""Execution events (status changes and output chunks) from workers to API processes.

Distributed: one Redis stream per execution, so a client on any API process can follow a run on
any worker, replay what it missed from an event id (SSE `Last-Event-ID`) and then block for the
live tail. Embedded: the same interface over an in-process store.

Event kinds: "status" {status, attempt?}, "output" {stream: stdout|stderr|compile, text},
"stage" {stage: "run"} (a compiled program's run stage starts: its compiler is done),
"test_started" {index, name} and "test_finished" {the test's result, verdict included} (a run
with test cases), "result" {the execution as GET /api/v1/executions/{id} returns it}, "end" {status}.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from .. import redis_split

log = logging.getLogger(__name__)

Event = tuple[str, str, dict[str, Any]]  # (event id, kind, data)

STREAM_TTL_S = 3600
STREAM_MAXLEN = 20_000
READ_COUNT = 100  # events per read: what one follower holds in memory at a time
TERMINAL_KINDS = frozenset({"end"})
# The finished execution rides on the "finished" notification when its JSON is at most this long,
# so a blocking wait answers without reading the row again; a larger one is read from the database.
FINISHED_ROW_MAX = 16 * 1024


class EventBus(Protocol):
    def publish(self, execution_id: str, kind: str, data: dict[str, Any]) -> str: ...

    def publish_many(self, execution_id: str, events: list[tuple[str, dict[str, Any]]]) -> list[str]:
        """Several events in order, in one round trip (the run's final status, result and end)."""
        ...

    def publish_each(self, execution_ids: list[str], kind: str, data: dict[str, Any],
                     pushes: Sequence[tuple[str, str]] = ()) -> None:
        """The same event to several executions, in one round trip (a batch's QUEUED). `pushes`
        (list, value): LPUSHed after the events in that round trip (the runs' broker messages);
        only a bus on Redis takes them."""
        ...

    def read(self, execution_id: str, after: str | None, block_ms: int, count: int = READ_COUNT) -> list[Event]:
        """Events after id `after` (None: from the start), oldest first, at most `count`;
        waits up to `block_ms` for the first one when there is none yet (0: do not wait)."""
        ...

    def read_last(self, execution_id: str) -> Event | None:
        """The newest event, or None when the stream is empty or gone."""
        ...

    def watch_finished(self, execution_id: str) -> Finish:
        """An Event set when the execution's "end" is published (and, spuriously, when the
        notifications may have been missed: the waiter re-reads the row). Pair with unwatch.
        Its `row` is the finished execution when the notification carried it."""
        ...

    def unwatch_finished(self, execution_id: str, event: threading.Event) -> None: ...


def _key(execution_id: str) -> str:
    return f"livecode:events:{execution_id}"


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Finish(threading.Event):
    """A waiter's wake-up. `row`: the finished execution as GET returns it (text encoding), when
    the notification carried it (a small result); None: read it from the database."""

    def __init__(self) -> None:
        super().__init__()
        self.row: dict[str, Any] | None = None
        # Called after every set(), in the notifying thread (a parked wait: it only hands the
        # wake-up to the server's threads). None: a thread waits on the event instead.
        self.on_set: Callable[[], None] | None = None

    def set(self) -> None:
        super().set()
        on_set = self.on_set
        if on_set is not None:
            on_set()


def _result_index(events: list[tuple[str, dict[str, Any]]]) -> int | None:
    """Where the "result" event (the finished execution) is among `events`, if there."""
    return next((i for i, (kind, _) in enumerate(events) if kind == "result"), None)


def finished_message(execution_id: str, events: list[tuple[str, dict[str, Any]]], dumped: list[str]) -> str:
    """The "finished" notification: the id, or {"id", "row"} when the events hold a small result."""
    i = _result_index(events)
    if i is not None and len(dumped[i]) <= FINISHED_ROW_MAX:
        return f'{{"id":{json.dumps(execution_id)},"row":{dumped[i]}}}'
    return execution_id


def parse_finished(message: str) -> tuple[str, dict[str, Any] | None]:
    """The (id, row or None) of a "finished" notification (a bare id from an older worker too)."""
    if not message.startswith("{"):
        return message, None
    data = json.loads(message)
    return str(data["id"]), data.get("row")


class FinishWaiters:
    """Threads of this process waiting for executions to end (the blocking execute), by id.
    One notification wakes every waiter of that id; `notify_all` wakes them all so that each
    re-reads its row once (after notifications may have been missed)."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[Finish]] = {}
        self._lock = threading.Lock()

    def register(self, execution_id: str) -> Finish:
        event = Finish()
        with self._lock:
            self._waiting.setdefault(execution_id, []).append(event)
        return event

    def unregister(self, execution_id: str, event: threading.Event) -> None:
        with self._lock:
            events = self._waiting.get(execution_id)
            if events is not None:
                events[:] = [e for e in events if e is not event]
                if not events:
                    del self._waiting[execution_id]

    def notify(self, execution_id: str, row: dict[str, Any] | None = None) -> None:
        with self._lock:
            events = list(self._waiting.get(execution_id, ()))
        for e in events:
            e.row = row
            e.set()

    def notify_all(self) -> None:
        with self._lock:
            events = [e for es in self._waiting.values() for e in es]
        for e in events:
            e.set()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(es) for es in self._waiting.values())


class RedisEventBus:
    """Besides the streams, "end" is announced on one pub/sub channel (per Redis database): an
    API process listens there with one thread and one connection, whatever the number of
    requests waiting, instead of one blocking read per waiter."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        db = client.connection_pool.connection_kwargs.get("db", 0)
        self.finished_channel = f"livecode:finished:{db}"  # channels are not per database
        self.finished = FinishWaiters()
        self._listener: threading.Thread | None = None
        self._listener_lock = threading.Lock()

    def publish(self, execution_id: str, kind: str, data: dict[str, Any]) -> str:
        return self.publish_many(execution_id, [(kind, data)])[0]

    def publish_many(self, execution_id: str, events: list[tuple[str, dict[str, Any]]]) -> list[str]:
        key = _key(execution_id)
        dumped = [json.dumps(data) for _, data in events]
        # The commands as redis_split packs them, not through a redis-py Pipeline (its objects and
        # per-command callbacks cost ~30 us of the 110 of a run's final events, measured hot);
        # the same commands in one round trip. Resent only when they never reached Redis: after a
        # stalled read Redis may have run them, and a stream's readers would see each event twice.
        commands: list[tuple[Any, ...]] = [
            ("XADD", key, "MAXLEN", "~", STREAM_MAXLEN, "*", "k", kind, "d", text)
            for (kind, _), text in zip(events, dumped, strict=True)
        ]
        commands.append(("EXPIRE", key, STREAM_TTL_S))
        if any(kind in TERMINAL_KINDS for kind, _ in events):  # same round trip, after the XADDs
            commands.append(("PUBLISH", self.finished_channel, finished_message(execution_id, events, dumped)))
        replies = redis_split.send(self.client, commands, resend_after_write=False).replies()
        return [_text(i) for i in replies[: len(events)]]

    def publish_each(self, execution_ids: list[str], kind: str, data: dict[str, Any],
                     pushes: Sequence[tuple[str, str]] = ()) -> None:
        self.send_each(execution_ids, kind, data, pushes).replies()

    def send_each(self, execution_ids: list[str], kind: str, data: dict[str, Any],
                  pushes: Sequence[tuple[str, str]] = ()) -> redis_split.Pending:
        """publish_each's commands written to Redis now; its replies are read (and a failure
        raised) by the returned Pending's replies(), which the caller may leave for later."""
        text = json.dumps(data)
        commands: list[tuple[Any, ...]] = []
        for execution_id in execution_ids:
            key = _key(execution_id)
            commands.append(("XADD", key, "MAXLEN", "~", STREAM_MAXLEN, "*", "k", kind, "d", text))
            commands.append(("EXPIRE", key, STREAM_TTL_S))
        commands += [("LPUSH", key, value) for key, value in pushes]
        return redis_split.send(self.client, commands)

    def watch_finished(self, execution_id: str) -> Finish:
        with self._listener_lock:  # started by the first waiter: workers never listen
            if self._listener is None:
                self._listener = threading.Thread(target=self._listen, name="finished-listener", daemon=True)
                self._listener.start()
        return self.finished.register(execution_id)

    def unwatch_finished(self, execution_id: str, event: threading.Event) -> None:
        self.finished.unregister(execution_id, event)

    def _listen(self) -> None:
        while True:
            pubsub = self.client.pubsub()
            try:
                pubsub.subscribe(self.finished_channel)
                while True:
                    msg = pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    if msg["type"] == "message":
                        self.finished.notify(*parse_finished(_text(msg["data"])))
                    elif msg["type"] == "subscribe":
                        # (Re)subscribed: what ended before this was not heard; waiters re-read.
                        self.finished.notify_all()
            except Exception:  # noqa: BLE001 - waiters fall back to their deadline meanwhile
                log.warning("finished-listener lost Redis; reconnecting", exc_info=True)
                time.sleep(0.5)
            finally:
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001
                    pass

    def read(self, execution_id: str, after: str | None, block_ms: int, count: int = READ_COUNT) -> list[Event]:
        # block=None means "don't block"; block=0 would mean "forever" to Redis.
        reply: Any = self.client.xread({_key(execution_id): after or "0-0"}, count=count, block=block_ms or None)
        return [_entry(e) for _stream, entries in reply or [] for e in entries]

    def read_last(self, execution_id: str) -> Event | None:
        reply: Any = self.client.xrevrange(_key(execution_id), count=1)
        return _entry(reply[0]) if reply else None


def _entry(entry: Any) -> Event:
    event_id, fields = entry
    kind = _text(fields.get(b"k", fields.get("k", "")))
    return _text(event_id), kind, json.loads(fields.get(b"d", fields.get("d", "{}")))


def events_after(keys: list[tuple[int, int]], events: list[Event], start: tuple[int, int] | None,
                 count: int) -> list[Event]:
    """From a window of events sorted by id (with their parsed ids), at most `count` after
    `start` (None: from the first); [] when there is none yet."""
    i = bisect.bisect_right(keys, start) if start else 0
    return events[i : i + count]


def parse_id(event_id: str) -> tuple[int, int]:
    """A bus event id "<ms>-<seq>" as a sortable pair; ValueError if it is not one."""
    a, sep, b = event_id.partition("-")
    if not a.isdigit() or (sep and not b.isdigit()):
        raise ValueError(f"not an event id: {event_id!r}")
    return int(a), int(b or 0)


@dataclass
class _MemoryStream:
    events: list[Event] = field(default_factory=list)
    keys: list[tuple[int, int]] = field(default_factory=list)
    size: int = 0  # approximate bytes held
    touched: float = 0.0


class MemoryEventBus:
    """In-process bus for the embedded mode. Bounded like the Redis one: events per execution,
    an expiry after the last event, and a total size (oldest executions are dropped first)."""

    def __init__(self, max_executions: int = 1000, max_bytes: int = 64 * 1024 * 1024,
                 ttl_s: float = STREAM_TTL_S) -> None:
        self._streams: OrderedDict[str, _MemoryStream] = OrderedDict()
        self._cond = threading.Condition()
        self._seq = 0
        self._max = max_executions
        self._max_bytes = max_bytes
        self._ttl = ttl_s
        self._bytes = 0
        self.finished = FinishWaiters()

    def publish(self, execution_id: str, kind: str, data: dict[str, Any], *,
                result: dict[str, Any] | None = None) -> str:
        size = len(json.dumps(data)) + 64
        with self._cond:
            self._seq += 1
            key = (int(time.time() * 1000), self._seq)
            event_id = f"{key[0]}-{key[1]}"
            stream = self._streams.get(execution_id)
            if stream is None:
                stream = self._streams[execution_id] = _MemoryStream()
            self._streams.move_to_end(execution_id)
            stream.touched = time.monotonic()
            stream.events.append((event_id, kind, data))
            stream.keys.append(key)
            stream.size += size
            self._bytes += size
            if len(stream.events) > STREAM_MAXLEN:  # trim the oldest, as XADD MAXLEN does
                dropped = len(json.dumps(stream.events[0][2])) + 64
                self._bytes -= dropped
                stream.size -= dropped
                del stream.events[0], stream.keys[0]
            self._evict()
            self._cond.notify_all()
        if kind in TERMINAL_KINDS:
            self.finished.notify(execution_id, result)
        return event_id

    def publish_many(self, execution_id: str, events: list[tuple[str, dict[str, Any]]]) -> list[str]:
        # The waiters of the end get the result published with it (in process: no size limit).
        i = _result_index(events)
        result = events[i][1] if i is not None else None
        return [self.publish(execution_id, kind, data, result=result) for kind, data in events]

    def publish_each(self, execution_ids: list[str], kind: str, data: dict[str, Any],
                     pushes: Sequence[tuple[str, str]] = ()) -> None:
        if pushes:
            raise ValueError("the in-process bus has no lists to push to")
        for execution_id in execution_ids:
            self.publish(execution_id, kind, data)

    def watch_finished(self, execution_id: str) -> Finish:
        return self.finished.register(execution_id)

    def unwatch_finished(self, execution_id: str, event: threading.Event) -> None:
        self.finished.unregister(execution_id, event)

    def _evict(self) -> None:
        now = time.monotonic()
        while self._streams:
            oldest_id, oldest = next(iter(self._streams.items()))
            over = len(self._streams) > self._max or (self._bytes > self._max_bytes and len(self._streams) > 1)
            if not over and now - oldest.touched < self._ttl:
                break
            del self._streams[oldest_id]
            self._bytes -= oldest.size

    def read(self, execution_id: str, after: str | None, block_ms: int, count: int = READ_COUNT) -> list[Event]:
        deadline = time.monotonic() + block_ms / 1000
        start = parse_id(after) if after else None
        with self._cond:
            while True:
                stream = self._streams.get(execution_id)
                found = events_after(stream.keys, stream.events, start, count) if stream is not None else []
                if found:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)

    def read_last(self, execution_id: str) -> Event | None:
        with self._cond:
            stream = self._streams.get(execution_id)
            return stream.events[-1] if stream and stream.events else None
