"""Which workers are alive: each worker process writes a heartbeat with a time to live
(worker/heartbeat.py), kept in Redis or, embedded, in memory.

Used by the reconciler (a RUNNING execution whose worker has no heartbeat was lost), by
`/health/celery`, `/metrics` (worker CPU and memory) and the admin statistics.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Protocol

import redis

PREFIX = "livecode:worker:"


class WorkerRegistry(Protocol):
    def beat(self, name: str, info: dict[str, Any], ttl_s: int) -> None: ...

    def alive(self) -> dict[str, dict[str, Any]]: ...


class RedisWorkerRegistry:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def beat(self, name: str, info: dict[str, Any], ttl_s: int) -> None:
        self.client.set(PREFIX + name, json.dumps(info), ex=ttl_s)

    def alive(self) -> dict[str, dict[str, Any]]:
        keys = list(self.client.scan_iter(match=PREFIX + "*", count=500))
        if not keys:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for key, raw in zip(keys, self.client.mget(keys), strict=True):
            if raw is not None:
                name = (key.decode() if isinstance(key, bytes) else key)[len(PREFIX) :]
                out[name] = json.loads(raw)
        return out


class MemoryWorkerRegistry:
    def __init__(self) -> None:
        self._beats: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def beat(self, name: str, info: dict[str, Any], ttl_s: int) -> None:
        with self._lock:
            self._beats[name] = (time.monotonic() + ttl_s, info)

    def alive(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            return {n: info for n, (exp, info) in self._beats.items() if exp > now}
