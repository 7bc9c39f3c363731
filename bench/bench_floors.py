"""The floors under the cost issue's targets: what the parts that issue keeps cost on their own.

    .venv/bin/python -m bench.bench_floors [--n 1500] [--seconds 8] [--redis-url redis://127.0.0.1:6379/13]
    .venv/bin/python -m bench.bench_floors --sandbox-only [--runs 60] [--uid-base 64000]

Issue 11 keeps Flask and Flask-RESTX serving the API, Celery on Redis carrying the work,
PostgreSQL as the truth and every protection of the sandbox. This measures each of those alone,
with none of LiveCode's own logic, on this machine, in one run:

1. **An empty Flask-RESTX route** (POST answering a small JSON, as `…/execute` does without any
   work) behind LiveCode's own server (gunicorn, the front worker, 1 process, 128 threads):
   the server's CPU per request (sequential keep-alive requests), and requests/s and p99 with 32
   connections (wrk): no route of this stack can do more, so it is the ceiling of autosave.
2. **The same route doing one autosave's write**: one autocommit `UPDATE … RETURNING` on
   PostgreSQL through SQLAlchemy Core, the least an acknowledged autosave must do: requests/s and
   p99 with 32 connections.
3. **An empty Celery task** with the worker's settings (Redis broker, `acks_late`, threads pool,
   prefetch 1, concurrency 2): the worker's CPU per task (its process tree), the producer's CPU
   per `apply_async` and the Redis server's CPU per task.
4. **The sandbox**: LiveCode's bubblewrap runner (no pool, so the set-up is counted) running the
   Python hello world, against the same program bare: CPU per run (children's rusage); and the
   sandbox alone: a fresh sandbox running /bin/true (`--sandbox-only`: this part only).

It then adds the floors of one execution: the program in its sandbox, two empty requests (the
POST and one GET of the result) and one empty task, as a ratio to the program's own CPU, and
compares the throughput and latency floors with the issue's targets. Never a pass/fail test.
Needs root (the sandbox), PostgreSQL on 127.0.0.1:5432 and Redis.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import psycopg
import redis
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from bench.bench_cost import PG_ADMIN, _proc_table, _wrk_ms, plain_python, redis_pid, tree_ticks  # noqa: E402
from bench.common import machine  # noqa: E402
from tests.support.procs import Process, free_port, wait_for  # noqa: E402

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
HELLO = "print('hi')"

# The floor app: Flask-RESTX with one namespace, as the API's routes are declared, and nothing else.
APP = textwrap.dedent(
    """
    import os, sys, uuid
    from flask import Flask
    from flask_restx import Api, Namespace, Resource
    from sqlalchemy import create_engine, text

    def make_app():
        app = Flask("floor")
        api = Api(app, doc=False)
        ns = Namespace("floor")
        engine = create_engine(os.environ["FLOOR_DB"], pool_size=20, max_overflow=0,
                               isolation_level="AUTOCOMMIT")
        save = text("UPDATE floor SET version = version + 1, body = :b WHERE id = :i RETURNING version")

        @ns.route("/empty")
        class Empty(Resource):
            def post(self):
                return {"execution_id": str(uuid.uuid4()), "status": "QUEUED"}, 202

            def get(self):
                return {"execution_id": str(uuid.uuid4()), "status": "COMPLETED"}

        @ns.route("/save/<int:i>")
        class Save(Resource):
            def patch(self, i):
                with engine.connect() as conn:
                    version = conn.execute(save, {"b": "print('autosave')", "i": i}).scalar_one()
                return {"version": version}

        api.add_namespace(ns, path="/floor")
        return app

    if __name__ == "__main__":
        sys.path.insert(0, os.environ["FLOOR_SRC"])
        from livecode.web.server import serve
        serve(make_app, host="127.0.0.1", port=int(sys.argv[1]), workers=1, threads=128)
    """
)

WRK_LUA = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("%s", "/floor/%s" .. (counter %% 32), {["Content-Type"] = "application/json"}, "{}")
end
"""


def _ticks(pid: int) -> int:
    return tree_ticks(_proc_table(), pid)


def start_floor_api(db_url: str) -> tuple[Process, str, Path]:
    tmp = Path(tempfile.mkdtemp(prefix="lc-floor-"))
    (tmp / "floor_app.py").write_text(APP)
    port = free_port()
    env = {**os.environ, "FLOOR_DB": db_url, "FLOOR_SRC": str(REPO / "src"), "PYTHONPATH": str(tmp)}
    proc = Process([sys.executable, str(tmp / "floor_app.py"), str(port)], env, "floor-api")
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/floor/empty", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_for(up, 30, 0.1, what="the floor app")
    return proc, base, tmp


def api_floor(proc: Process, base: str, n: int) -> dict[str, float]:
    http = requests.Session()
    for _ in range(50):
        http.post(f"{base}/floor/empty")
    out = {}
    for method in ("post", "get"):
        before, t0 = _ticks(proc.proc.pid), time.perf_counter()
        for _ in range(n):
            getattr(http, method)(f"{base}/floor/empty")
        wall = time.perf_counter() - t0
        out[f"{method}_cpu_ms"] = (_ticks(proc.proc.pid) - before) * TICK_MS / n
        out[f"{method}_wall_ms"] = wall * 1000 / n
    return out


def wrk(base: str, method: str, path: str, seconds: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_LUA % (method, path))
    try:
        out = subprocess.run(
            ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", fh.name, base],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(fh.name)
    lines = out.splitlines()
    non2xx = next((int(line.split(":")[1]) for line in lines if "Non-2xx" in line), 0)
    return {
        "per_s": float(next(line for line in lines if line.startswith("Requests/sec")).split()[1]),
        "p99_ms": _wrk_ms(next(line.split()[1] for line in lines if line.strip().startswith("99%"))),
        "non2xx": non2xx,
    }


CELERY_APP = textwrap.dedent(
    """
    import os
    from celery import Celery
    app = Celery("floor", broker=os.environ["FLOOR_REDIS"])
    app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_ignore_result=True,
                    worker_send_task_events=False, broker_connection_retry_on_startup=True,
                    worker_hijack_root_logger=False)

    @app.task(name="floor.noop", acks_late=True)
    def noop(execution_id):
        return None
    """
)


def celery_floor(redis_url: str, n: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="lc-floor-celery-"))
    (tmp / "floor_tasks.py").write_text(CELERY_APP)
    env = {**os.environ, "FLOOR_REDIS": redis_url, "PYTHONPATH": str(tmp)}
    redis.Redis.from_url(redis_url).flushdb()
    worker = Process(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "floor_tasks",
            "worker",
            "--pool",
            "threads",
            "-c",
            "2",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ],
        env,
        "floor-worker",
    )
    sys.path.insert(0, str(tmp))
    os.environ["FLOOR_REDIS"] = redis_url
    import floor_tasks  # type: ignore[import-not-found]

    r = redis.Redis.from_url(redis_url)
    rpid = redis_pid(redis_url)
    try:
        time.sleep(3)  # the worker connects and starts consuming
        for _ in range(20):
            floor_tasks.noop.apply_async((str(uuid.uuid4()),))
        wait_for(lambda: r.llen("celery") == 0 and not r.hlen("unacked"), 60, 0.05, what="warm-up tasks")
        time.sleep(1)
        table = _proc_table()
        w0, r0 = tree_ticks(table, worker.proc.pid), table[rpid][1]
        p0 = time.process_time()
        for _ in range(n):
            floor_tasks.noop.apply_async((str(uuid.uuid4()),))
        producer = (time.process_time() - p0) * 1000 / n
        wait_for(lambda: r.llen("celery") == 0 and not r.hlen("unacked"), 120, 0.05, what="the tasks")
        table = _proc_table()
        return {
            "worker_cpu_ms": (tree_ticks(table, worker.proc.pid) - w0) * TICK_MS / n,
            "producer_cpu_ms": producer,
            "redis_cpu_ms": (table[rpid][1] - r0) * TICK_MS / n,
        }
    finally:
        worker.stop()


def _children_cpu_ms() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (ru.ru_utime + ru.ru_stime) * 1000


def sandbox_floor(runs: int, uid_base: int = 64000) -> dict[str, float]:
    from bench.bench_sandbox import sandboxed_true
    from livecode.sandbox import RunRequest, SandboxLimits, get_language, get_runner
    from livecode.sandbox.fontcache import font_list

    bare0 = _children_cpu_ms()
    for _ in range(runs):
        subprocess.run([plain_python(), "-c", HELLO], check=True, capture_output=True)
    bare = (_children_cpu_ms() - bare0) / runs
    base = Path(tempfile.mkdtemp(prefix="lc-floor-sandbox-"))
    base.chmod(0o700)
    runner = get_runner(
        "bwrap", work_root=str(base / "work"), cache_dir=str(base / "cache"), uid_base=uid_base, slots=4, pool_size=0
    )
    runner.check()
    try:
        req = RunRequest("python", HELLO, limits=SandboxLimits())
        runner.run(req)
        # The first Python run starts building matplotlib's font list in the background (a host
        # process of ~0.5 s of CPU, once per worker: fontcache.py); its CPU must not land in the
        # runs measured (it did until 2026-12-04 night: 5-10 ms per run of noise).
        python = get_language("python")
        assert python is not None
        font_list(python.run[0], wait_s=120.0)
        for _ in range(5):
            runner.run(req)
        c0, s0 = _children_cpu_ms(), time.process_time()
        for _ in range(runs):
            assert runner.run(req).stdout == "hi\n"
        c1, s1 = _children_cpu_ms(), time.process_time()
        for _ in range(runs):
            sandboxed_true(runner)
        return {
            "bare_cpu_ms": bare,
            "sandboxed_children_cpu_ms": (c1 - c0) / runs,
            "driver_cpu_ms": (s1 - s0) * 1000 / runs,
            "true_children_cpu_ms": (_children_cpu_ms() - c1) / runs,
            "true_driver_cpu_ms": (time.process_time() - s1) * 1000 / runs,
        }
    finally:
        runner.close()


def _print_sandbox_rows(sb: dict[str, float]) -> None:
    print(f'| the program bare (python3 -c "{HELLO}"), CPU | {sb["bare_cpu_ms"]:.1f} ms |')
    print(
        f"| the program in the sandbox (no pool): its processes / the runner's Python | "
        f"{sb['sandboxed_children_cpu_ms']:.1f} / {sb['driver_cpu_ms']:.1f} ms |"
    )
    print(
        f"| a sandbox alone (no pool; /bin/true in it): its processes / the runner's Python | "
        f"{sb['true_children_cpu_ms']:.1f} / {sb['true_driver_cpu_ms']:.1f} ms |"
    )


def _print_api_rows(api: dict[str, float], empty: dict[str, float], save: dict[str, float]) -> None:
    print(
        f"| empty Flask-RESTX POST / GET, server CPU per request (sequential) | "
        f"{api['post_cpu_ms']:.2f} / {api['get_cpu_ms']:.2f} ms |"
    )
    print(
        f"| empty Flask-RESTX POST / GET, wall per request (sequential, keep-alive) | "
        f"{api['post_wall_ms']:.2f} / {api['get_wall_ms']:.2f} ms |"
    )
    print(f"| empty route, 32 connections (wrk): req/s, p99 | {empty['per_s']:.0f} /s, {empty['p99_ms']:.1f} ms |")
    print(
        f"| one autocommit UPDATE per request, 32 connections: req/s, p99 (non-2xx) | {save['per_s']:.0f} /s, "
        f"{save['p99_ms']:.1f} ms ({save['non2xx']:.0f}) |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1500, help="requests and tasks per measurement")
    ap.add_argument("--runs", type=int, default=60, help="sandboxed and bare runs")
    ap.add_argument("--seconds", type=int, default=8, help="each wrk run")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    ap.add_argument("--sandbox-only", action="store_true", help="only the sandbox's rows (no PostgreSQL, Redis, wrk)")
    ap.add_argument("--uid-base", type=int, default=64000, help="the sandbox's first slot uid")
    ap.add_argument("--api-only", action="store_true", help="only the API's rows (the empty route and the UPDATE)")
    args = ap.parse_args()
    if args.sandbox_only:
        sb = sandbox_floor(args.runs, args.uid_base)
        print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end")
        print("| floor | figure |")
        print("|---|---|")
        _print_sandbox_rows(sb)
        return

    name = f"floor_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE floor (id int PRIMARY KEY, version int NOT NULL, body text NOT NULL)")
        conn.execute("INSERT INTO floor SELECT g, 1, '' FROM generate_series(0, 31) g")
    sa_url = db_url.replace("postgresql://", "postgresql+psycopg://", 1)
    proc, base, _ = start_floor_api(sa_url)
    try:
        api = api_floor(proc, base, args.n)
        empty = wrk(base, "POST", "empty?", args.seconds)
        save = wrk(base, "PATCH", "save/", args.seconds)
    finally:
        proc.stop()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if args.api_only:
        print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end")
        print("| floor | figure |")
        print("|---|---|")
        _print_api_rows(api, empty, save)
        return
    cel = celery_floor(args.redis_url, args.n)
    sb = sandbox_floor(args.runs, args.uid_base)

    program = sb["bare_cpu_ms"]
    sandbox = sb["sandboxed_children_cpu_ms"] + sb["driver_cpu_ms"]
    requests_ = api["post_cpu_ms"] + api["get_cpu_ms"]
    task = cel["worker_cpu_ms"] + cel["producer_cpu_ms"] + cel["redis_cpu_ms"]
    floor = sandbox + requests_ + task
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end")
    print("| floor | figure |")
    print("|---|---|")
    _print_sandbox_rows(sb)
    _print_api_rows(api, empty, save)
    print(
        f"| empty Celery task: worker / producer / Redis CPU per task | {cel['worker_cpu_ms']:.2f} / "
        f"{cel['producer_cpu_ms']:.2f} / {cel['redis_cpu_ms']:.2f} ms |"
    )
    print(
        f"| **floor of CPU per execution** (sandboxed run + 2 empty requests + 1 empty task) | "
        f"**{floor:.1f} ms = {floor / program:.2f}× the program** (target ≤ 2×) |"
    )


if __name__ == "__main__":
    main()
