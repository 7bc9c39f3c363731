"""Which workers are alive: each worker process writes a heartbeat with a time to live.

Used by the reconciler (a RUNNING execution whose worker has no heartbeat was lost), by
`/health/celery`, `/metrics` (worker CPU and memory) and the admin statistics.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Protocol

import psutil
import redis

PREFIX = "livecode:worker:"
# Wall-clock time this process started (read at import, so before it could claim any run; not
# psutil's create_time, which is only as exact as the kernel's whole-second boot time).
BOOTED_AT = time.time()


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


def process_stats(active_runs: int, concurrency: int) -> dict[str, Any]:
    proc = psutil.Process(os.getpid())
    with proc.oneshot():
        cpu = proc.cpu_times()
        return {
            "pid": proc.pid,
            "host": os.uname().nodename,
            "cpu_seconds": cpu.user + cpu.system,
            "rss_bytes": proc.memory_info().rss,
            "active": active_runs,
            "concurrency": concurrency,
            "ts": time.time(),
            # When this process started: a run a worker of the same name began before this was
            # begun by a previous incarnation that died (a restart under the same node name).
            "boot": BOOTED_AT,
        }


class Heartbeat(threading.Thread):
    """Background thread that keeps this worker's heartbeat fresh until stopped."""

    def __init__(
        self, registry: WorkerRegistry, name: str, interval_s: float, ttl_s: int,
        info: Any,  # Callable[[], dict]
    ) -> None:
        super().__init__(name="livecode-heartbeat", daemon=True)
        self.registry, self.worker_name = registry, name
        self.interval_s, self.ttl_s, self.info = interval_s, ttl_s, info
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.registry.beat(self.worker_name, self.info(), self.ttl_s)
            except Exception:  # noqa: BLE001 - a missed beat is retried on the next tick
                pass
            self.stopped.wait(self.interval_s)

    def stop(self) -> None:
        self.stopped.set()


_identity: str | None = None


def set_identity(name: str) -> None:
    """The name this process's heartbeat uses; executions it claims record the same name."""
    global _identity
    _identity = name


def identity(default: str = "worker") -> str:
    return _identity or default
