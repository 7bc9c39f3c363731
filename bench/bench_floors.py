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

5. **The skeleton of one execution** (`skeleton_floor`): the same app and a Celery worker doing
   only what the issue's rules demand of an execution around its run (the row inserted and
   committed, the id on the queue, a conditional claim and a conditional final write each
   committed, the end published, one GET), one at a time: CPU per execution of each process.

It then adds the floors of one execution: the program in its sandbox, two empty requests (the
POST and one GET of the result) and one empty task, as a ratio to the program's own CPU; and the
sandboxed run plus the skeleton (the floor of a correct execution), with what a 2× target leaves
for the rest of LiveCode's logic; and
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

        if os.environ.get("FLOOR_REDIS"):  # the skeleton of an execution (skeleton_floor)
            from celery import Celery
            celery = Celery("floor", broker=os.environ["FLOOR_REDIS"])
            celery.conf.update(broker_connection_retry_on_startup=True)
            submit = text("INSERT INTO floor_exec (id, source, status, queued_at) "
                          "SELECT :e, body, 'QUEUED', now() FROM floor WHERE id = :i RETURNING id")
            read = text("SELECT id, status, stdout, queued_at, started_at, finished_at FROM floor_exec "
                        "WHERE id = :e")

            @ns.route("/exec/<int:i>")
            class Submit(Resource):
                def post(self, i):
                    eid = uuid.uuid4()
                    with engine.connect() as conn:
                        conn.execute(submit, {"e": eid, "i": i}).scalar_one()
                    celery.send_task("floor.exec", (str(eid),))
                    return {"execution_id": str(eid), "status": "QUEUED"}, 202

            @ns.route("/execution/<string:eid>")
            class Read(Resource):
                def get(self, eid):
                    with engine.connect() as conn:
                        row = conn.execute(read, {"e": uuid.UUID(eid)}).mappings().one()
                    return {k: (str(v) if v is not None else None) for k, v in row.items()}

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


def start_floor_api(db_url: str, redis_url: str = "") -> tuple[Process, str, Path]:
    tmp = Path(tempfile.mkdtemp(prefix="lc-floor-"))
    (tmp / "floor_app.py").write_text(APP)
    port = free_port()
    env = {**os.environ, "FLOOR_DB": db_url, "FLOOR_SRC": str(REPO / "src"), "PYTHONPATH": str(tmp)}
    if redis_url:
        env["FLOOR_REDIS"] = redis_url
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


SKELETON_TASKS = textwrap.dedent(
    """
    import os
    import redis
    from celery import Celery
    from sqlalchemy import create_engine, text
    app = Celery("floor", broker=os.environ["FLOOR_REDIS"])
    app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_ignore_result=True,
                    worker_send_task_events=False, broker_connection_retry_on_startup=True,
                    worker_hijack_root_logger=False)
    engine = create_engine(os.environ["FLOOR_DB"], pool_size=4, max_overflow=0, isolation_level="AUTOCOMMIT")
    bus = redis.Redis.from_url(os.environ["FLOOR_REDIS"])
    claim = text("UPDATE floor_exec SET status = 'RUNNING', started_at = now() "
                 "WHERE id = :e AND status = 'QUEUED' RETURNING source")
    finish = text("UPDATE floor_exec SET status = 'COMPLETED', stdout = :o, finished_at = now() "
                  "WHERE id = :e AND status = 'RUNNING' RETURNING id")

    @app.task(name="floor.exec", acks_late=True)
    def execute(execution_id):
        with engine.connect() as conn:
            if conn.execute(claim, {"e": execution_id}).scalar_one_or_none() is None:
                return
            # the sandboxed run goes here (its cost is the sandbox's row)
            conn.execute(finish, {"e": execution_id, "o": "hi\\n"}).scalar_one()
        bus.publish("floor:finished", execution_id)
    """
)


def skeleton_floor(base: str, api_proc: Process, db_url: str, redis_url: str, n: int) -> dict[str, float]:
    """The least an execution under the issue's rules does around its sandboxed run: the POST (one
    `INSERT … SELECT` from the session's row, committed, and the id published to Celery), an
    `acks_late` task (a conditional claim `UPDATE`, a conditional final `UPDATE … RETURNING`, each
    committed, and a Redis `PUBLISH` of the end) and one GET of the row, one execution at a time.
    CPU per execution of the API, the worker, PostgreSQL's backends (the bench's own left out) and
    Redis. No authentication, rate limit, idempotency, events, output, metrics or logging."""
    tmp = Path(tempfile.mkdtemp(prefix="lc-floor-skeleton-"))
    (tmp / "skeleton_tasks.py").write_text(SKELETON_TASKS)
    env = {**os.environ, "FLOOR_REDIS": redis_url, "FLOOR_DB": db_url, "PYTHONPATH": str(tmp)}
    argv = [sys.executable, "-m", "celery", "-A", "skeleton_tasks", "worker", "--pool", "threads", "-c", "2",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]
    worker = Process(argv, env, "floor-skeleton-worker")
    rpid = redis_pid(redis_url)
    http = requests.Session()
    pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("floor:finished")
    pg = psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True)

    def one() -> None:
        eid = http.post(f"{base}/floor/exec/0").json()["execution_id"]
        deadline = time.monotonic() + 30
        while True:
            msg = pubsub.get_message(timeout=1)  # None too for the subscription's confirmation
            if msg is None:
                if time.monotonic() < deadline:
                    continue
                raise TimeoutError(f"the skeleton's task did not finish; its worker said:\n{worker.output()[-3000:]}")
            if msg["data"].decode() == eid:
                break
        assert http.get(f"{base}/floor/execution/{eid}").json()["status"] == "COMPLETED"

    def ticks() -> tuple[int, int, int, dict[int, int]]:
        pids = [r[0] for r in pg.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
        table = _proc_table()
        return (tree_ticks(table, api_proc.proc.pid), tree_ticks(table, worker.proc.pid), table[rpid][1],
                {pid: table[pid][1] for pid in pids if pid in table})

    try:
        time.sleep(3)  # the worker connects and starts consuming
        for _ in range(50):
            one()
        a0, w0, r0, pg0 = ticks()
        for _ in range(n):
            one()
        a1, w1, r1, pg1 = ticks()
        return {
            "api_cpu_ms": (a1 - a0) * TICK_MS / n,
            "worker_cpu_ms": (w1 - w0) * TICK_MS / n,
            "redis_cpu_ms": (r1 - r0) * TICK_MS / n,
            "pg_cpu_ms": sum(t - pg0.get(pid, 0) for pid, t in pg1.items()) * TICK_MS / n,
        }
    finally:
        pubsub.close()
        pg.close()
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
        conn.execute("INSERT INTO floor SELECT g, 1, 'print(1)' FROM generate_series(0, 31) g")
        conn.execute(
            "CREATE TABLE floor_exec (id uuid PRIMARY KEY, source text NOT NULL, status text NOT NULL,"
            " stdout text, queued_at timestamptz, started_at timestamptz, finished_at timestamptz)"
        )
    sa_url = db_url.replace("postgresql://", "postgresql+psycopg://", 1)
    proc, base, _ = start_floor_api(sa_url, "" if args.api_only else args.redis_url)
    skeleton: dict[str, float] = {}
    try:
        api = api_floor(proc, base, args.n)
        empty = wrk(base, "POST", "empty?", args.seconds)
        save = wrk(base, "PATCH", "save/", args.seconds)
        if not args.api_only:
            redis.Redis.from_url(args.redis_url).flushdb()
            skeleton = skeleton_floor(base, proc, sa_url, args.redis_url, max(200, args.n // 3))
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
    around = sum(skeleton.values())
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
    print(
        f"| the skeleton of one execution around its run (INSERT + publish, claim and final UPDATE + PUBLISH, "
        f"one GET): API / worker / PostgreSQL / Redis | {skeleton['api_cpu_ms']:.2f} / "
        f"{skeleton['worker_cpu_ms']:.2f} / {skeleton['pg_cpu_ms']:.2f} / {skeleton['redis_cpu_ms']:.2f} ms |"
    )
    print(
        f"| **floor of a correct execution** (sandboxed run + the skeleton) | "
        f"**{sandbox + around:.1f} ms = {(sandbox + around) / program:.2f}× the program**; what the target "
        f"leaves for everything else LiveCode does per execution: {2 * program - sandbox - around:.1f} ms |"
    )


if __name__ == "__main__":
    main()
