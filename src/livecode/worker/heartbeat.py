"""This worker process's heartbeat: what it tells the registry (infra/registry.py), and its name."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psutil

from ..infra.registry import WorkerRegistry

# Wall-clock time this process started (read at import, so before it could claim any run; not
# psutil's create_time, which is only as exact as the kernel's whole-second boot time).
BOOTED_AT = time.time()


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
