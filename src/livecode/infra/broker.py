"""What is waiting in the broker: queue lengths (metrics, admin statistics), the executions its
messages carry (the reconciler), and whether it answers (/health).

Distributed: Redis, read directly (kombu's Redis transport keeps a queue as a list, delivered
messages in `unacked`). Embedded: the broker lives in this process's memory and cannot be looked
into; what waits in it is the QUEUED rows.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Protocol

import redis
from sqlalchemy import func, select

from ..db import Database
from ..models import Execution, ExecutionStatus

# Kombu's Redis transport keeps a queue's messages of priority p>0 in "<queue>\x06\x16<p>".
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


class BrokerView(Protocol):
    def queue_lengths(self, queues: dict[str, str]) -> dict[str, int]:
        """Messages waiting in each queue; `queues` maps each queue to the priority it carries."""
        ...

    def carried_ids(self, queues: list[str], fresh_after: float) -> set[str] | None:
        """Ids of executions some message still carries (waiting, or delivered after the wall-clock
        time `fresh_after` and not acknowledged). None when the broker cannot be looked into."""
        ...

    def ping(self) -> dict[str, Any]:
        """Details for /health; raises when the broker does not answer."""
        ...


class RedisBroker:
    def __init__(self, client: redis.Redis, url: str) -> None:
        self.client = client
        self.url = url
        self._health: redis.Redis | None = None
        self._lock = threading.Lock()

    def queue_lengths(self, queues: dict[str, str]) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for q in queues:
            pipe.llen(q)
            for step in _PRIORITY_STEPS:
                pipe.llen(f"{q}{_PRIORITY_SEP}{step}")
        counts = pipe.execute()
        width = 1 + len(_PRIORITY_STEPS)
        return {q: int(sum(counts[i * width : (i + 1) * width])) for i, q in enumerate(queues)}

    def carried_ids(self, queues: list[str], fresh_after: float) -> set[str] | None:
        ids: set[str] = set()
        for queue in queues:
            for raw in self.client.lrange(queue, 0, -1):  # type: ignore[union-attr]
                ids.add(_message_task_id(raw))
        # A delivered message stays in `unacked` until its worker acknowledges it, or, if that
        # worker died, until the visibility timeout (an hour) gives it back.
        delivered = dict(self.client.zrange("unacked_index", 0, -1, withscores=True))  # type: ignore[arg-type]
        for tag, raw in self.client.hgetall("unacked").items():  # type: ignore[union-attr]
            if delivered.get(tag, 0.0) < fresh_after:
                continue
            try:
                message = json.loads(raw)[0]
                ids.add(message.get("headers", {}).get("id", ""))
            except (ValueError, IndexError, AttributeError, TypeError):
                continue
        return ids

    def ping(self) -> dict[str, Any]:
        # A client of its own with a one-second timeout: /health answers quickly when Redis hangs.
        with self._lock:
            if self._health is None:
                self._health = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        return {"broker": "redis", "ping": bool(self._health.ping())}


class MemoryBroker:
    def __init__(self, db: Database) -> None:
        self.db = db

    def queue_lengths(self, queues: dict[str, str]) -> dict[str, int]:
        with self.db.read() as s:
            rows = s.execute(
                select(Execution.priority, func.count())
                .where(Execution.status == ExecutionStatus.QUEUED.value)
                .group_by(Execution.priority)
            ).all()
        by_priority = {p: int(n) for p, n in rows}
        return {q: by_priority.get(p, 0) for q, p in queues.items()}

    def carried_ids(self, queues: list[str], fresh_after: float) -> set[str] | None:
        return None

    def ping(self) -> dict[str, Any]:
        return {"broker": "in-process (embedded)"}


def _message_task_id(raw: bytes | str) -> str:
    try:
        return str(json.loads(raw).get("headers", {}).get("id", ""))
    except (ValueError, AttributeError):
        return ""
