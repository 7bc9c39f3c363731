"""An autosave (`PATCH /api/v1/code-sessions/{id}`) in one process, with the real PostgreSQL and
Redis (no server, no worker): the API's CPU per PATCH and what parts of it cost alone, and the
Python calls per PATCH (cProfile: a figure that does not move with the machine's load).

Rows (medians over `--requests`, sequential, back to back):
- `patch`: the whole request through Flask's test client (hooks, Flask-RESTX, the route, the SQL);
- `patch without the hooks`: the same with the app's before/after/teardown request functions
  removed (request id, metrics and access log, authentication, rate limits, security headers):
  what LiveCode's hooks cost an autosave;
- `service`: `services.sessions.autosave` alone (the check, the statement, the answer's dict);
- `statement`: the autosave's conditional `UPDATE … RETURNING` alone through SQLAlchemy Core on a
  pooled connection (what one save's write costs the client);
- `batch of N`: one batched `UPDATE … FROM unnest(…)` of N saves (services/autosave_batch.py),
  per save;
- `raw psycopg`: the same single UPDATE through psycopg alone (no SQLAlchemy), prepared.

A benchmark, never a pass/fail test. From the repository root:

    PYTHONPATH=src:. .venv/bin/python -m bench.bench_autosave_inprocess [--requests 2000]
        [--redis-url redis://127.0.0.1:6379/12]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg

from bench.bench_cost import add_redis_url, in_process_stack


def _median_cpu_ms(fn: Callable[[int], Any], n: int, warm: int = 50) -> float:
    for i in range(warm):
        fn(-i - 1)
    times = []
    for i in range(n):
        t = time.thread_time()
        fn(i)
        times.append((time.thread_time() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="requests per row (default %(default)s)")
    p.add_argument("--show", type=int, default=0, help="print the PATCH's N costliest functions (cProfile)")
    add_redis_url(p)
    args = p.parse_args()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()  # as `livecode api` runs it
    n = args.requests
    with in_process_stack(args.redis_url) as db_url:
        load = os.getloadavg()[0]
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the access log is written, as in production, then dropped
        from livecode.app import create_app
        from livecode.config import load_settings
        from livecode.services import autosave_batch, sessions

        app = create_app(load_settings("distributed"))
        client = app.test_client()
        db = app.extensions["livecode.runtime"].db
        sids = [client.post("/api/v1/code-sessions", json={"language": "python", "source_code": "print('hi')"})
                .json["session_id"] for _ in range(64)]  # type: ignore[index]
        out: dict[str, float] = {}

        def patch(i: int) -> None:
            r = client.patch(f"/api/v1/code-sessions/{sids[0]}", json={"source_code": f"print({i})"})
            assert r.status_code == 200, r.get_data(as_text=True)

        out["patch_cpu_ms"] = _median_cpu_ms(patch, n)
        profile = cProfile.Profile()
        profile.enable()
        for i in range(200):
            patch(i)
        profile.disable()
        stats = pstats.Stats(profile, stream=sys.__stdout__)
        out["python_calls_per_patch"] = stats.total_calls / 200  # type: ignore[attr-defined]
        if args.show:
            stats.sort_stats("cumulative").print_stats(args.show)

        hooks = (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs)
        kept = [dict(h) for h in hooks]
        for h in hooks:
            h.pop(None, None)
        out["patch_without_hooks_cpu_ms"] = _median_cpu_ms(patch, n)
        for h, k in zip(hooks, kept, strict=True):
            h.update(k)
        sid0 = uuid.UUID(sids[0])

        def service(i: int) -> None:
            sessions.autosave(db, sid0, source_code=f"print({i})", expected_version=None, owner_id=None,
                              max_bytes=1 << 20)

        out["service_cpu_ms"] = _median_cpu_ms(service, n)
        save = autosave_batch.Save(sid0, None, None, "print(1)", 60.0)

        def statement(i: int) -> None:
            assert sessions._write_alone(db, save, sessions.utcnow()) is not None

        out["statement_cpu_ms"] = _median_cpu_ms(statement, n)
        for size in (8, 32):
            batch_sids = [uuid.UUID(s) for s in sids[:size]]

            def batch(i: int, batch_sids: list[uuid.UUID] = batch_sids) -> None:
                now = sessions.utcnow()
                k = len(batch_sids)
                params = {"b_idx": list(range(k)), "b_sid": batch_sids, "b_owner": [None] * k,
                          "b_expected": [None] * k, "b_src": [f"print({i})"] * k,
                          "b_hcut": [now - timedelta(seconds=60)] * k, "now": now}
                with db.write_one() as conn:
                    assert len(conn.execute(autosave_batch._batch_statement(), params).all()) == len(batch_sids)

            out[f"batch_of_{size}_cpu_ms_per_save"] = _median_cpu_ms(batch, max(50, n // size)) / size
        with psycopg.connect(db_url, autocommit=True, prepare_threshold=0) as pg:
            def raw(i: int) -> None:
                pg.execute("UPDATE code_sessions SET source_code = %s, version = version + 1, updated_at = now() "
                           "WHERE id = %s RETURNING version, updated_at, history_at, doc_version",
                           (f"print({i})", sid0)).fetchone()

            out["raw_psycopg_cpu_ms"] = _median_cpu_ms(raw, n)
        db.dispose()
    print(f"load average before {load:.1f}, after {os.getloadavg()[0]:.1f}", file=sys.__stdout__)
    print(json.dumps({k: round(v, 3) for k, v in out.items()}), file=sys.__stdout__)


if __name__ == "__main__":
    main()
