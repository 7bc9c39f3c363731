"""What history costs an autosave (issue 15, part 1): the service's autosave on PostgreSQL.

Creates a fresh database on the PostgreSQL at 127.0.0.1:5432, migrates it, creates one session
and times `services.sessions.autosave` (the PATCH's whole database work: one conditional UPDATE)
from one thread: the median and p95 per save, and the SQL statements per save. Runs three ways:

- `default`: the default interval (60 s): every save after the first of the interval is the
  common case, one statement;
- `every`: an interval of 0, so every save makes a version (the worst case, a bound);
- run against a checkout without history (PYTHONPATH at its src) it times the same saves
  before the change (the interval argument is then not passed).

A benchmark, never a pass/fail test. From the repository root:

    PYTHONPATH=src:. python -m bench.bench_history [--saves 2000]
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
import uuid
from typing import Any

from sqlalchemy import create_engine, event

from bench.common import machine, pct
from tests.support.procs import create_database

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SOURCE = "def f(x):\n    return x * 2\n\nprint(f(21))\n" * 10  # a small program, about 400 bytes


def run(saves: int, interval: float | None) -> dict[str, Any]:
    url = create_database(PG_ADMIN).replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        return _timed(url, saves, interval)
    finally:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:  # the bench's database, not kept
            conn.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def _timed(url: str, saves: int, interval: float | None) -> dict[str, Any]:
    import os

    from livecode import migrations
    from livecode.config import load_settings
    from livecode.db import Database
    from livecode.services import sessions

    engine = create_engine(url)
    migrations.upgrade(engine)
    engine.dispose()
    import secrets

    # Distributed settings, as the API has them (Redis is named, never used here).
    os.environ.update(DATABASE_URL=url, REDIS_URL="redis://127.0.0.1:6379/15", SECRET_KEY=secrets.token_urlsafe(48))
    settings = load_settings("distributed")
    db = Database(settings)
    statements = 0

    @event.listens_for(db.engine, "before_cursor_execute")
    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    sid = uuid.UUID(
        sessions.create_session(db, language="python", source_code="x", owner_id=None, max_bytes=65536)["session_id"]
    )
    has_history = "history_interval_s" in inspect.signature(sessions.autosave).parameters
    extra = {"history_interval_s": interval} if has_history and interval is not None else {}
    version, times = 1, []
    for _ in range(20):  # warm the pool and the statement caches
        version = sessions.autosave(
            db,
            sid,
            source_code=SOURCE + str(version),
            expected_version=version,
            owner_id=None,
            max_bytes=65536,
            **extra,
        )["version"]
    statements = 0
    for _ in range(saves):
        t0 = time.perf_counter()
        version = sessions.autosave(
            db,
            sid,
            source_code=SOURCE + str(version),
            expected_version=version,
            owner_id=None,
            max_bytes=65536,
            **extra,
        )["version"]
        times.append((time.perf_counter() - t0) * 1e6)
    db.dispose()
    return {
        "history": has_history,
        "interval": interval if has_history else None,
        "median_us": statistics.median(times),
        "p95_us": pct(times, 95),
        "statements_per_save": statements / saves,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--saves", type=int, default=2000)
    args = parser.parse_args()
    print(machine())
    for interval in (60.0, 0.0):
        r = run(args.saves, interval)
        print(
            f"history={r['history']} interval={r['interval']}: median {r['median_us']:.0f} µs, "
            f"p95 {r['p95_us']:.0f} µs, {r['statements_per_save']:.2f} statements per save ({args.saves} saves)"
        )
        if not r["history"]:
            break


if __name__ == "__main__":
    main()
