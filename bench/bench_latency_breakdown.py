"""Where an execute-to-result round trip spends its time, from the timestamps the row records.

For N sequential Python hello worlds against a distributed system with one worker: the execute
request's own latency, the client's send to the row's `queued_at`, the wait in the queue
(started_at - queued_at), claim to result committed (finished_at - started_at), the sandboxed run's
wall time, the result committed to the client holding it, and the whole round trip as the client
sees it (polling every 2 ms, or with `--wait` the blocking wait). Medians and p95 are printed.
The row's timestamps (written by the API and the worker) and the client's `time.time()` read one machine's clock.

Run: .venv/bin/python -m bench.bench_latency_breakdown [--runs 30] [--wait] [--pause-ms 200] [--embedded]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime

import requests

from bench.common import Stack, embedded_stack, machine, pct
from tests.conftest import Cluster
from tests.support.client import TERMINAL, ApiClient


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--wait", action="store_true", help="POST ...?wait=true instead of polling")
    p.add_argument("--pause-ms", type=float, default=0.0, help="pause after each result (a user reading it)")
    p.add_argument("--embedded", action="store_true", help="`livecode serve` (SQLite, in-process worker)")
    args = p.parse_args()
    stack: Stack | Cluster
    if args.embedded:
        stack = embedded_stack(tempfile.mkdtemp(prefix="lc-bench-breakdown-"), LIVECODE_LOG_LEVEL="WARNING")
    else:
        stack = Stack(workers=1, api_workers=1, LIVECODE_LOG_LEVEL="WARNING")
    try:
        api = ApiClient(stack.base)
        api.run("print('warm up')")
        sid = api.create_session("print('Hello World!')")["session_id"]
        http = requests.Session()
        cols: dict[str, list[float]] = {
            k: []
            for k in ("post", "send_to_queued", "queue_wait", "claim_to_saved", "sandbox_wall", "saved_to_client",
                      "round_trip")
        }
        url = f"{api.base}/api/v1/executions/session/{sid}/execute" + ("?wait=true" if args.wait else "")
        for _ in range(args.runs):
            time.sleep(args.pause_ms / 1000)
            w0, t0 = time.time(), time.perf_counter()
            r = http.post(url, json={})
            t1 = time.perf_counter()
            d = r.json()
            eid = d["execution_id"]
            while d["status"] not in TERMINAL:
                time.sleep(0.002)
                d = http.get(f"{api.base}/api/v1/executions/{eid}").json()
            t2 = time.perf_counter()
            w2 = w0 + (t2 - t0)
            queued, started, finished = (
                datetime.fromisoformat(d[k]) for k in ("queued_at", "started_at", "finished_at")
            )
            if not args.wait:
                cols["post"].append((t1 - t0) * 1000)
            cols["send_to_queued"].append((queued.timestamp() - w0) * 1000)
            cols["saved_to_client"].append((w2 - finished.timestamp()) * 1000)
            cols["queue_wait"].append((started - queued).total_seconds() * 1000)
            cols["claim_to_saved"].append((finished - started).total_seconds() * 1000)
            cols["sandbox_wall"].append(float(d["execution_time_ms"]))
            cols["round_trip"].append((t2 - t0) * 1000)
        report = {"machine": machine(), "runs": args.runs, "wait": args.wait, "pause_ms": args.pause_ms}
        report.update({f"{k}_median_ms": round(statistics.median(v), 1) for k, v in cols.items() if v})
        report.update({f"{k}_p95_ms": round(pct(v, 95), 1) for k, v in cols.items() if v})
        print(json.dumps(report, indent=2))
    finally:
        stack.stop() if isinstance(stack, Cluster) else stack.close()


if __name__ == "__main__":
    main()
