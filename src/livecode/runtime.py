"""The process-wide objects, built once from settings: the database and every piece that lives in
Redis in the distributed mode and in memory in the embedded one.

This is the one place that decides between the two: each piece is a port (a Protocol) with a
Redis and an in-process implementation, and nothing else asks which mode it runs in.

In the embedded mode the API and the in-process worker share one Runtime; in the distributed
mode each API or worker process builds its own from the same environment.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import redis

from .config import Settings, load_settings
from .db import Database
from .infra.broker import BrokerView, MemoryBroker, RedisBroker
from .infra.languages import LanguageCatalog, LocalLanguages, WorkerLanguages
from .infra.locks import ClusterLock, ProcessLock, RedisLock
from .infra.metrics_store import ExecutionMetricsStore, MemoryMetricsStore, RedisMetricsStore
from .infra.parking import DeadLetterParking, NoParking, RedisParking
from .infra.registry import MemoryWorkerRegistry, RedisWorkerRegistry, WorkerRegistry
from .streaming.bus import EventBus, MemoryEventBus, RedisEventBus
from .streaming.collab_log import CollabLog, MemoryCollabLog, RedisCollabLog
from .streaming.stdin import MemoryStdinChannels, RedisStdinChannels, StdinChannels


@dataclass
class LimiterStorage:
    """Flask-Limiter's storage: the counters every API process shares, or this process's memory."""

    uri: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    events: EventBus  # execution events: status, output, result, end
    stdin: StdinChannels  # interactive input, from the WebSocket to the sandbox
    registry: WorkerRegistry  # the workers' heartbeats
    metrics: ExecutionMetricsStore  # the workers' execution figures, read at /metrics
    broker: BrokerView  # what waits in the queues
    locks: ClusterLock  # one process at a time for the periodic jobs
    dead_letters: DeadLetterParking  # dead letters the database could not take
    limiter_storage: LimiterStorage  # rate-limit counters
    languages: LanguageCatalog  # the languages runs may use (the live workers', or this process's)
    collab_log: CollabLog  # co-edited documents' updates, shared by the API processes (services/collab.py)


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
        registry = RedisWorkerRegistry(client)
        return Runtime(
            settings, db,
            events=RedisEventBus(client),
            stdin=RedisStdinChannels(client, settings.max_stdin_bytes),
            registry=registry,
            metrics=RedisMetricsStore(client),
            broker=RedisBroker(client, settings.redis_url),
            locks=RedisLock(client),
            dead_letters=RedisParking(client),
            # Shorter than the defaults so a Redis outage is a quick 503, not a hung request.
            limiter_storage=LimiterStorage(settings.redis_url, {"socket_connect_timeout": 1, "socket_timeout": 5}),
            languages=WorkerLanguages(registry),
            collab_log=RedisCollabLog(client, settings.collab_doc_ttl_s),
        )
    return Runtime(
        settings, db,
        events=MemoryEventBus(),
        stdin=MemoryStdinChannels(settings.max_stdin_bytes),
        registry=MemoryWorkerRegistry(),
        metrics=MemoryMetricsStore(),
        broker=MemoryBroker(db),
        locks=ProcessLock(),
        dead_letters=NoParking(),
        limiter_storage=LimiterStorage("memory://"),
        languages=LocalLanguages(),  # embedded, this process is the worker: it knows its toolchains
        collab_log=MemoryCollabLog(settings.collab_doc_ttl_s),
    )


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
