"""Execution events (status changes and output chunks) from workers to API processes.

Distributed: one Redis stream per execution, so a client on any API process can follow a run on
any worker, replay what it missed from an event id (SSE `Last-Event-ID`) and then block for the
live tail. Embedded: the same interface over an in-process store.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

import redis

Event = tuple[str, str, dict[str, Any]]  # (event id, kind, data)

STREAM_TTL_S = 3600
STREAM_MAXLEN = 20_000
TERMINAL_KINDS = frozenset({"end"})


class EventBus(Protocol):
    def publish(self, execution_id: str, kind: str, data: dict[str, Any]) -> str: ...

    def read(self, execution_id: str, after: str | None, block_ms: int) -> list[Event]: ...


def _key(execution_id: str) -> str:
    return f"livecode:events:{execution_id}"


class RedisEventBus:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def publish(self, execution_id: str, kind: str, data: dict[str, Any]) -> str:
        key = _key(execution_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(key, {"k": kind, "d": json.dumps(data)}, maxlen=STREAM_MAXLEN, approximate=True)
        pipe.expire(key, STREAM_TTL_S)
        event_id = pipe.execute()[0]
        return event_id.decode() if isinstance(event_id, bytes) else str(event_id)

    def read(self, execution_id: str, after: str | None, block_ms: int) -> list[Event]:
        reply = self.client.xread(
            {_key(execution_id): after or "0-0"}, count=500, block=block_ms or None
        )
        events: list[Event] = []
        for _stream, entries in reply or []:
            for event_id, fields in entries:
                eid = event_id.decode() if isinstance(event_id, bytes) else event_id
                kind = fields[b"k"].decode() if b"k" in fields else fields["k"]
                raw = fields[b"d"] if b"d" in fields else fields["d"]
                events.append((eid, kind, json.loads(raw)))
        return events


class MemoryEventBus:
    """In-process bus for the embedded mode; bounded in executions kept and events each."""

    def __init__(self, max_executions: int = 1000) -> None:
        self._streams: OrderedDict[str, list[Event]] = OrderedDict()
        self._cond = threading.Condition()
        self._seq = 0
        self._max = max_executions

    def publish(self, execution_id: str, kind: str, data: dict[str, Any]) -> str:
        with self._cond:
            self._seq += 1
            event_id = f"{int(time.time() * 1000)}-{self._seq}"
            stream = self._streams.setdefault(execution_id, [])
            self._streams.move_to_end(execution_id)
            if len(stream) < STREAM_MAXLEN:
                stream.append((event_id, kind, data))
            while len(self._streams) > self._max:
                self._streams.popitem(last=False)
            self._cond.notify_all()
            return event_id

    def read(self, execution_id: str, after: str | None, block_ms: int) -> list[Event]:
        deadline = time.monotonic() + block_ms / 1000
        with self._cond:
            while True:
                stream = self._streams.get(execution_id, [])
                out = [e for e in stream if after is None or _after(e[0], after)]
                remaining = deadline - time.monotonic()
                if out or remaining <= 0:
                    return out
                self._cond.wait(remaining)


def _after(event_id: str, after: str) -> bool:
    def parse(v: str) -> tuple[int, int]:
        a, _, b = v.partition("-")
        return int(a or 0), int(b or 0)

    try:
        return parse(event_id) > parse(after)
    except ValueError:
        return True
