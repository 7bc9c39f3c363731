"""The cost of one execution (issue 11): LiveCode's figures beside the raw ones, in one run.

Starts the distributed stack itself (1 API process with its default threads, 1 worker with its
default concurrency, a fresh database on the PostgreSQL at 127.0.0.1:5432, its own Redis
database number), measures the raw figures on the same machine in the same run (plain
`python3 -c "print('hi')"`: runs/s with 2 in parallel, latency, CPU) and prints one table:

- throughput: hello-world executions/s (N submitted at once) vs raw runs/s; a cached C program;
- CPU per execution by process kind (API, worker with its sandboxes, PostgreSQL, Redis), from
  /proc: only the stack's processes (the API's and the worker's process trees, the PostgreSQL
  backends serving the bench's database, the Redis server), so other load on the host does not
  count. The window covers the submission (POST), the run and one GET of the result per run;
- latency execute -> result with the blocking wait (median, p95) and with polling (median);
- POST .../execute and GET /api/v1/executions/{id} medians;
- 200 concurrent blocking waits: how many waited (200) or fell back (202), and the latency of
  ordinary GETs meanwhile against idle;
- autosave PATCH/s with 32 connections (wrk if installed, else Python threads), p99, and a
  durability check: the versions in PostgreSQL afterwards account for every 2xx;
- the embedded mode's latencies (`livecode serve`).

A benchmark, never a pass/fail test. Run from the repository root:

    .venv/bin/python -m bench.bench_cost --quick        # about a minute
    .venv/bin/python -m bench.bench_cost                # the full figures
    .venv/bin/python -m bench.bench_cost --autosave-only  # the autosave load alone, with its CPU by process

The Redis server at 127.0.0.1:6379 may serve others: its CPU then includes their commands; use
--private-redis to start one for the bench alone (from the installed redis-server).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis
import requests

from bench.common import embedded_stack, have, machine, pct
from tests.conftest import base_env, flush_redis
from tests.support.client import TERMINAL, ApiClient
from tests.support.procs import Process, RedisServer, create_database, free_port, livecode, wait_api, wait_workers

HELLO = "print('hi')"
C_HELLO = '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n'
CLK_TCK = os.sysconf("SC_CLK_TCK")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKGROUND_TEST_SETTINGS = (
    "LIVECODE_RECONCILE_INTERVAL_S", "LIVECODE_REQUEUE_GRACE_S", "LIVECODE_HEARTBEAT_TTL_S",
    "LIVECODE_STORAGE_CLEANUP_INTERVAL_S", "LIVECODE_MAX_STORED_EXECUTIONS", "LIVECODE_MAX_SESSIONS",
)


def add_redis_url(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--redis-url",
        default=os.environ.get("LIVECODE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"),
        help="the Redis database the bench may flush (default %(default)s)",
    )


@contextmanager
def in_process_stack(redis_url: str) -> Iterator[str]:
    """For the benches that run LiveCode's code in their own process: a fresh migrated database on
    the local PostgreSQL and the flushed Redis database, set in this process's environment with
    the production intervals (none of the tests' fast background settings); the database is
    dropped afterwards. Yields its URL."""
    db_url = create_database(PG_ADMIN)
    flush_redis(redis_url)
    env = base_env(DATABASE_URL=db_url, REDIS_URL=redis_url)
    for name in BACKGROUND_TEST_SETTINGS:
        env.pop(name, None)
    subprocess.run(livecode("db", "upgrade"), env=env, check=True, capture_output=True)
    os.environ.update(env)
    try:
        yield db_url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_url.rsplit("/", 1)[1]}" WITH (FORCE)')


# ---- CPU from /proc -----------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime+cutime+cstime in ticks) for every process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(name)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
    return table


def tree_members(table: dict[int, tuple[int, int]], root: int) -> list[int]:
    """`root` and its live descendants, from a _proc_table()."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    members, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            members.append(pid)
            todo.extend(children.get(pid, ()))
    return members


def tree_ticks(table: dict[int, tuple[int, int]], root: int) -> int:
    """CPU of a process tree: every live member's own and reaped children's time. A child that
    exits is reaped by its parent in the tree, so its time moves into the parent's cutime."""
    return sum(table[pid][1] for pid in tree_members(table, root))


def _own_ticks(pid: int) -> int:
    """utime+stime of the process itself (all its threads), without its children."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(rest[11]) + int(rest[12])


def thread_ticks(pid: int) -> dict[int, float]:
    """tid -> CPU time of each live thread of the process, in clock ticks (fractional): from its
    schedstat (ns), not its stat, whose whole ticks each thread rounds down: with a dozen threads
    that lost up to a tick apiece, which showed as 0.2-1.5 ms per run of "threads that ended"
    (none end per run) in the 60-run throughput phase."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                out[int(tid)] = int(fh.read().split()[0]) * CLK_TCK / 1e9
        except (OSError, ValueError, IndexError):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                    rest = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(tid)] = int(rest[11]) + int(rest[12])
    return out


# A worker thread's Python name (from `py-spy dump`) -> what it does, for the CPU by thread.
THREAD_KINDS = (
    ("ThreadPoolExecutor", "task slots"),
    ("MainThread", "Celery consumer"),
    ("sandbox-pool", "sandbox pool refill"),
    ("sandbox-cleanup", "sandbox cleanup"),
    ("output-publisher", "output publishers"),
    ("output-holds", "output publishers"),  # starts the loops of runs that outlast their hold
)


def thread_kinds(pid: int) -> dict[int, str]:
    """tid -> kind of each live thread of a Python process, named by py-spy (if installed; else {})."""
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    try:
        dump = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    kinds = {}
    for line in dump.splitlines():  # Thread 1234 (idle): "MainThread"
        if line.startswith("Thread ") and '"' in line:
            name = line.split('"')[1]
            kinds[int(line.split()[1], 0)] = next((k for p, k in THREAD_KINDS if name.startswith(p)), "other")
    return kinds


def by_thread_kind(pid: int, before: dict[int, float], after: dict[int, float], count: int) -> dict[str, float]:
    """The worker process's own CPU per execution by kind of thread; threads that ended inside
    the window (a run's output publisher) are the difference to the process's own total."""
    kinds = thread_kinds(pid)
    if not kinds:
        return {}
    to_ms = 1000 / CLK_TCK / count
    out: dict[str, float] = {}
    for tid, ticks in after.items():
        kind = kinds.get(tid, "other")
        out[kind] = out.get(kind, 0.0) + (ticks - before.get(tid, 0)) * to_ms
    return out


@dataclass
class CpuMeter:
    api_pid: int
    worker_pid: int
    redis_pid: int | None
    pg: psycopg.Connection[Any]
    database: str

    def _pg_pids(self) -> list[int]:
        rows = self.pg.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (self.database,)
        ).fetchall()
        return [r[0] for r in rows]

    def snapshot(self) -> dict[str, Any]:
        pg_pids = self._pg_pids()
        table = _proc_table()
        own = _own_ticks(self.worker_pid)
        return {
            "api": tree_ticks(table, self.api_pid),
            "worker": tree_ticks(table, self.worker_pid),
            "worker_own": own,
            "redis": table[self.redis_pid][1] if self.redis_pid in table else 0,  # type: ignore[index]
            "pg": {pid: table[pid][1] for pid in pg_pids if pid in table},
        }

    @staticmethod
    def delta_ms(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        to_ms = 1000 / CLK_TCK
        # A backend born inside the window counts in full; one that ended inside it is missed
        # (the pools keep their connections, so there are few of either).
        pg = sum(ticks - a["pg"].get(pid, 0) for pid, ticks in b["pg"].items())
        return {
            "api": (b["api"] - a["api"]) * to_ms,
            "worker": (b["worker"] - a["worker"]) * to_ms,
            "worker_own": (b["worker_own"] - a["worker_own"]) * to_ms,
            "postgresql": pg * to_ms,
            "redis": (b["redis"] - a["redis"]) * to_ms,
        }


# ---- the raw figures ----------------------------------------------------------------------


def plain_python() -> str:
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3") or "python3"


def raw_figures(runs: int) -> dict[str, float]:
    py = plain_python()
    argv = [py, "-c", HELLO]
    walls = []
    c0 = os.times()
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        walls.append((time.perf_counter() - t0) * 1000)
    c1 = os.times()
    cpu_ms = ((c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)) * 1000 / runs
    paused = []  # the same after a pause, as the "after the last result" figure is measured
    for _ in range(runs):
        time.sleep(THINK_S)
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        paused.append((time.perf_counter() - t0) * 1000)

    def worker(n: int) -> None:
        for _ in range(n):
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)

    per_thread = max(10, runs)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(per_thread,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_s = 2 * per_thread / (time.perf_counter() - t0)
    return {"latency_median_ms": statistics.median(walls), "latency_p95_ms": pct(walls, 95),
            "paused_latency_median_ms": statistics.median(paused), "cpu_ms": cpu_ms, "runs_per_s": per_s}


# ---- the stack ----------------------------------------------------------------------------


@dataclass
class Stack:
    base: str
    env: dict[str, str]
    database_url: str
    database: str
    api: Process
    worker: Process
    redis_server: RedisServer | None = None
    procs: list[Process] = field(default_factory=list)

    def close(self) -> None:
        for p in (self.worker, self.api):
            p.stop()
        if self.redis_server:
            self.redis_server.destroy()
        try:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        except psycopg.Error:
            pass


def start_stack(redis_url: str | None, private_redis: bool, extra_env: dict[str, str] | None = None) -> Stack:
    server = None
    if private_redis:
        server = RedisServer().start()
        redis_url = server.url
    assert redis_url
    db_url = create_database(PG_ADMIN)
    flush_redis(redis_url)
    env = base_env(DATABASE_URL=db_url, REDIS_URL=redis_url)
    # The test suite's short background intervals (a reconciler pass and a storage clean-up
    # every second, a 4 s heartbeat) and its unlimited storage caps would put background work on
    # every run's bill: the stack runs with the product's defaults for them.
    for name in BACKGROUND_TEST_SETTINGS:
        env.pop(name, None)
    # Every bench client comes from 127.0.0.1, as if through one reverse proxy: the per-address
    # connection cap (64) would answer part of the concurrent waits 429 TOO_MANY_CONNECTIONS.
    env["LIVECODE_CONNECTION_LIMIT_EXEMPT"] = "127.0.0.1"
    env.update(extra_env or {})
    subprocess.run(livecode("db", "upgrade"), env=env, check=True, capture_output=True)
    port = free_port()
    # The API's defaults: one process here (the setup), its default thread count.
    api = Process(livecode("api", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"), env, "api")
    base = f"http://127.0.0.1:{port}"
    wait_api(api, base)
    worker = Process(livecode("worker", "-n", f"bench-{uuid.uuid4().hex[:6]}@bench"), env, "worker")
    wait_workers(base, 1)
    return Stack(base, env, db_url, db_url.rsplit("/", 1)[1], api, worker, server)


def redis_pid(url: str) -> int:
    return int(redis.Redis.from_url(url).info("server")["process_id"])


# ---- the measurements ---------------------------------------------------------------------


def wait_all_done(pg: psycopg.Connection[Any], ids: list[str], timeout: float = 300, every_s: float = 0.05) -> None:
    """Until every id is terminal, asked of PostgreSQL directly every `every_s` (not through the
    API, whose CPU is being measured); this backend is left out of the count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = pg.execute(
            "SELECT count(*) FROM executions WHERE id = ANY(%s::uuid[]) AND status IN ('COMPLETED','FAILED','TIMEOUT')",
            (ids,),
        ).fetchone()[0]  # type: ignore[index]
        if n == len(ids):
            return
        time.sleep(every_s)
    raise TimeoutError(f"{len(ids)} executions not all finished after {timeout}s")


def cpu_stat() -> tuple[int, int]:
    """(all, idle + iowait) ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]


def throughput(stack: Stack, meter: CpuMeter, pg: psycopg.Connection[Any], source: str, language: str,
               count: int) -> dict[str, Any]:
    api = ApiClient(stack.base)
    sessions = [api.create_session(source, language)["session_id"] for _ in range(count)]
    locals_ = threading.local()

    def http() -> requests.Session:
        if not hasattr(locals_, "s"):
            locals_.s = requests.Session()
        return locals_.s  # type: ignore[no-any-return]

    def submit(sid: str) -> str:
        r = http().post(f"{stack.base}/api/v1/executions/session/{sid}/execute", json={}, timeout=60)
        assert r.status_code == 202, r.text
        return r.json()["execution_id"]  # type: ignore[no-any-return]

    def read(eid: str) -> str:
        return http().get(f"{stack.base}/api/v1/executions/{eid}", timeout=60).json()["status"]  # type: ignore[no-any-return]

    a, threads_a, stat_a = meter.snapshot(), thread_ticks(meter.worker_pid), cpu_stat()
    client0 = time.process_time()  # this process: the client's submissions and polls
    t0, wall0 = time.perf_counter(), time.time()
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(submit, sessions))
    wait_all_done(pg, ids, every_s=0.01)  # the machine's idle share below is read when this sees the end
    # The phase ends when the last execution finished, as its row says (the worker's clock is this
    # machine's), not when the poll above saw it.
    last = pg.execute("SELECT extract(epoch FROM max(finished_at)) FROM executions WHERE id = ANY(%s::uuid[])",
                      (ids,)).fetchone()[0]  # type: ignore[index]
    elapsed = min(time.perf_counter() - t0, float(last) - wall0)
    stat_b, client = cpu_stat(), time.process_time() - client0
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(read, ids))
    b, threads_b = meter.snapshot(), thread_ticks(meter.worker_pid)
    cpu = {k: v / count for k, v in CpuMeter.delta_ms(a, b).items()}
    threads = by_thread_kind(meter.worker_pid, threads_a, threads_b, count)
    if threads:
        threads["threads that ended"] = max(0.0, cpu["worker_own"] - sum(threads.values()))
    # How busy the cores were: the machine's idle share (other load on the host fills it too),
    # and the stack's CPU over the phase as a share of every core (one GET per run included).
    cores = os.cpu_count() or 1
    idle = (stat_b[1] - stat_a[1]) / max(1, stat_b[0] - stat_a[0])
    stack_share = sum(v for k, v in cpu.items() if k != "worker_own") * count / (elapsed * 1000 * cores)
    return {"count": count, "seconds": elapsed, "per_s": count / elapsed, "cpu_ms": cpu,
            "machine_idle": idle, "stack_share": stack_share, "cores": cores,
            "client_share": client / (elapsed * cores),
            "worker_threads_ms": threads, "completed": statuses.count("COMPLETED")}


THINK_S = 0.2  # the pause before each run of the "after the last result" figure


def latencies(base: str, runs: int, meter: CpuMeter | None = None) -> dict[str, Any]:
    api = ApiClient(base)
    sid = api.create_session(HELLO)["session_id"]
    http = requests.Session()
    url = f"{base}/api/v1/executions/session/{sid}/execute"
    waited, polled, posts, gets, fallbacks = [], [], [], [], 0
    for _ in range(3):  # warm the path (pool, caches)
        r = http.post(url + "?wait=true", json={}, timeout=60)
        if r.status_code == 202:  # no blocking wait (old code): the next run must not find this one active
            api.wait_execution(r.json()["execution_id"])
    cpu: dict[str, float] = {}
    a = meter.snapshot() if meter else None
    for _ in range(runs):
        t0 = time.perf_counter()
        r = http.post(url + "?wait=true", json={}, timeout=60)
        waited.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:  # no blocking wait (old code): poll to the end before the next
            fallbacks += 1
            api.wait_execution(r.json()["execution_id"])
    if meter and a:
        b = meter.snapshot()
        cpu["wait_api_cpu_ms"] = CpuMeter.delta_ms(a, b)["api"] / runs
    # As a user presses Run: after a pause (reading the last output, editing), not back to back.
    # Back to back, each run's sandbox set-up for the next (the pool's refill) competes with it
    # for the 2 cores; after a pause it is done.
    paused = []
    for _ in range(runs):
        time.sleep(THINK_S)
        t0 = time.perf_counter()
        r = http.post(url + "?wait=true", json={}, timeout=60)
        paused.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            api.wait_execution(r.json()["execution_id"])
    if meter:
        a = meter.snapshot()
    eid = ""
    for _ in range(runs):
        t0 = time.perf_counter()
        r = http.post(url, json={}, timeout=60)
        t1 = time.perf_counter()
        eid = r.json()["execution_id"]
        while http.get(f"{base}/api/v1/executions/{eid}", timeout=60).json()["status"] not in TERMINAL:
            time.sleep(0.002)
        polled.append((time.perf_counter() - t0) * 1000)
        posts.append((t1 - t0) * 1000)
    if meter and a:
        cpu["poll_api_cpu_ms"] = CpuMeter.delta_ms(a, meter.snapshot())["api"] / runs
    paused_poll = []  # the same after a pause, as a user presses Run
    for _ in range(runs):
        time.sleep(THINK_S)
        t0 = time.perf_counter()
        eid = http.post(url, json={}, timeout=60).json()["execution_id"]
        while http.get(f"{base}/api/v1/executions/{eid}", timeout=60).json()["status"] not in TERMINAL:
            time.sleep(0.002)
        paused_poll.append((time.perf_counter() - t0) * 1000)
    for _ in range(max(runs, 50)):
        t0 = time.perf_counter()
        http.get(f"{base}/api/v1/executions/{eid}", timeout=60)
        gets.append((time.perf_counter() - t0) * 1000)
    # As an editor runs: the code changed since the last run (autosave, untimed), so the
    # submission also makes the history version of the code it runs.
    edited = []
    for i in range(runs):
        http.patch(f"{base}/api/v1/code-sessions/{sid}", json={"source_code": f"print('hi {i}')"}, timeout=60)
        t0 = time.perf_counter()
        r = http.post(url, json={}, timeout=60)
        edited.append((time.perf_counter() - t0) * 1000)
        api.wait_execution(r.json()["execution_id"])
    return {
        "wait_median_ms": statistics.median(waited), "wait_p95_ms": pct(waited, 95), "wait_fallbacks": fallbacks,
        "paused_wait_median_ms": statistics.median(paused), "paused_wait_p95_ms": pct(paused, 95),
        "paused_poll_median_ms": statistics.median(paused_poll),
        "poll_median_ms": statistics.median(polled), "post_median_ms": statistics.median(posts),
        "get_median_ms": statistics.median(gets), "edited_post_median_ms": statistics.median(edited), **cpu,
    }


def concurrent_waits(base: str, count: int) -> dict[str, Any]:
    """`count` blocking waits at once (hello worlds), and the latency of an ordinary GET meanwhile;
    the same GET while `count` runs submitted without a wait drain (the machine as busy with the
    runs, no request waiting): what the waits themselves cost the other requests."""
    api = ApiClient(base)
    done = api.run(HELLO)["execution_id"]
    sessions = [api.create_session(HELLO)["session_id"] for _ in range(count)]  # each used twice
    probe_url = f"{base}/api/v1/executions/{done}"
    http = requests.Session()

    def probe(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            http.get(probe_url, timeout=60)
            out.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.02)
        return out

    def probing(during: Callable[[], Any]) -> tuple[Any, list[float]]:
        busy: list[float] = []
        stop = threading.Event()

        def prober() -> None:
            while not stop.is_set():
                busy.extend(probe(1))

        t = threading.Thread(target=prober)
        t.start()
        try:
            return during(), busy
        finally:
            stop.set()
            t.join()

    idle = probe(30)
    barrier = threading.Barrier(count)

    def submit_all() -> None:  # the same runs, no wait: the POSTs at once, then the drain watched
        def one(sid: str) -> str:
            barrier.wait()
            return str(requests.post(f"{base}/api/v1/executions/session/{sid}/execute", json={},
                                     timeout=120).json()["execution_id"])

        with ThreadPoolExecutor(count) as pool:
            ids = list(pool.map(one, sessions))
        for eid in ids:
            api.wait_execution(eid, timeout=300)

    _, no_wait = probing(submit_all)
    barrier = threading.Barrier(count)

    def one(sid: str) -> tuple[int, float]:
        barrier.wait()
        t0 = time.perf_counter()
        code = requests.post(f"{base}/api/v1/executions/session/{sid}/execute?wait=true", json={},
                             timeout=120).status_code
        return code, time.perf_counter() - t0

    def wait_all() -> list[tuple[int, float]]:
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(one, sessions))

    t0 = time.perf_counter()
    answers, busy = probing(wait_all)
    seconds = time.perf_counter() - t0
    codes = [c for c, _ in answers]
    # A 202 within a second: the process's wait cap was full; later: the wait ran out (queue too long).
    at_once = sum(1 for c, dt in answers if c == 202 and dt < 1.0)
    return {"count": count, "answered_200": codes.count(200), "answered_202": codes.count(202),
            "answered_202_at_once": at_once,
            "other": len(codes) - codes.count(200) - codes.count(202), "seconds": seconds,
            "get_idle_median_ms": statistics.median(idle), "get_busy_median_ms": statistics.median(busy),
            "get_busy_p95_ms": pct(busy, 95), "get_busy_max_ms": max(busy),
            "get_no_wait_median_ms": statistics.median(no_wait), "get_no_wait_p95_ms": pct(no_wait, 95)}


WRK_LUA = """
local paths = {%s}
local body = '{"source_code": "print(\\'autosave\\')"}'
local n = 0
request = function()
  n = n + 1
  return wrk.format("PATCH", paths[(n %% #paths) + 1], {["Content-Type"] = "application/json"}, body)
end
"""


def _versions(pg: psycopg.Connection[Any], sessions: list[str]) -> int:
    row = pg.execute("SELECT coalesce(sum(version), 0) FROM code_sessions WHERE id = ANY(%s::uuid[])",
                     (sessions,)).fetchone()
    return int(row[0])  # type: ignore[index]


def _user_sys_ticks(root: int) -> tuple[int, int]:
    """(user, system) ticks of a process tree (its live members, their reaped children included)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    user = system = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/stat") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(rest[11]) + int(rest[13])
        system += int(rest[12]) + int(rest[14])
        todo.extend(children.get(pid, ()))
    return user, system


def _postmaster_pid(pg: psycopg.Connection[Any]) -> int:
    """The PostgreSQL server's first process: the parent of this connection's backend."""
    backend = pg.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    return _proc_table()[int(backend)][0]


def _pg_sessions(pg: psycopg.Connection[Any]) -> int:
    """Sessions ever opened on the connection's database (PostgreSQL 14+)."""
    row = pg.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def autosave(
    base: str, pg: psycopg.Connection[Any], seconds: int, clients: int = 32,
    prepare: Callable[[list[str]], None] | None = None, meter: CpuMeter | None = None,
) -> dict[str, Any]:
    """PATCH autosaves from `clients` connections over as many sessions (one editor each). Every
    successful PATCH adds one to its session's version, so the versions in PostgreSQL afterwards
    must have grown by at least the number of 2xx answers: otherwise an acknowledged save was lost.
    `prepare`: called with the sessions before the load (bench_autosave_history.py). `meter`: also
    the CPU per autosave of the API, PostgreSQL and the load tool (wrk), and the machine's idle share."""
    api = ApiClient(base)
    sessions = [api.create_session(HELLO)["session_id"] for _ in range(clients)]
    if prepare is not None:
        prepare(sessions)
    before = _versions(pg, sessions)
    snap = meter.snapshot() if meter else None
    machine0, tool0 = cpu_stat(), os.times()
    api_pid = meter.api_pid if meter else None
    api0 = _user_sys_ticks(api_pid) if api_pid else (0, 0)
    sessions0 = _pg_sessions(pg)
    postmaster = _postmaster_pid(pg)
    server0 = tree_ticks(_proc_table(), postmaster)
    if have("wrk"):
        paths = ", ".join(f'"/api/v1/code-sessions/{s}"' for s in sessions)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
            fh.write(WRK_LUA % paths)
        out = subprocess.run(["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--latency", "-s", fh.name, base],
                             capture_output=True, text=True, check=True).stdout
        os.unlink(fh.name)
        total = int(next(line for line in out.splitlines() if "requests in" in line).split()[0])
        non2xx = next((int(line.split(":")[1]) for line in out.splitlines() if "Non-2xx" in line), 0)
        p99 = next(line.split()[1] for line in out.splitlines() if line.strip().startswith("99%"))
        rps = float(next(line for line in out.splitlines() if line.startswith("Requests/sec")).split()[1])
        ok, tool = total - non2xx, "wrk"
        p99_ms = _wrk_ms(p99)
    else:
        lat: list[float] = []
        oks = [0]
        deadline = time.perf_counter() + seconds
        lock = threading.Lock()

        def client(sid: str) -> None:
            http = requests.Session()
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = http.patch(f"{base}/api/v1/code-sessions/{sid}", json={"source_code": "print('autosave')"})
                with lock:
                    lat.append((time.perf_counter() - t0) * 1000)
                    oks[0] += 200 <= r.status_code < 300

        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, sessions))
        rps, ok, tool, p99_ms = len(lat) / (time.perf_counter() - t0), oks[0], "python threads", pct(lat, 99)
    out: dict[str, Any] = {}
    if meter and snap:
        cpu = CpuMeter.delta_ms(snap, meter.snapshot())
        t1, machine1 = os.times(), cpu_stat()
        tool_ms = ((t1.children_user - tool0.children_user) + (t1.children_system - tool0.children_system)) * 1000
        n = max(1, ok)
        api1 = _user_sys_ticks(meter.api_pid)
        server_ms = (tree_ticks(_proc_table(), postmaster) - server0) * 1000 / CLK_TCK
        out = {"cpu_ms": {"api": cpu["api"] / n, "postgresql": cpu["postgresql"] / n, "tool": tool_ms / n,
                          "api_user": (api1[0] - api0[0]) * 1000 / CLK_TCK / n,
                          "api_sys": (api1[1] - api0[1]) * 1000 / CLK_TCK / n,
                          "postgresql_server": server_ms / n},
               "machine_idle": (machine1[1] - machine0[1]) / max(1, machine1[0] - machine0[0]),
               "pg_sessions_opened": _pg_sessions(pg) - sessions0}
    grown = _versions(pg, sessions) - before
    return {"tool": tool, "clients": clients, "per_s": rps, "p99_ms": p99_ms, "ok": ok,
            "versions_grown": grown, "durable": grown >= ok, **out}


def _wrk_ms(text: str) -> float:
    for unit, scale in (("ms", 1.0), ("us", 0.001), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


# ---- the table ----------------------------------------------------------------------------


def table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str, str]] = []

    def add(name: str, value: str, ref: str = "", ratio: str = "", target: str = "") -> None:
        rows.append((name, value, ref, ratio, target))

    tp = r.get("throughput")
    if tp is None:  # --autosave-only
        _autosave_rows(r["autosave"], add)
        return _format(rows)
    raw = r["raw"]
    add(f"hello world executions/s ({tp['count']} at once)", f"{tp['per_s']:.1f}",
        f"{raw['runs_per_s']:.0f} plain runs/s, 2 parallel", f"{100 * tp['per_s'] / raw['runs_per_s']:.0f} %",
        ">= 50 %")
    add("  while they ran: the stack's CPU / machine idle", f"{100 * tp['stack_share']:.0f} % / "
        f"{100 * tp['machine_idle']:.0f} % of {tp['cores']} cores", "", "", "")
    if "client_share" in tp:
        add("  … this bench's client (submissions, polls)", f"{100 * tp['client_share']:.0f} %", "", "", "")
    if r.get("throughput_c"):
        c = r["throughput_c"]
        add(f"cached C executions/s ({c['count']} at once)", f"{c['per_s']:.1f}", "", "", "")
    cpu = tp["cpu_ms"]
    total = sum(v for k, v in cpu.items() if k != "worker_own")
    add("CPU per execution, all (POST + run + one GET)", f"{total:.1f} ms", f"program {raw['cpu_ms']:.1f} ms",
        f"{total / raw['cpu_ms']:.1f}x", "<= 2x")
    for kind in ("api", "worker", "postgresql", "redis"):
        note = " (shared server)" if kind == "redis" and not r["private_redis"] else ""
        add(f"  of which {kind}{note}", f"{cpu[kind]:.1f} ms", "", f"{cpu[kind] / raw['cpu_ms']:.2f}x", "")
        if kind == "worker":
            own, sandboxes = cpu["worker_own"], cpu["worker"] - cpu["worker_own"]
            add("    worker's own Python process / its sandboxes", f"{own:.1f} / {sandboxes:.1f} ms", "", "", "")
            for name, ms in sorted(tp.get("worker_threads_ms", {}).items(), key=lambda kv: -kv[1]):
                add(f"      own process: {name}", f"{ms:.1f} ms", "", "", "")
    lat = r["latency"]
    plain = raw["latency_median_ms"]
    if lat["wait_fallbacks"]:  # the API answered 202: no blocking wait there
        add("execute -> result, blocking wait", f"n/a ({lat['wait_fallbacks']} answered 202)",
            f"plain run {plain:.1f} ms", "", "")
    else:
        add("execute -> result, blocking wait, median", f"{lat['wait_median_ms']:.1f} ms",
            f"plain run {plain:.1f} ms", f"{lat['wait_median_ms'] / plain:.1f}x", "<= 1.5x")
        add("execute -> result, blocking wait, p95", f"{lat['wait_p95_ms']:.1f} ms", "",
            f"{lat['wait_p95_ms'] / plain:.1f}x", "<= 2x")
        paused_plain = raw["paused_latency_median_ms"]
        add(f"  the same {THINK_S * 1000:.0f} ms after the last result, median / p95",
            f"{lat['paused_wait_median_ms']:.1f} / {lat['paused_wait_p95_ms']:.1f} ms",
            f"plain run after a pause {paused_plain:.1f} ms",
            f"{lat['paused_wait_median_ms'] / paused_plain:.1f}x / {lat['paused_wait_p95_ms'] / paused_plain:.1f}x", "")
    add("execute -> result, polling every 2 ms, median", f"{lat['poll_median_ms']:.1f} ms", "",
        f"{lat['poll_median_ms'] / plain:.1f}x", "<= 2.5x")
    add(f"  the same {THINK_S * 1000:.0f} ms after the last result, median", f"{lat['paused_poll_median_ms']:.1f} ms",
        "", f"{lat['paused_poll_median_ms'] / raw['paused_latency_median_ms']:.1f}x", "")
    if "wait_api_cpu_ms" in lat:
        add("API CPU per run: blocking wait / polling every 2 ms",
            f"{lat['wait_api_cpu_ms']:.1f} / {lat['poll_api_cpu_ms']:.1f} ms", "", "", "")
    add("POST .../execute, median", f"{lat['post_median_ms']:.1f} ms", "", "", "<= 4 ms")
    add("  the same after an edit (a history version made)", f"{lat['edited_post_median_ms']:.1f} ms", "", "", "")
    add("GET /api/v1/executions/{id}, median", f"{lat['get_median_ms']:.1f} ms", "", "", "<= 2 ms")
    if r.get("waits"):
        w = r["waits"]
        add(f"{w['count']} concurrent waits: 200 / 202 (at once: cap) / other",
            f"{w['answered_200']} / {w['answered_202']} ({w['answered_202_at_once']}) / {w['other']}",
            f"in {w['seconds']:.1f} s", "", "")
        add("  ordinary GET meanwhile, median / p95", f"{w['get_busy_median_ms']:.1f} / {w['get_busy_p95_ms']:.1f} ms",
            f"idle {w['get_idle_median_ms']:.1f} ms", "", "")
        if "get_no_wait_median_ms" in w:
            add(f"  the same GET while {w['count']} runs drain, no wait", f"{w['get_no_wait_median_ms']:.1f} / "
                f"{w['get_no_wait_p95_ms']:.1f} ms", "", "", "")
    if r.get("autosave"):
        _autosave_rows(r["autosave"], add)
    if r.get("embedded"):
        e = r["embedded"]
        if e["wait_fallbacks"]:
            add("embedded: blocking wait", f"n/a ({e['wait_fallbacks']} answered 202)", "", "", "")
        else:
            add("embedded: blocking wait, median / p95", f"{e['wait_median_ms']:.1f} / {e['wait_p95_ms']:.1f} ms",
                "", f"{e['wait_median_ms'] / plain:.1f}x", "<= 1.5x")
            add(f"  the same {THINK_S * 1000:.0f} ms after the last result, median / p95",
                f"{e['paused_wait_median_ms']:.1f} / {e['paused_wait_p95_ms']:.1f} ms", "",
                f"{e['paused_wait_median_ms'] / raw['paused_latency_median_ms']:.1f}x", "")
        add("embedded: polling, median", f"{e['poll_median_ms']:.1f} ms", "", f"{e['poll_median_ms'] / plain:.1f}x",
            "<= 2.5x")
        add(f"  the same {THINK_S * 1000:.0f} ms after the last result, median", f"{e['paused_poll_median_ms']:.1f} ms",
            "", f"{e['paused_poll_median_ms'] / raw['paused_latency_median_ms']:.1f}x", "")
        add("embedded: POST / GET median", f"{e['post_median_ms']:.1f} / {e['get_median_ms']:.1f} ms", "", "", "")
    return _format(rows)


def _autosave_rows(a: dict[str, Any], add: Callable[..., None]) -> None:
    add(f"autosave PATCH/s, {a['clients']} connections ({a['tool']})", f"{a['per_s']:.0f}", "", "", ">= 1000")
    add("  autosave p99", f"{a['p99_ms']:.0f} ms", "", "", "<= 50 ms")
    add("  every 2xx durable", "yes" if a["durable"] else "NO",
        f"{a['ok']} 2xx, versions +{a['versions_grown']}", "", "")
    if "cpu_ms" in a:
        c = a["cpu_ms"]
        add("  CPU per autosave: API (user + system) / PostgreSQL / the load tool",
            f"{c['api']:.2f} ({c['api_user']:.2f} + {c['api_sys']:.2f}) / {c['postgresql']:.2f} / {c['tool']:.2f} ms",
            f"machine idle {100 * a['machine_idle']:.0f} %", "", "")
        add("  PostgreSQL connections opened meanwhile; the whole server's CPU per autosave",
            f"{a['pg_sessions_opened']}; {c['postgresql_server']:.2f} ms", "(other users' work included)", "", "")


def _format(rows: list[tuple[str, str, str, str, str]]) -> str:
    head = ("figure", "LiveCode", "raw, same run", "ratio", "target")
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(5)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    return "\n".join(lines)


def autosave_only(args: argparse.Namespace) -> None:
    """The autosave phase alone, on a stack of its own, with the CPU per autosave by process."""
    report: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg()}
    stack = start_stack(args.redis_url, args.private_redis, dict(item.split("=", 1) for item in args.env))
    pg = psycopg.connect(stack.database_url, autocommit=True)
    try:
        meter = CpuMeter(stack.api.proc.pid, stack.worker.proc.pid, None, psycopg.connect(PG_ADMIN, autocommit=True),
                         stack.database)
        report["autosave"] = autosave(stack.base, pg, args.seconds or 10, meter=meter)
    finally:
        pg.close()
        stack.close()
    print_report(report, args.json)


def print_report(report: dict[str, Any], as_json: bool) -> None:
    report["load_after"] = os.getloadavg()
    print(f"machine: {report['machine']}; load average before {report['load_before'][0]:.1f}, "
          f"after {report['load_after'][0]:.1f}")
    print(table(report))
    if as_json:
        print(json.dumps(report, indent=2, default=str))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small counts: about a minute in all")
    p.add_argument("--runs", type=int, help="sequential runs per latency figure (default 100; quick 30)")
    p.add_argument("--throughput", type=int, help="executions submitted at once (default 200; quick 60)")
    p.add_argument("--waits", type=int, help="concurrent blocking waits (default 200; quick 100; 0 skips)")
    p.add_argument("--seconds", type=int, help="autosave load duration (default 15; quick 5; 0 skips)")
    p.add_argument("--no-c", action="store_true", help="skip the cached C program")
    p.add_argument("--no-embedded", action="store_true", help="skip the embedded mode")
    p.add_argument("--redis-url", default=os.environ.get("LIVECODE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"),
                   help="the Redis database the bench may flush (default %(default)s)")
    p.add_argument("--worker-concurrency", type=int,
                   help="runs at once in the worker (default: its own default, LIVECODE_WORKER_CONCURRENCY unset)")
    p.add_argument("--private-redis", action="store_true", help="start a redis-server for the bench alone")
    p.add_argument("--json", action="store_true", help="also print every figure as JSON")
    p.add_argument("--autosave-only", action="store_true",
                   help="only the autosave load (--seconds, default 10), with the CPU per autosave")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting for the stack's processes, e.g. LIVECODE_SANDBOX_WARM_START=false (repeatable; "
                        "the bench's own environment does not reach them)")
    args = p.parse_args()
    if args.autosave_only:
        autosave_only(args)
        return
    runs = args.runs or (30 if args.quick else 100)
    count = args.throughput or (60 if args.quick else 200)
    waits = args.waits if args.waits is not None else (100 if args.quick else 200)
    seconds = args.seconds if args.seconds is not None else (5 if args.quick else 15)

    report: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg(), "private_redis": args.private_redis}
    report["raw"] = raw_figures(runs)
    settings = dict(item.split("=", 1) for item in args.env)
    extra = {"LIVECODE_WORKER_CONCURRENCY": str(args.worker_concurrency)} if args.worker_concurrency else {}
    extra.update(settings)
    stack = start_stack(args.redis_url, args.private_redis, extra)
    pg = psycopg.connect(stack.database_url, autocommit=True)
    try:
        meter = CpuMeter(stack.api.proc.pid, stack.worker.proc.pid, redis_pid(stack.env["REDIS_URL"]),
                         psycopg.connect(PG_ADMIN, autocommit=True), stack.database)
        api = ApiClient(stack.base)
        api.run(HELLO)  # warm the worker and its sandbox pool
        report["throughput"] = throughput(stack, meter, pg, HELLO, "python", count)
        if not args.no_c:
            api.run(C_HELLO, "c", timeout=120)  # compiled once; the runs below hit the cache
            report["throughput_c"] = throughput(stack, meter, pg, C_HELLO, "c", max(20, count // 2))
        report["latency"] = latencies(stack.base, runs, meter)
        if waits:
            report["waits"] = concurrent_waits(stack.base, waits)
        if seconds:
            report["autosave"] = autosave(stack.base, pg, seconds)
    finally:
        pg.close()
        stack.close()
    if not args.no_embedded:
        data_dir = tempfile.mkdtemp(prefix="lc-bench-embedded-")
        emb = embedded_stack(data_dir, **settings)
        try:
            ApiClient(emb.base).run(HELLO)
            report["embedded"] = latencies(emb.base, runs)
        finally:
            emb.stop()
            shutil.rmtree(data_dir, ignore_errors=True)
    print_report(report, args.json)


if __name__ == "__main__":
    main()
