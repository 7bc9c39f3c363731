"""Stopping a run: how long from POST /api/v1/executions/{id}/cancel (202) until the execution is
CANCELLED (GET shows it terminal), against the distributed system (the signal travels through
Redis to the worker's sandbox loop, which polls every 100 ms) and the embedded one.

    sudo .venv/bin/python -m bench.bench_cancel [--rounds 20] [--redis-db 12] [--embedded]

Each round starts a Python program that prints a line and then loops, waits for that line on the
event stream, then cancels it (SIGKILL) and polls GET every 5 ms. Never a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from bench.common import embedded_stack, machine, summary
from tests.conftest import Cluster, start_cluster
from tests.integration.test_cancel import wait_started
from tests.sandbox.test_signals import LOOP
from tests.support.client import TERMINAL, ApiClient


def one_round(api: ApiClient) -> float:
    sid = api.create_session(LOOP)["session_id"]
    r = api.execute(sid, time_limit_ms=30_000)
    assert r.status_code == 202, r.text
    eid = r.json()["execution_id"]
    wait_started(api, eid)
    sent = time.monotonic()
    c = api.request("POST", f"/api/v1/executions/{eid}/cancel")
    assert c.status_code == 202, c.text
    while True:
        row = api.get_execution(eid)
        if row["status"] in TERMINAL:
            assert (row["status"], row["signal"]) == ("CANCELLED", 9), row
            return (time.monotonic() - sent) * 1000
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--redis-db", type=int, default=12)
    parser.add_argument("--embedded", action="store_true")
    args = parser.parse_args()
    if args.embedded:
        cluster: Cluster = embedded_stack(tempfile.mkdtemp(prefix="lc-bench-cancel-"))
    else:
        cluster = start_cluster("postgresql://postgres@127.0.0.1:5432/postgres",
                                f"redis://127.0.0.1:6379/{args.redis_db}")
    try:
        api = cluster.client()
        one_round(api)  # warm-up
        took = [one_round(api) for _ in range(args.rounds)]
        print(json.dumps({"machine": machine(), "mode": "embedded" if args.embedded else "distributed",
                          "rounds": args.rounds, "cancel_to_cancelled": summary(took)}, indent=2))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
