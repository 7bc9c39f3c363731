"""Where an execute-to-result round trip spends its time, from the timestamps the row records.

For N sequential Python hello worlds against a distributed system with one worker: the execute
request's own latency, the wait in the queue (started_at - queued_at), claim to result committed
(finished_at - started_at), the sandboxed run's wall time, and the whole round trip as the client
sees it (polling every 2 ms). Medians are printed.

Run: .venv/bin/python -m bench.bench_latency_breakdown [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime

import requests

from bench.common import Stack, machine
from tests.support.client import TERMINAL, ApiClient


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()
    stack = Stack(workers=1, api_workers=1, LIVECODE_LOG_LEVEL="WARNING")
    try:
        api = ApiClient(stack.base)
        api.run("print('warm up')")
        sid = api.create_session("print('Hello World!')")["session_id"]
        http = requests.Session()
        cols: dict[str, list[float]] = {
            k: [] for k in ("post", "queue_wait", "claim_to_saved", "sandbox_wall", "round_trip")
        }
        for _ in range(args.runs):
            t0 = time.perf_counter()
            r = http.post(f"{api.base}/api/v1/executions/session/{sid}/execute", json={})
            t1 = time.perf_counter()
            eid = r.json()["execution_id"]
            while (d := http.get(f"{api.base}/api/v1/executions/{eid}").json())["status"] not in TERMINAL:
                time.sleep(0.002)
            t2 = time.perf_counter()
            queued, started, finished = (
                datetime.fromisoformat(d[k]) for k in ("queued_at", "started_at", "finished_at")
            )
            cols["post"].append((t1 - t0) * 1000)
            cols["queue_wait"].append((started - queued).total_seconds() * 1000)
            cols["claim_to_saved"].append((finished - started).total_seconds() * 1000)
            cols["sandbox_wall"].append(float(d["execution_time_ms"]))
            cols["round_trip"].append((t2 - t0) * 1000)
        report = {"machine": machine(), "runs": args.runs}
        report.update({f"{k}_median_ms": round(statistics.median(v), 1) for k, v in cols.items()})
        print(json.dumps(report, indent=2))
    finally:
        stack.close()


if __name__ == "__main__":
    main()
