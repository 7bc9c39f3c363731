"""The process-wide objects (database, Redis, event bus, worker registry), built once from settings.

In the embedded mode the API and the in-process worker share one Runtime; in the distributed
mode each API or worker process builds its own from the same environment.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import redis

from .config import Settings, load_settings
from .db import Database
from .infra.metrics_store import ExecutionMetricsStore, MemoryMetricsStore, RedisMetricsStore
from .infra.registry import MemoryWorkerRegistry, RedisWorkerRegistry, WorkerRegistry
from .streaming.bus import EventBus, MemoryEventBus, RedisEventBus
from .streaming.stdin import MemoryStdinChannels, RedisStdinChannels, StdinChannels


@dataclass
class Runtime:
    settings: Settings
    db: Database
    redis: redis.Redis | None
    events: EventBus
    registry: WorkerRegistry
    stdin: StdinChannels
    metrics: ExecutionMetricsStore


_lock = threading.Lock()
_current: Runtime | None = None


def redis_client(url: str) -> redis.Redis:
    # Short timeouts: a hung Redis must turn into an error quickly, not a hung request.
    return redis.Redis.from_url(
        url, socket_connect_timeout=1, socket_timeout=5, health_check_interval=15,
        retry_on_timeout=False,
    )


def build_runtime(settings: Settings) -> Runtime:
    db = Database(settings)
    if settings.redis_url:
        client = redis_client(settings.redis_url)
        return Runtime(settings, db, client, RedisEventBus(client), RedisWorkerRegistry(client),
                       RedisStdinChannels(client, settings.max_stdin_bytes), RedisMetricsStore(client))
    return Runtime(settings, db, None, MemoryEventBus(), MemoryWorkerRegistry(),
                   MemoryStdinChannels(settings.max_stdin_bytes), MemoryMetricsStore())


def init_runtime(settings: Settings) -> Runtime:
    global _current
    with _lock:
        if _current is not None and _current.settings == settings:
            return _current
        _current = build_runtime(settings)
        return _current


def runtime() -> Runtime:
    """The current runtime, built from the environment on first use."""
    if _current is None:
        return init_runtime(load_settings())
    return _current


def reset_runtime() -> None:
    global _current
    with _lock:
        if _current is not None:
            _current.db.dispose()
        _current = None
