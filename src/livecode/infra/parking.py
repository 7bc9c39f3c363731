"""Where a dead letter waits when the database cannot take it (worker/deadletter.py).

Distributed: a Redis list, moved into the table by the reconciler once the database answers.
Embedded: the database is this process's own SQLite file and there is nowhere else to park; the
execution's row stays QUEUED and the reconciler queues it again.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import redis

PENDING_KEY = "livecode:dead-letters:pending"


class DeadLetterParking(Protocol):
    def park(self, letter: dict[str, Any]) -> bool:
        """Keep the letter for later; False when there is no place to keep it."""
        ...

    def parked(self) -> list[bytes]:
        """The parked letters (JSON), oldest first."""
        ...

    def remove(self, raw: bytes) -> None:
        """Forget one parked letter, once it is stored (or proved unreadable)."""
        ...


class RedisParking:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def park(self, letter: dict[str, Any]) -> bool:
        self.client.rpush(PENDING_KEY, json.dumps(letter))
        return True

    def parked(self) -> list[bytes]:
        return list(self.client.lrange(PENDING_KEY, 0, -1))  # type: ignore[arg-type]

    def remove(self, raw: bytes) -> None:
        self.client.lrem(PENDING_KEY, 1, raw)  # type: ignore[arg-type]


class NoParking:
    def park(self, letter: dict[str, Any]) -> bool:
        return False

    def parked(self) -> list[bytes]:
        return []

    def remove(self, raw: bytes) -> None:
        pass
