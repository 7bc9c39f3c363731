"""Issue 2's first benchmark, against the distributed system (PostgreSQL, Redis, API, 2 workers):

1. execute-to-result latency of a Python hello world (request sent -> COMPLETED readable),
   median and p95 over N sequential runs (the client polls every 2 ms);
2. executions per second with 2 workers (many sessions submitted at once);
3. autosave requests per second and p99 latency at 32 concurrent clients (wrk if installed,
   otherwise a Python thread pool, which itself costs CPU on the same 2 cores).

Run: .venv/bin/python -m bench.bench_core [--runs 100] [--throughput 200] [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.common import Stack, have, machine, summary
from tests.support.client import TERMINAL, ApiClient

HELLO = "print('Hello World!')"


def execute_latency(api: ApiClient, runs: int) -> dict[str, float]:
    sid = api.create_session(HELLO)["session_id"]
    http = requests.Session()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = http.post(f"{api.base}/api/v1/executions/session/{sid}/execute", json={})
        eid = r.json()["execution_id"]
        while True:
            data = http.get(f"{api.base}/api/v1/executions/{eid}").json()
            if data["status"] in TERMINAL:
                break
            time.sleep(0.002)
        samples.append((time.perf_counter() - t0) * 1000)
        assert data["status"] == "COMPLETED", data
    return summary(samples)


def throughput(api: ApiClient, count: int) -> dict[str, float]:
    sessions = [api.create_session(HELLO)["session_id"] for _ in range(count)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda sid: api.execute(sid).json()["execution_id"], sessions))
    # Wait for them in submission order, one poll at a time: polling all of them at once would
    # spend on the API the CPU the workers need (2 cores shared by everything).
    for eid in ids:
        while api.get_execution(eid)["status"] not in TERMINAL:
            time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    return {"executions": count, "seconds": round(elapsed, 2), "per_second": round(count / elapsed, 1)}


LUA = """
wrk.method = "PATCH"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"source_code": "print(\\'autosave\\')"}'
"""


def autosave(api: ApiClient, seconds: int, clients: int = 32) -> dict[str, object]:
    sid = api.create_session(HELLO)["session_id"]
    url = f"{api.base}/api/v1/code-sessions/{sid}"
    if have("wrk"):
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
            fh.write(LUA)
        out = subprocess.run(
            ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "-s", fh.name, "--latency", url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        os.unlink(fh.name)
        return {"tool": "wrk", "clients": clients, "raw": out}
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    def client() -> None:
        nonlocal errors
        http = requests.Session()
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            r = http.patch(url, json={"source_code": "print('autosave')"})
            latencies.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                errors += 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(client)
    elapsed = time.perf_counter() - t0
    return {
        "tool": "python threads",
        "clients": clients,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "errors": errors,
        **summary(latencies),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--throughput", type=int, default=200)
    p.add_argument("--seconds", type=int, default=15)
    args = p.parse_args()
    stack = Stack(workers=2, LIVECODE_LOG_LEVEL="WARNING")
    try:
        api = ApiClient(stack.base)
        api.run(HELLO)  # warm up the worker and the sandbox
        report = {
            "machine": machine(),
            "execute_to_result": execute_latency(api, args.runs),
            "throughput_2_workers": throughput(api, args.throughput),
            "autosave_32_clients": autosave(api, args.seconds),
        }
        print(json.dumps(report, indent=2))
    finally:
        stack.close()


if __name__ == "__main__":
    main()
