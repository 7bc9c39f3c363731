"""Issue 15's co-editing benchmark, against `livecode api` processes on PostgreSQL and Redis:

1. keystroke-to-peer delay (p50, p95): one editor types a key every 20 ms into a session, a
   second one on the same API process sees each arrive; and the same with the second editor on
   a second API process (relayed through Redis);
2. how many concurrent editors one API process (1 gunicorn worker, T threads) holds with that
   delay at p95 under 100 ms: N editors in rooms of 5 (pair programming, a small class), each
   typing 5 keys a second into its own file of the room's program; every key's delay to each of
   the 4 others is measured.

Clients are pycrdt y-protocols clients over websocket-client (tests/support/yjs.py), in this
process, on the same machine (their CPU is counted against the 2 cores too).

Run: .venv/bin/python -m bench.bench_collab [--levels 5,10,20,40,60] [--threads 128] [--redis URL]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from typing import Any

from bench.common import machine, pct, summary
from tests.conftest import base_env, flush_redis
from tests.support.client import ApiClient
from tests.support.procs import Process, create_database, free_port, livecode, wait_api
from tests.support.yjs import WsClient

ROOM = 5


class Typist(WsClient):
    """An editor that types into its own file and times every key of the others' files."""

    def __init__(self, url: str, me: str, paths: list[str], sent: dict[str, list[float]]) -> None:
        self.me, self.others, self.sent = me, [p for p in paths if p != me], sent
        self.seen = dict.fromkeys(self.others, -1)
        self.delays: list[float] = []
        self.measure = False
        super().__init__(url)
        for p in self.others:
            self.seen[p] = len(self.text(p))

    def handle(self, message: bytes) -> None:
        super().handle(message)
        if message[:2] != b"\x00\x02":
            return
        now = time.perf_counter()
        for path in self.others:
            length = len(self.text(path))
            for k in range(self.seen[path] + 1, length + 1):
                times = self.sent[path]
                if self.measure and k - 1 < len(times):
                    self.delays.append(now - times[k - 1])
            self.seen[path] = max(self.seen[path], length)

    def key(self) -> None:
        with self.lock:
            at = len(self.text(self.me))
        self.sent[self.me].append(time.perf_counter())
        self.insert(at, "x", path=self.me)


def start_api_proc(env: dict[str, str], threads: int) -> tuple[Process, str]:
    port = free_port()
    proc = Process(
        livecode("api", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--threads", str(threads)),
        env,
        "api",
    )
    base = f"http://127.0.0.1:{port}"
    wait_api(proc, base)
    return proc, base


def room(api: ApiClient, bases: list[str], size: int, sent: dict[str, list[float]]) -> list[Typist]:
    paths = [f"f{i}.py" for i in range(size)]
    r = api.request(
        "POST",
        "/api/v1/code-sessions",
        json={"language": "python", "entry": paths[0], "files": [{"path": p, "content": ""} for p in paths]},
    )
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    for p in paths:
        sent[f"{sid}/{p}"] = []
    typists = []
    for i, p in enumerate(paths):
        base = bases[i % len(bases)]
        url = base.replace("http://", "ws://") + f"/api/v1/code-sessions/{sid}/ws"
        t = Typist(url, p, paths, {q: sent[f"{sid}/{q}"] for q in paths})
        typists.append(t)
    return typists


def type_for(typists: list[Typist], seconds: float, interval: float) -> None:
    stop = time.monotonic() + seconds

    def loop(t: Typist, offset: float) -> None:
        time.sleep(offset)
        while time.monotonic() < stop:
            t.key()
            time.sleep(interval)

    threads = [
        threading.Thread(target=loop, args=(t, i * interval / max(1, len(typists)))) for i, t in enumerate(typists)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    time.sleep(1.0)  # the last keys arrive


def delay_pair(bases: list[str], api: ApiClient, seconds: float) -> dict[str, float]:
    sent: dict[str, list[float]] = {}
    typists = room(api, bases, 2, sent)
    try:
        typists[1].measure = True
        type_for([typists[0]], seconds, 0.02)
        return summary([d * 1000 for d in typists[1].delays])
    finally:
        for t in typists:
            t.disconnect()


def level(base: str, api: ApiClient, editors: int, seconds: float) -> dict[str, Any]:
    sent: dict[str, list[float]] = {}
    typists: list[Typist] = []
    try:
        for _ in range(max(1, editors // ROOM)):
            typists += room(api, [base], ROOM, sent)
        for t in typists:
            t.measure = True
        type_for(typists, seconds, 0.2)
        delays = [d * 1000 for t in typists for d in t.delays]
        return {"editors": len(typists), **summary(delays)}
    finally:
        for t in typists:
            t.disconnect()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--levels", default="5,10,20,40,60")
    p.add_argument("--threads", type=int, default=128)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    a = p.parse_args()
    flush_redis(a.redis)
    env = base_env(
        DATABASE_URL=create_database(a.pg),
        REDIS_URL=a.redis,
        LIVECODE_LOG_LEVEL="WARNING",
        LIVECODE_STREAMS_PER_ADDRESS="0",
        LIVECODE_STREAMS_PER_USER="0",
        LIVECODE_CONNECTIONS_PER_ADDRESS="0",  # every client of the benchmark is 127.0.0.1
    )
    subprocess.run(livecode("db", "upgrade"), env=env, check=True, capture_output=True)
    (pa, a_base), (pb, b_base) = start_api_proc(env, a.threads), start_api_proc(env, a.threads)
    api = ApiClient(a_base)
    report: dict[str, Any] = {"machine": machine(), "threads": a.threads}
    try:
        report["keystroke_same_process"] = delay_pair([a_base], api, a.seconds)
        report["keystroke_two_processes"] = delay_pair([a_base, b_base], api, a.seconds)
        levels = []
        for n in [int(x) for x in a.levels.split(",")]:
            levels.append(level(a_base, api, n, a.seconds))
            print(json.dumps(levels[-1]), flush=True)
        report["levels"] = levels
        under = [lv["editors"] for lv in levels if lv["p95_ms"] < 100]
        report["most_editors_p95_under_100ms"] = max(under) if under else 0
    finally:
        pa.stop(20)
        pb.stop(20)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    _ = pct
    main()
