"""What the admin analytics cost on a large executions table (PostgreSQL, and SQLite for the
embedded mode): every figure of GET /api/v1/admin/analytics for ranges of 7 days by day, 31 days by
hour and a year by day, over N runs spread evenly over a year.

A benchmark, never a pass/fail test. Run from the repository root:

    .venv/bin/python -m bench.bench_analytics                 # 1,000,000 runs
    .venv/bin/python -m bench.bench_analytics --rows 100000

It creates a scratch database on the PostgreSQL at 127.0.0.1:5432 (and a temporary SQLite file),
migrates it, fills it with generated rows (one INSERT ... SELECT generate_series), and times the
service's queries (services/analytics.py) on one connection: the median of 5 runs per range.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import machine
from livecode import migrations as migrate
from livecode.models import Base
from livecode.services import analytics
from tests.integration.test_analytics import SEED
from tests.support.procs import create_database

YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)
RANGES = {
    "7 days by day": analytics.Range(YEAR_START + timedelta(days=150), YEAR_START + timedelta(days=157), "day"),
    "31 days by hour": analytics.Range(YEAR_START + timedelta(days=150), YEAR_START + timedelta(days=181), "hour"),
    "a year by day": analytics.Range(YEAR_START, YEAR_START + timedelta(days=366), "day"),
}


def seed_postgres(rows: int) -> sa.Engine:
    url = create_database("postgresql://postgres@127.0.0.1:5432/postgres")
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    migrate.upgrade(engine)
    sid, users = uuid.uuid4(), [uuid.uuid4() for _ in range(3)]
    # The test's generator spreads 50,000 runs 631 s apart; this spreads `rows` over the same year.
    spacing = max(1, int(365 * 86400 / rows))
    sql = SEED.replace("50000", str(rows)).replace("631 seconds", f"{spacing} seconds")
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO sources (hash, content, size_bytes, last_used_at) VALUES (:h, 'x', 1, now())"),
            {"h": "0" * 64},
        )
        conn.execute(
            sa.text(
                "INSERT INTO code_sessions (id, language, source_code, status, version, created_at, "
                "updated_at) VALUES (:s, 'python', 'x', 'ACTIVE', 1, now(), now())"
            ),
            {"s": sid},
        )
        conn.execute(sa.text(sql), {"sid": sid, "u1": users[0], "u2": users[1], "u3": users[2], "hash": "0" * 64})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE executions")
    return engine


def copy_to_sqlite(pg: sa.Engine, folder: Path) -> sa.Engine:
    """The same rows in a migrated SQLite file (the embedded mode's database)."""
    engine = sa.create_engine(f"sqlite:///{folder / 'bench.db'}")
    migrate.upgrade(engine)
    with pg.connect() as src, engine.begin() as dst:
        for name in ("sources", "code_sessions", "executions"):
            table = Base.metadata.tables[name]  # the models' types: a UUID is stored as SQLite keeps it
            result = src.execution_options(stream_results=True).execute(sa.select(table))
            while batch := result.fetchmany(20_000):
                dst.execute(table.insert(), [dict(r._mapping) for r in batch])
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    return engine


def figures(conn: sa.Connection, dialect: str, rng: analytics.Range) -> dict[str, Any]:
    return {
        "runs": analytics.runs_per_language(conn, dialect, rng),
        "outcomes": analytics.outcomes(conn, rng),
        "latency": analytics.latency(conn, dialect, rng),
        "active": analytics.active(conn, dialect, rng),
        "top": analytics.top_users(conn, rng, 10),
        "cache": analytics.compile_cache(conn, rng),
    }


def time_ranges(engine: sa.Engine, repeat: int = 5) -> dict[str, float]:
    out = {}
    dialect = engine.dialect.name
    with engine.connect() as conn:
        for name, rng in RANGES.items():
            took = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                figures(conn, dialect, rng)
                took.append((time.perf_counter() - t0) * 1000)
            out[name] = round(statistics.median(took), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args()
    t0 = time.perf_counter()
    pg = seed_postgres(args.rows)
    try:
        print(f"seeded {args.rows} runs in {time.perf_counter() - t0:.1f} s", flush=True)
        result: dict[str, Any] = {"machine": machine(), "rows": args.rows, "postgresql_ms": time_ranges(pg)}
        if not args.no_sqlite:
            with tempfile.TemporaryDirectory() as folder:
                lite = copy_to_sqlite(pg, Path(folder))
                result["sqlite_ms"] = time_ranges(lite)
                lite.dispose()
        print(json.dumps(result, indent=2))
    finally:
        drop(pg)


def drop(engine: sa.Engine) -> None:
    """The scratch database is large (about 450 MB at a million runs): drop it."""
    name = engine.url.database
    engine.dispose()
    admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
    admin.dispose()


if __name__ == "__main__":
    main()
