"""`POST .../execute` and `GET /api/v1/executions/{id}` in one process (Flask's test client, no
server, no worker): the API's own CPU per request, with the real PostgreSQL and Redis (the real
enqueue: the message lands on the Redis list, and is flushed at the end).

Each POST runs one session; the bench marks the run finished in PostgreSQL itself before the next.
`--pause-ms` sleeps between requests, as a client that submits and then waits for its run does:
on a machine where other processes run meanwhile, the API's working set is evicted from the CPU's
caches and the same request costs up to twice the CPU it costs back to back (docs/performance.md,
"the API's cost per execution"). `--edit` changes the code before each POST (each run then makes a
history version); `--calls` counts Python function calls per POST (cProfile), a figure that does
not move with the machine's load. A benchmark, never a pass/fail test. From the repository root:

    .venv/bin/python -m bench.bench_api_inprocess [--requests 200] [--pause-ms 40] [--edit] [--calls]
        [--redis-url redis://127.0.0.1:6379/12]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg

from bench.bench_cost import BACKGROUND_TEST_SETTINGS, PG_ADMIN
from tests.conftest import base_env, flush_redis
from tests.support.procs import create_database, livecode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200, help="POSTs (and 3x as many GETs); default %(default)s")
    p.add_argument("--pause-ms", type=float, default=0, help="sleep between requests (default %(default)s)")
    p.add_argument("--edit", action="store_true", help="change the code before each POST")
    p.add_argument("--calls", action="store_true", help="count Python function calls per POST (cProfile)")
    p.add_argument("--redis-url", default=os.environ.get("LIVECODE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"),
                   help="the Redis database the bench may flush (default %(default)s)")
    args = p.parse_args()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()  # as `livecode api` runs it
    db_url = create_database(PG_ADMIN)
    flush_redis(args.redis_url)
    env = base_env(DATABASE_URL=db_url, REDIS_URL=args.redis_url)
    for name in BACKGROUND_TEST_SETTINGS:  # the product's defaults (the storage caps are checked)
        env.pop(name, None)
    subprocess.run(livecode("db", "upgrade"), env=env, check=True, capture_output=True)
    for name in [n for n in os.environ if n.startswith(("LIVECODE_", "DATABASE_", "REDIS_"))]:
        del os.environ[name]
    os.environ.update({k: v for k, v in env.items() if k.startswith(("LIVECODE_", "DATABASE_", "REDIS_", "SECRET"))})
    load = os.getloadavg()[0]
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the access log is written, as in production, then dropped

    from livecode.app import create_app
    from livecode.config import load_settings

    client = create_app(load_settings("distributed")).test_client()
    pg = psycopg.connect(db_url, autocommit=True)
    sid = client.post("/api/v1/code-sessions", json={"language": "python", "source_code": "print('hi')"}).json[
        "session_id"]  # type: ignore[index]
    pause = args.pause_ms / 1000
    profile = cProfile.Profile() if args.calls else None

    def post(i: int) -> tuple[float, float, str]:
        if args.edit:
            assert client.patch(f"/api/v1/code-sessions/{sid}", json={"source_code": f"print({i})"}).status_code == 200
        if profile:
            profile.enable()
        cpu, wall = time.process_time(), time.perf_counter()
        r = client.post(f"/api/v1/executions/session/{sid}/execute", json={})
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if profile:
            profile.disable()
        assert r.status_code == 202, r.get_data(as_text=True)
        eid = r.json["execution_id"]  # type: ignore[index]
        pg.execute("UPDATE executions SET status = 'COMPLETED', finished_at = now() WHERE id = %s", (eid,))
        time.sleep(pause)
        return cpu * 1000, wall * 1000, eid

    eid = ""
    for i in range(20):  # warm the path (pool, caches, prepared statements)
        eid = post(-i - 1)[2]
    if profile:
        profile = cProfile.Profile()
    posts = [post(i) for i in range(args.requests)]
    gets = []
    for _ in range(3 * args.requests):
        cpu = time.process_time()
        assert client.get(f"/api/v1/executions/{eid}").status_code == 200
        gets.append((time.process_time() - cpu) * 1000)
        time.sleep(pause)
    out = {
        "post_cpu_ms": statistics.median(p[0] for p in posts),
        "post_wall_ms": statistics.median(p[1] for p in posts),
        "get_cpu_ms": statistics.median(gets),
    }
    if profile:
        out["python_calls_per_post"] = pstats.Stats(profile).total_calls / args.requests  # type: ignore[attr-defined]
    pg.close()
    flush_redis(args.redis_url)
    print(f"load average before {load:.1f}, after {os.getloadavg()[0]:.1f}", file=sys.__stdout__)
    print(json.dumps({k: round(v, 2) for k, v in out.items()}), file=sys.__stdout__)


if __name__ == "__main__":
    main()
