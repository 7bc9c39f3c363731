"""Cluster-wide "one process at a time" for the periodic jobs (reconciler pass, storage cleanup):
a Redis key that lives for the interval in the distributed mode; in the embedded mode there is
one process, which always holds it."""

from __future__ import annotations

from typing import Protocol

import redis


class ClusterLock(Protocol):
    def try_take(self, key: str, holder: str, interval_s: float) -> bool:
        """True when `holder` may do the job of this period now; the lock expires by itself a
        little before the next period (90 % of `interval_s`), so a holder that died frees it."""
        ...


class RedisLock:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def try_take(self, key: str, holder: str, interval_s: float) -> bool:
        return bool(self.client.set(key, holder, nx=True, px=max(int(interval_s * 900), 100)))


class ProcessLock:
    def try_take(self, key: str, holder: str, interval_s: float) -> bool:
        return True
