"""GET /api/v1/admin/analytics on PostgreSQL: after real runs by a real worker the figures equal
what the rows say (computed here independently), the worker records compile-cache hits and
misses, every query uses the index on (queued_at, language) (EXPLAIN on a table of 50,000 runs),
and percentile_cont agrees with the portable percentiles the embedded mode uses."""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from livecode import migrations as migrate
from livecode.services import analytics
from tests.support.client import ApiClient
from tests.support.migration_cases import revision_before
from tests.support.procs import create_database

pytestmark = pytest.mark.integration

URL = "/api/v1/admin/analytics"
INDEX = "ix_executions_queued_language"


def engine_for(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))


def reference_percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = p * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])


def expected_from_rows(rows: list[Any], start: datetime, buckets: int) -> dict[str, Any]:
    """The figures, computed in Python from the raw rows of the range."""
    per_language: dict[str, list[int]] = defaultdict(lambda: [0] * buckets)
    waits: dict[str, list[float]] = defaultdict(list)
    runs: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        per_language[r.language][int((r.queued_at - start) / timedelta(hours=1))] += 1
        if r.started_at is not None:
            waits[r.language].append((r.started_at - r.queued_at) / timedelta(milliseconds=1))
        if r.execution_time_ms is not None:
            runs[r.language].append(float(r.execution_time_ms))
    cached = [r.compile_cached for r in rows if r.compile_cached is not None]
    return {
        "total": len(rows),
        "per_language": dict(per_language),
        "outcomes": Counter((r.status, r.reason) for r in rows),
        "waits": waits,
        "runs": runs,
        "users": len({r.user_id for r in rows if r.user_id is not None}),
        "sessions": len({r.session_id for r in rows}),
        "runs_by_user": Counter(str(r.user_id) if r.user_id else None for r in rows),
        "hits": sum(cached),
        "misses": len(cached) - sum(cached),
    }


def settled(engine: sa.Engine, start: datetime, end: datetime) -> list[Any]:
    """The range's rows once no run in it is queued or running (others' runs finish first)."""
    deadline = time.monotonic() + 120
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT language, status, reason, session_id, user_id, queued_at, started_at, execution_time_ms, "
                    "cpu_time_ms, compile_cached FROM executions WHERE queued_at >= :a AND queued_at < :b"
                ),
                {"a": start, "b": end},
            ).all()
        if not any(r.status in ("QUEUED", "RUNNING") for r in rows):
            return list(rows)
        assert time.monotonic() < deadline, "runs still in flight after 120 s"
        time.sleep(0.2)


def test_figures_after_real_runs_equal_the_rows(cluster: Any) -> None:
    api: ApiClient = cluster.client()
    languages = {lang["id"]: lang for lang in api.request("GET", "/api/v1/languages").json()}
    c_source = f'#include <stdio.h>\nint main(void) {{ puts("{uuid.uuid4().hex}"); return 0; }}\n'
    done = [api.run("print('hi')"), api.run("raise SystemExit(4)")]
    compiled = languages.get("c", {}).get("available")
    if compiled:
        done += [api.run(c_source, "c", timeout=120), api.run(c_source, "c", timeout=120)]
        # Test cases compile once for all their runs: from the cache here too.
        done.append(api.run(c_source, "c", timeout=120, tests=[{"stdin": ""}, {"stdin": "x"}]))
    assert [d["status"] for d in done[:2]] == ["COMPLETED", "FAILED"]

    engine = engine_for(cluster.env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            mine = {
                str(r.id): r.compile_cached
                for r in conn.execute(
                    sa.text("SELECT id, compile_cached FROM executions WHERE id = ANY(:ids)"),
                    {"ids": [uuid.UUID(d["execution_id"]) for d in done]},
                )
            }
        # What the worker recorded: nothing compiled for Python; a miss, then a hit, for C.
        assert [mine[d["execution_id"]] for d in done] == [None, None] + ([False, True, True] if compiled else [])

        now = datetime.now(UTC)
        rng = analytics.parse_range((now - timedelta(hours=2)).isoformat(), now.isoformat(), "hour")
        for _attempt in range(5):
            rows = settled(engine, rng.start, rng.end)
            r = api.request(
                "GET",
                f"{URL}?from={rng.start.isoformat()}&to={rng.end.isoformat()}".replace("+", "%2B")
                + "&bucket=hour&top=100",
            )
            assert r.status_code == 200, r.text
            body = r.json()
            if len(settled(engine, rng.start, rng.end)) == len(rows) == body["total_runs"]:
                break  # no run was submitted meanwhile
        want = expected_from_rows(rows, rng.start, len(rng.starts()))
    finally:
        engine.dispose()

    assert body["total_runs"] == want["total"] >= len(done)
    assert {s["language"]: s["counts"] for s in body["runs_per_language"]} == want["per_language"]
    assert {(o["status"], o["reason"]): o["count"] for o in body["outcomes"]} == dict(want["outcomes"])
    assert sum(o["share"] for o in body["outcomes"]) == pytest.approx(1, abs=0.001)
    for entry in body["latency"]:
        lang = entry["language"]
        for key, values in (("queue_wait_ms", want["waits"][lang]), ("run_time_ms", want["runs"][lang])):
            assert entry[key]["count"] == len(values)
            for p in analytics.PERCENTILES:
                expected = reference_percentile(values, p)
                got = entry[key][f"p{round(p * 100)}"]
                assert got == pytest.approx(expected, abs=0.11), (lang, key, p)
    assert (body["active"]["users"], body["active"]["sessions"]) == (want["users"], want["sessions"])
    top = body["top_users"]["by_runs"]
    assert [(u["user_id"], u["runs"]) for u in top] == sorted(
        [(u["user_id"], want["runs_by_user"][u["user_id"]]) for u in top], key=lambda t: -t[1]
    )
    assert top[0]["runs"] == max(want["runs_by_user"].values())
    cache = body["compile_cache"]
    assert (cache["hits"], cache["misses"]) == (want["hits"], want["misses"])
    if compiled:
        assert cache["hits"] >= 1 and cache["misses"] >= 1


# ---- the queries' plans, on a table big enough for the planner to prefer an index ---------------

SEED = """
INSERT INTO executions (id, session_id, user_id, language, source_hash, stdin, args, limits, priority,
    interactive, status, reason, stdout_truncated, stderr_truncated, attempts, queued_at, started_at,
    finished_at, execution_time_ms, cpu_time_ms, compile_cached)
SELECT gen_random_uuid(), :sid, (ARRAY[:u1, :u2, :u3])[1 + i % 3], (ARRAY['python', 'c', 'go', 'bash'])[1 + i % 4],
    :hash, '', '[]', '{}', 'batch', false,
    CASE WHEN i % 10 = 0 THEN 'FAILED' ELSE 'COMPLETED' END, CASE WHEN i % 10 = 0 THEN 'RUNTIME_ERROR' END,
    false, false, 1, t.q, t.q + (i % 997) * interval '1 millisecond',
    t.q + (i % 997 + (i * 7) % 3001) * interval '1 millisecond', (i * 7) % 3001, (i * 13) % 2003,
    CASE WHEN i % 4 = 1 THEN i % 3 = 0 END
FROM generate_series(1, 50000) AS i,
     LATERAL (SELECT timestamptz '2026-01-01 00:00:00+00' + i * interval '631 seconds' AS q) AS t
"""


@pytest.fixture(scope="module")
def big(pg_admin_url: str) -> Iterator[sa.Engine]:
    """A scratch database (migrated) with 50,000 runs spread over a year."""
    engine = engine_for(create_database(pg_admin_url))
    migrate.upgrade(engine)
    sid, users = uuid.uuid4(), [uuid.uuid4() for _ in range(3)]
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
        conn.execute(sa.text(SEED), {"sid": sid, "u1": users[0], "u2": users[1], "u3": users[2], "hash": "0" * 64})
        # Runs of a language that never started (still queued): no percentiles for it.
        conn.execute(
            sa.text(
                "INSERT INTO executions (id, session_id, language, source_hash, stdin, args, limits, "
                "priority, interactive, status, stdout_truncated, stderr_truncated, attempts, queued_at) "
                "SELECT gen_random_uuid(), :sid, 'java', :hash, '', '[]', '{}', 'batch', false, 'QUEUED', "
                "false, false, 0, timestamptz '2026-03-10 12:00:00+00' + i * interval '1 minute' "
                "FROM generate_series(1, 3) AS i"
            ),
            {"sid": sid, "hash": "0" * 64},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE executions")
    yield engine
    engine.dispose()
    # 50,000 runs are some 30 MB: not left behind on the shared server.
    admin = sa.create_engine(engine_for(pg_admin_url).url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{engine.url.database}"')
    admin.dispose()


def run_all(conn: sa.Connection, rng: analytics.Range) -> None:
    """Every query the endpoint makes on PostgreSQL, and the portable percentiles too."""
    analytics.runs_per_language(conn, "postgresql", rng)
    analytics.active(conn, "postgresql", rng)
    analytics.outcomes(conn, rng)
    analytics.latency_postgres(conn, rng)
    analytics.latency_portable(conn, "postgresql", rng)
    analytics.top_users(conn, rng, 10)
    analytics.compile_cache(conn, rng)


@pytest.mark.parametrize("days", [1, 7])
def test_every_query_uses_the_queued_at_index(big: sa.Engine, days: int) -> None:
    rng = analytics.Range(
        datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC) + timedelta(days=days), "day"
    )
    statements: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        statements.append((statement, parameters))

    sa.event.listen(big, "before_cursor_execute", grab)
    try:
        with big.connect() as conn:
            run_all(conn, rng)
    finally:
        sa.event.remove(big, "before_cursor_execute", grab)
    assert len(statements) >= 9
    with big.connect() as conn:
        for statement, parameters in statements:
            plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
            assert INDEX in plan, f"{statement}\n{plan}"
            assert "Seq Scan on executions" not in plan, plan


def test_percentile_cont_and_the_portable_percentiles_agree(big: sa.Engine) -> None:
    rng = analytics.Range(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC), "day")
    with big.connect() as conn:
        native = analytics.latency_postgres(conn, rng)
        portable = analytics.latency_portable(conn, "postgresql", rng)
        shown = analytics.latency(conn, "postgresql", rng)
    nothing = {"count": 0, "p50": None, "p95": None}
    assert native.pop("java") == {"queue_wait_ms": nothing, "run_time_ms": nothing}
    assert [entry["language"] for entry in shown] == ["bash", "c", "go", "python"]  # none for java
    assert set(native) == set(portable) == {"python", "c", "go", "bash"}
    for lang, figures in native.items():
        for key in ("queue_wait_ms", "run_time_ms"):
            assert figures[key]["count"] == portable[lang][key]["count"] > 1000
            for p in ("p50", "p95"):
                assert figures[key][p] == pytest.approx(portable[lang][key][p], abs=0.11), (lang, key, p)


def check_analytics_migration(url: str) -> None:
    """The analytics migration up, down and up again on a database with a run in it: the run is
    kept, its compile_cached is null (unknown), and the index comes and goes with the column."""
    before = revision_before(url, "analytics")
    engine = sa.create_engine(url)
    try:
        migrate.upgrade(engine, before)
        sid, eid = uuid.uuid4(), uuid.uuid4()
        ids = {"s": sid.hex, "e": eid.hex} if url.startswith("sqlite") else {"s": sid, "e": eid}
        with engine.begin() as c:
            c.execute(
                sa.text("INSERT INTO sources (hash, content, size_bytes, last_used_at) VALUES (:h, 'x', 1, :t)"),
                {"h": "0" * 64, "t": datetime.now(UTC)},
            )
            c.execute(
                sa.text(
                    "INSERT INTO code_sessions (id, language, source_code, status, version, created_at, updated_at) "
                    "VALUES (:s, 'c', 'x', 'ACTIVE', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                ids,
            )
            c.execute(
                sa.text(
                    "INSERT INTO executions (id, session_id, language, source_hash, stdin, args, limits, priority, "
                    "interactive, status, stdout_truncated, stderr_truncated, attempts, queued_at) VALUES "
                    "(:e, :s, 'c', :h, '', '[]', '{}', 'batch', false, 'COMPLETED', false, false, 1, CURRENT_TIMESTAMP)"
                ),
                {**ids, "h": "0" * 64},
            )
        migrate.upgrade(engine)
        inspector = sa.inspect(engine)
        assert INDEX in {i["name"] for i in inspector.get_indexes("executions")}
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT status, compile_cached FROM executions")).one() == ("COMPLETED", None)
        migrate.downgrade(engine, before)
        inspector = sa.inspect(engine)
        assert "compile_cached" not in {col["name"] for col in inspector.get_columns("executions")}
        assert INDEX not in {i["name"] for i in inspector.get_indexes("executions")}
        migrate.upgrade(engine)
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT count(*) FROM executions")).scalar_one() == 1
    finally:
        engine.dispose()


def test_the_migration_up_and_down(pg_admin_url: str) -> None:
    check_analytics_migration(create_database(pg_admin_url).replace("postgresql://", "postgresql+psycopg://"))
