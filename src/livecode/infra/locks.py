"""Cluster-wide "one process at a time" for the periodic jobs (reconciler pass, storage cleanup):
a Redis key that lives for the interval in the distributed mode; in the embedded mode there is
one process, which always holds it."""

from __future__ import annotations

from typing import Protocol

import redis


class ClusterLock(Protocol):
    def try_take(self, key: str, holder: str, ttl_ms: int) -> bool:
        """True when `holder` may do the job now; the lock expires by itself after `ttl_ms`."""
        ...


class RedisLock:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def try_take(self, key: str, holder: str, ttl_ms: int) -> bool:
        return bool(self.client.set(key, holder, nx=True, px=max(ttl_ms, 100)))


class ProcessLock:
    def try_take(self, key: str, holder: str, ttl_ms: int) -> bool:
        return True
