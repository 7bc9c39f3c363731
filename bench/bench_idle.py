"""How busy one worker keeps the cores while a queue drains (issue 11: the throughput's idle cores).

Starts bench_cost's distributed stack (1 API, 1 worker with the given concurrency), submits N
hello worlds at once and, while the worker drains them (the API idle by then), samples every
4 ms how many of the stack's tasks are runnable: the worker's threads, its sandboxes' processes,
the PostgreSQL backends of the bench's database and the Redis server. On a shared, loaded host
the machine's idle share says nothing (other load fills it) and throughput swings with the
load; the runnable count is a property of the stack: while fewer of its tasks than cores are
runnable, a quiet machine would leave the rest of its cores idle. Prints, per run, the share of
samples with 0, 1, 2 and 3+ runnable, the cores a quiet machine would keep busy
(mean of min(runnable, cores) / cores), the drain's executions/s and CPU per execution, and the
worker's PSS (its process tree, median and peak).

    .venv/bin/python -m bench.bench_idle --concurrency 2 3 4 --rounds 3 --redis-url redis://127.0.0.1:6379/13

Runs alternate (2, 3, 4, 2, 3, 4, ...), so that load on the host falls on each alike.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import requests

from bench.bench_cost import HELLO, PG_ADMIN, CpuMeter, _proc_table, redis_pid, start_stack, wait_all_done
from tests.support.client import ApiClient

CORES = os.cpu_count() or 1


def _state(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _pss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                total += sum(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
        except OSError:
            pass
    return total


def one_run(concurrency: int, count: int, redis_url: str) -> dict[str, Any]:
    stack = start_stack(redis_url, False, {"LIVECODE_WORKER_CONCURRENCY": str(concurrency)})
    pg = psycopg.connect(stack.database_url, autocommit=True)
    try:
        meter = CpuMeter(stack.api.proc.pid, stack.worker.proc.pid, redis_pid(stack.env["REDIS_URL"]),
                         psycopg.connect(PG_ADMIN, autocommit=True), stack.database)
        api = ApiClient(stack.base)
        for _ in range(3):  # warm the worker and its sandbox pool
            api.run(HELLO)
        sessions = [api.create_session(HELLO)["session_id"] for _ in range(count)]

        def submit(sid: str) -> str:
            r = requests.post(f"{stack.base}/api/v1/executions/session/{sid}/execute", json={}, timeout=60)
            return str(r.json()["execution_id"])

        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(submit, sessions))

        worker, pg_pids, rpid = stack.worker.proc.pid, meter._pg_pids(), redis_pid(stack.env["REDIS_URL"])
        tree: dict[str, Any] = {"at": 0.0, "pids": []}

        def children() -> list[int]:  # the worker's sandboxes, listed again every 20 ms
            if time.monotonic() - tree["at"] > 0.02:
                kids: dict[int, list[int]] = {}
                for pid, (ppid, _) in _proc_table().items():
                    kids.setdefault(ppid, []).append(pid)
                found, todo = [], list(kids.get(worker, ()))
                while todo:
                    pid = todo.pop()
                    found.append(pid)
                    todo.extend(kids.get(pid, ()))
                tree.update(at=time.monotonic(), pids=found)
            return tree["pids"]  # type: ignore[no-any-return]

        runnable: list[int] = []
        pss: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            n = 0
            while not stop.wait(0.004):
                paths = [f"/proc/{worker}/task/{t}/stat" for t in os.listdir(f"/proc/{worker}/task")]
                paths += [f"/proc/{pid}/stat" for pid in (*children(), *pg_pids, rpid)]
                runnable.append(sum(1 for p in paths if _state(p) == "R"))
                n += 1
                if n % 50 == 0:
                    pss.append(_pss_kb([worker, *children()]))

        def finished() -> int:
            return int(pg.execute("SELECT count(*) FROM executions WHERE finished_at IS NOT NULL").fetchone()[0])  # type: ignore[index]

        before, done0, t0 = meter.snapshot(), finished(), time.perf_counter()
        sampler = threading.Thread(target=sample)
        sampler.start()
        while finished() < 0.9 * (count + 3):  # the last runs are fewer than the slots: not counted
            time.sleep(0.05)
        elapsed, done1 = time.perf_counter() - t0, finished()
        stop.set()
        sampler.join()
        cpu = CpuMeter.delta_ms(before, meter.snapshot())
        wait_all_done(pg, ids)
    finally:
        pg.close()
        stack.close()
    drained = done1 - done0
    shares = collections.Counter(min(x, 3) for x in runnable)
    return {
        "concurrency": concurrency,
        "runnable_share": {k: round(v / len(runnable), 3) for k, v in sorted(shares.items())},
        "quiet_busy": round(sum(min(x, CORES) for x in runnable) / len(runnable) / CORES, 3),
        "per_s": round(drained / elapsed, 1),
        "cpu_ms": round(sum(v for k, v in cpu.items() if k != "worker_own") / max(1, drained), 1),
        "pss_mb": (round(statistics.median(pss) / 1024), round(max(pss) / 1024)) if pss else None,
        "load": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--count", type=int, default=300, help="executions submitted at once")
    p.add_argument("--redis-url", default=os.environ.get("LIVECODE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"),
                   help="the Redis database the bench may flush (default %(default)s)")
    args = p.parse_args()
    for _ in range(args.rounds):
        for c in args.concurrency:
            print(json.dumps(one_run(c, args.count, args.redis_url)), flush=True)


if __name__ == "__main__":
    main()
