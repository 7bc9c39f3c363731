"""`POST .../execute` and `GET /api/v1/executions/{id}` alone (issue 11's API targets): the wall
median seen by a client and the API process's CPU per request (from /proc, so other load on the
host does not count), N sequential requests of each on bench_cost's distributed stack.

Each POST runs the same unchanged session (no history version to make) and waits for the run to
end, asked of PostgreSQL directly (not through the API, whose CPU is counted), before the next.
A benchmark, never a pass/fail test. From the repository root:

    .venv/bin/python -m bench.bench_api_requests --requests 100 --redis-url redis://127.0.0.1:6379/12
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import psycopg
import requests

from bench.bench_cost import HELLO, PG_ADMIN, CpuMeter, redis_pid, start_stack
from bench.common import machine
from tests.support.client import TERMINAL, ApiClient


def measure(base: str, meter: CpuMeter, pg: psycopg.Connection[Any], n: int) -> dict[str, float]:
    api = ApiClient(base)
    sid = api.create_session(HELLO)["session_id"]
    http = requests.Session()
    url = f"{base}/api/v1/executions/session/{sid}/execute"

    def ended(eid: str) -> None:
        while pg.execute("SELECT status FROM executions WHERE id = %s", (eid,)).fetchone()[0] not in TERMINAL:  # type: ignore[index]
            time.sleep(0.002)

    for _ in range(5):  # warm the path (pool, caches, prepared statements)
        ended(http.post(url, json={}, timeout=60).json()["execution_id"])
    posts, eid = [], ""
    a = meter.snapshot()
    for _ in range(n):
        t0 = time.perf_counter()
        r = http.post(url, json={}, timeout=60)
        posts.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 202, r.text
        eid = r.json()["execution_id"]
        ended(eid)
    post_cpu = CpuMeter.delta_ms(a, meter.snapshot())["api"] / n
    gets = []
    a = meter.snapshot()
    for _ in range(3 * n):
        t0 = time.perf_counter()
        http.get(f"{base}/api/v1/executions/{eid}", timeout=60)
        gets.append((time.perf_counter() - t0) * 1000)
    get_cpu = CpuMeter.delta_ms(a, meter.snapshot())["api"] / (3 * n)
    return {
        "post_median_ms": statistics.median(posts),
        "post_api_cpu_ms": post_cpu,
        "get_median_ms": statistics.median(gets),
        "get_api_cpu_ms": get_cpu,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=100, help="POSTs (and 3x as many GETs); default %(default)s")
    p.add_argument(
        "--redis-url",
        default=os.environ.get("LIVECODE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"),
        help="the Redis database the bench may flush (default %(default)s)",
    )
    args = p.parse_args()
    load = os.getloadavg()[0]
    stack = start_stack(args.redis_url, False)
    pg = psycopg.connect(stack.database_url, autocommit=True)
    try:
        meter = CpuMeter(
            stack.api.proc.pid,
            stack.worker.proc.pid,
            redis_pid(stack.env["REDIS_URL"]),
            psycopg.connect(PG_ADMIN, autocommit=True),
            stack.database,
        )
        ApiClient(stack.base).run(HELLO)  # warm the worker and its sandbox pool
        r = measure(stack.base, meter, pg, args.requests)
    finally:
        pg.close()
        stack.close()
    print(f"machine: {machine()}; load average before {load:.1f}, after {os.getloadavg()[0]:.1f}")
    print(json.dumps({k: round(v, 2) for k, v in r.items()}))


if __name__ == "__main__":
    main()
