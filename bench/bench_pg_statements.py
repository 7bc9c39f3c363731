"""The CPU of an execution's PostgreSQL statements, client and server, without the sandbox (issue 11).

Runs, in this process and on a pool of one connection, what an execution asks of PostgreSQL: the
API's submission (`submit_execution`, unchanged code: the session read and the run's insert), the
worker's claim (`claim_execution`) and final write (`finish_execution_returning`, a hello world's
result), and a GET (`get_execution`); times each step with `time.thread_time()` (this thread's
CPU) and reads the server backend's CPU from /proc before and after (the backend of the pool's
one connection: PostgreSQL must run on this host). Steps alternate as in an execution, so the
connection goes from autocommit statements to transactions and back as it does in the processes.

    .venv/bin/python -m bench.bench_pg_statements --runs 2000

A benchmark, never a pass/fail test. Needs PostgreSQL on loopback (its backends readable in /proc).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import time
import uuid

import psycopg
from sqlalchemy import text

from bench.bench_cost import HELLO, PG_ADMIN
from tests.support.procs import create_database

_TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2000)
    args = p.parse_args()

    from livecode import migrations as migrate
    from livecode.config import load_settings
    from livecode.db import Database

    url = create_database(PG_ADMIN).replace("postgresql://", "postgresql+psycopg://")
    db = Database(dataclasses.replace(load_settings("embedded", database_url=url), db_pool_size=1, db_max_overflow=0))
    try:
        migrate.upgrade(db.engine)
        run(db, args.runs)
    finally:
        db.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def run(db: object, runs: int) -> None:
    from livecode.db import Database
    from livecode.models import ExecutionStatus
    from livecode.services import sessions
    from livecode.services.executions import (
        ExecuteOptions,
        claim_execution,
        finish_execution_returning,
        get_execution,
        submit_execution,
    )
    from livecode.streaming.bus import MemoryEventBus

    assert isinstance(db, Database)
    events = MemoryEventBus()
    sid = uuid.UUID(sessions.create_session(db, language="python", source_code=HELLO, owner_id=None,
                                            max_bytes=1 << 20, settings=db.settings)["session_id"])
    with db.read_core(fresh=True) as conn:
        backend = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    cpu: collections.Counter[str] = collections.Counter()

    def one(timed: bool) -> None:
        def step(name: str, fn: object) -> object:
            t0 = time.thread_time()
            out = fn()  # type: ignore[operator]
            if timed:
                cpu[name] += time.thread_time() - t0
            return out

        eid = uuid.UUID(step("API: POST (submission)", lambda: submit_execution(  # type: ignore[index]
            db, lambda *_: None, db.settings, sid, owner_id=None, options=ExecuteOptions(), events=events,
        ))["execution_id"])
        claimed = step("worker: claim", lambda: claim_execution(db, eid, "bench"))
        assert claimed is not None
        step("worker: final write", lambda: finish_execution_returning(
            db, eid, claimed.attempt, ExecutionStatus.COMPLETED,  # type: ignore[attr-defined]
            stdout=b"hello world\n", stderr=b"", exit_code=0, execution_time_ms=12))
        step("API: GET", lambda: get_execution(db, eid, None))

    for _ in range(50):  # past psycopg's threshold for preparing statements
        one(False)
    server0 = backend_cpu(backend)
    for _ in range(runs):
        one(True)
    server = backend_cpu(backend) - server0
    print(f"load average {os.getloadavg()[0]:.1f}; {runs} executions' statements, CPU per execution:")
    print(f"| {'step':<28} | client ms |\n|{'-' * 30}|-----------|")
    for name, value in cpu.items():
        print(f"| {name:<28} | {1000 * value / runs:>9.3f} |")
    print(f"| {'client, in all':<28} | {1000 * sum(cpu.values()) / runs:>9.3f} |")
    print(f"| {'PostgreSQL backend':<28} | {1000 * server / runs:>9.3f} |")


if __name__ == "__main__":
    main()
