"""Shared helpers for the benchmarks: start a system, summarise latencies, describe the machine."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from typing import Any

from tests.conftest import Cluster, base_env, start_cluster
from tests.support.procs import PostgresServer, RedisServer, port_open, start_embedded, wait_workers


def machine() -> str:
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, {platform.system()} {platform.release()}"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(values_ms),
        "median_ms": round(statistics.median(values_ms), 2),
        "p95_ms": round(pct(values_ms, 95), 2),
        "p99_ms": round(pct(values_ms, 99), 2),
        "max_ms": round(max(values_ms), 2),
    }


class Stack:
    """A distributed system (PostgreSQL, Redis, API, workers) for a benchmark run."""

    def __init__(self, workers: int = 2, api_workers: int = 2, **env: str) -> None:
        self.servers: list[Any] = []
        pg = "postgresql://postgres@127.0.0.1:5432/postgres"
        if not port_open(5432):
            server = PostgresServer().start()
            self.servers.append(server)
            pg = server.url
        redis_url = "redis://127.0.0.1:6379/12"
        if not port_open(6379):
            rserver = RedisServer().start()
            self.servers.append(rserver)
            redis_url = rserver.url
        self.cluster: Cluster = start_cluster(pg, redis_url, workers=workers, api_workers=api_workers, **env)

    @property
    def base(self) -> str:
        return self.cluster.base

    def close(self) -> None:
        self.cluster.stop()
        for s in self.servers:
            s.destroy()


def embedded_stack(data_dir: str, **env: str) -> Cluster:
    e = base_env(LIVECODE_DATA_DIR=data_dir, **env)
    e.pop("SECRET_KEY")
    proc, base = start_embedded(e)
    wait_workers(base, 1)
    return Cluster(base, e, proc)


def have(binary: str) -> bool:
    return subprocess.run(["sh", "-c", f"command -v {binary}"], capture_output=True).returncode == 0
