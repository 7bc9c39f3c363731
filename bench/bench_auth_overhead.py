"""What authentication and rate limiting cost on every request (issue 5), and the interactive start
delay under a batch backlog. Against the distributed system (PostgreSQL, Redis, `livecode api`
with 2 gunicorn processes each):

1. autosave (PATCH) requests per second and latency at C concurrent clients, and
2. execute (POST, 202) latency, sequential, with no worker running so nothing else uses the CPU,
   each with sign-in and rate limits OFF, ON with a JWT bearer token, and ON with an API key.
   Two API processes run side by side on one database and the modes alternate round by round,
   so drift on the machine affects all of them alike. The execution limit is set high enough
   that nothing is refused: the limiter still does all its Redis work.
   Then the same two requests in one process with the Flask test client (no server, no client
   threads): API CPU time per request, alternating modes over several runs.
3. Interactive start delay (started_at - queued_at) with a backlog of B batch executions and
   2 worker processes: K interactive runs, one after another, while the backlog drains.

Run: .venv/bin/python -m bench.bench_auth_overhead [--seconds 8] [--rounds 3] [--clients 16]
     [--executes 300] [--backlog 1000] [--interactive 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import threading
import time
from datetime import datetime
from typing import Any

import psutil
import requests

from bench.common import machine, summary
from tests.conftest import base_env, flush_redis
from tests.support.procs import (
    PostgresServer,
    Process,
    RedisServer,
    create_database,
    livecode,
    port_open,
    start_api,
    start_worker,
    wait_workers,
)

MODES = ("off", "on_jwt", "on_api_key")


def servers() -> tuple[str, str, list[Any]]:
    started: list[Any] = []
    pg = "postgresql://postgres@127.0.0.1:5432/postgres"
    if not port_open(5432):
        server = PostgresServer().start()
        started.append(server)
        pg = server.url
    redis_url = "redis://127.0.0.1:6379/13"
    if not port_open(6379):
        rserver = RedisServer().start()
        started.append(rserver)
        redis_url = rserver.url
    return pg, redis_url, started


def headers_for(base_on: str) -> dict[str, dict[str, str]]:
    name, password = f"bench{int(time.time() * 1000) % 10**9}", "bench-password-1"
    r = requests.post(base_on + "/api/v1/auth/register", json={"username": name, "password": password}, timeout=30)
    assert r.status_code == 201, r.text
    tokens = requests.post(
        base_on + "/api/v1/auth/login", json={"username": name, "password": password}, timeout=30
    ).json()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    key = requests.post(base_on + "/api/v1/api-keys", json={"name": "bench"}, headers=bearer, timeout=30).json()["key"]
    return {"off": {}, "on_jwt": bearer, "on_api_key": {"X-API-Key": key}}


def new_session(base: str, headers: dict[str, str], source: str = "pass") -> str:
    r = requests.post(
        base + "/api/v1/code-sessions", json={"language": "python", "source_code": source}, headers=headers, timeout=30
    )
    assert r.status_code == 201, r.text
    return str(r.json()["session_id"])


def api_cpu_s(proc: Process) -> float:
    """CPU seconds used so far by an API process and its gunicorn workers: a figure that other
    load on the machine disturbs much less than wall-clock latency."""
    root = psutil.Process(proc.proc.pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def autosave_round(base: str, headers: dict[str, str], seconds: float, clients: int, proc: Process) -> dict[str, Any]:
    sessions = [new_session(base, headers) for _ in range(clients)]
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(sid: str) -> None:
        nonlocal errors
        http = requests.Session()
        http.headers.update(headers)
        url = f"{base}/api/v1/code-sessions/{sid}"
        mine: list[float] = []
        bad = 0
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            r = http.patch(url, json={"source_code": "print('autosave')"}, timeout=30)
            mine.append((time.perf_counter() - t0) * 1000)
            bad += r.status_code != 200
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=client, args=(sid,)) for sid in sessions]
    cpu0 = api_cpu_s(proc)
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    cpu_ms = (api_cpu_s(proc) - cpu0) * 1000 / max(1, len(latencies))
    return {
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "errors": errors,
        "api_cpu_ms_per_request": round(cpu_ms, 3),
        **summary(latencies),
    }


def execute_round(base: str, headers: dict[str, str], count: int, proc: Process) -> dict[str, Any]:
    sid = new_session(base, headers)
    http = requests.Session()
    http.headers.update(headers)
    url = f"{base}/api/v1/executions/session/{sid}/execute"
    samples = []
    cpu0 = api_cpu_s(proc)
    for _ in range(count):
        t0 = time.perf_counter()
        r = http.post(url, json={"priority": "batch"}, timeout=30)
        samples.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 202, r.text
    cpu_ms = (api_cpu_s(proc) - cpu0) * 1000 / count
    return {"api_cpu_ms_per_request": round(cpu_ms, 3), **summary(samples)}


def overhead(results: dict[str, list[dict[str, Any]]], key: str, higher_is_better: bool) -> dict[str, Any]:
    off = statistics.median(r[key] for r in results["off"])
    out: dict[str, Any] = {"off": off}
    for mode in MODES[1:]:
        on = statistics.median(r[key] for r in results[mode])
        cost = (off - on) / off if higher_is_better else (on - off) / off
        out[mode] = on
        out[f"{mode}_cost_pct"] = round(100 * cost, 1)
    return out


def child(mode: str, requests_n: int) -> None:
    """One API in this process (Flask test client, no HTTP server, no client threads, nothing
    queued): CPU time per request is then what the request costs the API, and the least disturbed
    by other load on the machine."""
    import uuid

    from livecode.app import create_app
    from livecode.config import load_settings

    settings = load_settings("distributed", auth_required=mode != "off", rate_limits_enabled=mode != "off",
                             execution_rate_limit="1000000/minute")
    app = create_app(settings, enqueue=lambda *a, **k: None)
    client = app.test_client()
    headers: dict[str, str] = {}
    if mode != "off":
        name = "b" + uuid.uuid4().hex[:12]
        client.post("/api/v1/auth/register", json={"username": name, "password": "bench-password-1"})
        token = client.post("/api/v1/auth/login", json={"username": name, "password": "bench-password-1"}).json
        headers = {"Authorization": f"Bearer {token['access_token']}"}  # type: ignore[index]
        if mode == "on_api_key":
            key = client.post("/api/v1/api-keys", json={"name": "bench"}, headers=headers).json
            headers = {"X-API-Key": key["key"]}  # type: ignore[index]
    sid = client.post("/api/v1/code-sessions", json={"language": "python", "source_code": "pass"},
                      headers=headers).json["session_id"]  # type: ignore[index]
    out = {}
    for what, call in [
        ("autosave", lambda: client.patch(f"/api/v1/code-sessions/{sid}", json={"source_code": "x"}, headers=headers)),
        ("execute", lambda: client.post(f"/api/v1/executions/session/{sid}/execute", json={"priority": "batch"},
                                        headers=headers)),
    ]:
        for _ in range(50):
            call()
        cpu0 = time.process_time()
        for _ in range(requests_n):
            status = call().status_code
            assert status in (200, 202), status
        out[what] = (time.process_time() - cpu0) * 1000 / requests_n
    print(json.dumps(out))


def in_process(env: dict[str, str], rounds: int, requests_n: int) -> dict[str, Any]:
    import sys

    samples: dict[str, dict[str, list[float]]] = {m: {"autosave": [], "execute": []} for m in MODES}
    for _ in range(rounds):
        for mode in MODES:
            out = subprocess.run([sys.executable, "-m", "bench.bench_auth_overhead", "--child", mode,
                                  "--child-requests", str(requests_n)],
                                 env=env, capture_output=True, text=True,
                                 check=True).stdout
            for what, value in json.loads(out.strip().splitlines()[-1]).items():
                samples[mode][what].append(value)
    result: dict[str, Any] = {"requests_per_round": requests_n, "rounds": rounds}
    for what in ("autosave", "execute"):
        off = statistics.median(samples["off"][what])
        row: dict[str, Any] = {"off_cpu_ms": round(off, 3)}
        for mode in MODES[1:]:
            on = statistics.median(samples[mode][what])
            row[f"{mode}_cpu_ms"] = round(on, 3)
            row[f"{mode}_cost_pct"] = round(100 * (on - off) / off, 1)
        result[what] = row
    return result


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def start_delay_under_backlog(base: str, env: dict[str, str], backlog: int, runs: int) -> dict[str, Any]:
    batch_sid = new_session(base, {})
    t0 = time.perf_counter()
    r = requests.post(
        base + "/api/v1/executions/batch", json={"executions": [{"session_id": batch_sid}] * backlog}, timeout=300
    )
    assert r.status_code == 202, r.text
    submit_s = time.perf_counter() - t0
    workers = [start_worker(env, f"bench{i}@auth") for i in range(2)]
    try:
        wait_workers(base, 2)
        delays, waiting = [], []
        for _ in range(runs):
            waiting.append(requests.get(base + "/api/v1/admin/stats", timeout=10).json()["queues"]["low_priority"])
            sid = new_session(base, {}, "print('interactive')")
            eid = requests.post(f"{base}/api/v1/executions/session/{sid}/execute", json={}, timeout=30).json()[
                "execution_id"
            ]
            while True:
                data = requests.get(f"{base}/api/v1/executions/{eid}", timeout=30).json()
                if data["status"] in {"COMPLETED", "FAILED", "TIMEOUT"}:
                    break
                time.sleep(0.01)
            delays.append((ts(data["started_at"]) - ts(data["queued_at"])).total_seconds() * 1000)
            time.sleep(0.5)
        drain_t0 = time.perf_counter()
        while requests.get(base + "/api/v1/admin/stats", timeout=10).json()["queues"]["low_priority"] > 0:
            time.sleep(0.5)
        return {
            "backlog": backlog,
            "batch_submit_s": round(submit_s, 2),
            "backlog_waiting_when_submitted": waiting,
            "interactive_start_delay": summary(delays),
            "rest_of_backlog_drained_s": round(time.perf_counter() - drain_t0, 1),
        }
    finally:
        for w in workers:
            w.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--executes", type=int, default=300)
    ap.add_argument("--backlog", type=int, default=1000)
    ap.add_argument("--interactive", type=int, default=10)
    ap.add_argument("--inprocess-rounds", type=int, default=5)
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--child-requests", type=int, default=1000, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.child_requests)
        return

    pg, redis_url, started = servers()
    db_url = create_database(pg)
    flush_redis(redis_url)
    common = dict(DATABASE_URL=db_url, REDIS_URL=redis_url)
    env_off = base_env(**common, LIVECODE_AUTH_REQUIRED="false", LIVECODE_RATE_LIMITS_ENABLED="false")
    env_on = base_env(**common, LIVECODE_AUTH_REQUIRED="true", LIVECODE_EXECUTION_RATE_LIMIT="1000000/minute")
    subprocess.run(livecode("db", "upgrade"), env=env_off, check=True, capture_output=True)
    procs: list[Process] = []
    try:
        api_off, base_off = start_api(env_off, workers=2)
        api_on, base_on = start_api(env_on, workers=2)
        procs += [api_off, api_on]
        headers = headers_for(base_on)
        bases = {"off": base_off, "on_jwt": base_on, "on_api_key": base_on}
        api_of = {"off": api_off, "on_jwt": api_on, "on_api_key": api_on}
        autosave: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
        execute: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                autosave[mode].append(
                    autosave_round(bases[mode], headers[mode], args.seconds, args.clients, api_of[mode])
                )
            for mode in MODES:
                execute[mode].append(execute_round(bases[mode], headers[mode], args.executes, api_of[mode]))
        api_on.stop()
        procs.remove(api_on)
        inproc = in_process(env_on, args.inprocess_rounds, 1000)
        flush_redis(redis_url)  # the queued executions of part 2 would be a backlog of their own
        result = {
            "machine": machine(),
            "in_process_cpu_per_request": inproc,
            "autosave": {
                "clients": args.clients,
                "seconds_per_round": args.seconds,
                "rounds": autosave,
                "requests_per_s": overhead(autosave, "requests_per_s", True),
                "median_ms": overhead(autosave, "median_ms", False),
                "api_cpu_ms_per_request": overhead(autosave, "api_cpu_ms_per_request", False),
            },
            "execute_202": {
                "sequential_requests_per_round": args.executes,
                "rounds": execute,
                "median_ms": overhead(execute, "median_ms", False),
                "p95_ms": overhead(execute, "p95_ms", False),
                "api_cpu_ms_per_request": overhead(execute, "api_cpu_ms_per_request", False),
            },
        }
        # Part 3 on a fresh database, so part 2's QUEUED rows are not picked up by the reconciler.
        db2 = create_database(pg)
        env_backlog = {**env_off, "DATABASE_URL": db2}
        subprocess.run(livecode("db", "upgrade"), env=env_backlog, check=True, capture_output=True)
        api_off.stop()
        procs.remove(api_off)
        api_b, base_b = start_api(env_backlog, workers=2)
        procs.append(api_b)
        result["interactive_under_backlog"] = start_delay_under_backlog(
            base_b, env_backlog, args.backlog, args.interactive
        )
        print(json.dumps(result, indent=2))
    finally:
        for p in procs:
            p.stop()
        for s in started:
            s.destroy()


if __name__ == "__main__":
    main()
