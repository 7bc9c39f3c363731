"""GET /api/v1/admin/analytics on the in-process floor (SQLite): who may ask, the figures on rows
inserted with known times and results, the percentiles against a plain reference, and bad input."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from livecode.models import CodeSession, Execution, Source, User
from livecode.services import analytics
from tests.support.inprocess import LiveApp, Rows, expect_error
from tests.support.users import sign_up

URL = "/api/v1/admin/analytics"
DAY1 = datetime(2026, 11, 1, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)


def at(day: datetime, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return day + timedelta(hours=hh, minutes=mm, seconds=ss)


def seed(live: LiveApp, runs: list[dict[str, Any]], users: dict[str, uuid.UUID] | None = None) -> None:
    """Insert users, sessions and executions as they would be after these runs (one source)."""
    with Session(live.rows.engine) as s, s.begin():
        s.add(Source(hash="0" * 64, content="x", size_bytes=1, last_used_at=DAY1))
        for name, uid in (users or {}).items():
            s.add(User(id=uid, username=name, password_hash="x", role="user"))
        sessions: dict[uuid.UUID, str] = {}
        for r in runs:
            sessions.setdefault(r["session"], r["language"])
        for sid, language in sessions.items():
            s.add(CodeSession(id=sid, language=language, source_code="x", created_at=DAY1, updated_at=DAY1))
        s.flush()
        for r in runs:
            wait, run = r.get("wait_ms"), r.get("run_ms")
            started = r["queued"] + timedelta(milliseconds=wait) if wait is not None else None
            s.add(
                Execution(
                    session_id=r["session"],
                    user_id=r.get("user"),
                    language=r["language"],
                    source_hash="0" * 64,
                    status=r.get("status", "COMPLETED"),
                    reason=r.get("reason"),
                    queued_at=r["queued"],
                    started_at=started,
                    finished_at=started + timedelta(milliseconds=run) if started and run else None,
                    execution_time_ms=run,
                    cpu_time_ms=r.get("cpu"),
                    compile_cached=r.get("cached"),
                    priority="batch",
                    attempts=1,
                )
            )


ALICE, BOB = uuid.uuid4(), uuid.uuid4()
S1, S2, S3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
RUNS = [
    # day 1
    {
        "queued": at(DAY1, 10),
        "language": "python",
        "user": ALICE,
        "session": S1,
        "wait_ms": 100,
        "run_ms": 50,
        "cpu": 40,
    },
    {
        "queued": at(DAY1, 11),
        "language": "python",
        "user": ALICE,
        "session": S1,
        "status": "FAILED",
        "reason": "RUNTIME_ERROR",
        "wait_ms": 300,
        "run_ms": 150,
        "cpu": 100,
    },
    {
        "queued": at(DAY1, 12),
        "language": "c",
        "user": BOB,
        "session": S2,
        "wait_ms": 200,
        "run_ms": 20,
        "cpu": 500,
        "cached": False,
    },
    # day 2
    {
        "queued": at(DAY2, 9),
        "language": "c",
        "user": BOB,
        "session": S2,
        "wait_ms": 400,
        "run_ms": 30,
        "cpu": 1700,
        "cached": True,
    },
    {
        "queued": at(DAY2, 9, 30),
        "language": "c",
        "user": ALICE,
        "session": S3,
        "status": "TIMEOUT",
        "reason": "TIME_LIMIT",
        "wait_ms": 1000,
        "run_ms": 2000,
        "cpu": 1900,
        "cached": True,
    },
    {"queued": at(DAY2, 10), "language": "python", "user": ALICE, "session": S1, "status": "QUEUED"},
    # outside [DAY1, DAY1 + 2 days): the last moment before, and the (exclusive) end itself
    {
        "queued": DAY1 - timedelta(microseconds=1),
        "language": "python",
        "user": BOB,
        "session": S2,
        "wait_ms": 5,
        "run_ms": 5,
        "cpu": 99999,
    },
    {
        "queued": DAY2 + timedelta(days=1),
        "language": "c",
        "user": BOB,
        "session": S2,
        "wait_ms": 5,
        "run_ms": 5,
        "cpu": 99999,
        "cached": False,
    },
]


@pytest.fixture
def seeded(live: LiveApp) -> LiveApp:
    seed(live, RUNS, {"alice": ALICE, "bob": BOB})
    return live


def get(live: LiveApp, query: str, **kw: Any) -> dict[str, Any]:
    r = live.client.get(f"{URL}?{query}", **kw)
    assert r.status_code == 200, r.get_json()
    return r.get_json()  # type: ignore[no-any-return]


def test_figures_by_day_on_known_rows(seeded: LiveApp) -> None:
    body = get(seeded, "from=2026-11-01&to=2026-11-03&bucket=day")
    assert (body["from"], body["to"], body["bucket"]) == (
        "2026-11-01T00:00:00+00:00",
        "2026-11-03T00:00:00+00:00",
        "day",
    )
    assert body["buckets"] == ["2026-11-01T00:00:00+00:00", "2026-11-02T00:00:00+00:00"]
    assert body["total_runs"] == 6
    assert body["runs_per_language"] == [
        {"language": "c", "total": 3, "counts": [1, 2]},
        {"language": "python", "total": 3, "counts": [2, 1]},
    ]
    assert body["outcomes"] == [
        {"outcome": "COMPLETED", "status": "COMPLETED", "reason": None, "count": 3, "share": 0.5},
        {"outcome": "QUEUED", "status": "QUEUED", "reason": None, "count": 1, "share": 0.1667},
        {"outcome": "RUNTIME_ERROR", "status": "FAILED", "reason": "RUNTIME_ERROR", "count": 1, "share": 0.1667},
        {"outcome": "TIME_LIMIT", "status": "TIMEOUT", "reason": "TIME_LIMIT", "count": 1, "share": 0.1667},
    ]
    # percentile_cont: the value at position 1 + p*(n-1), interpolated between neighbours.
    assert body["latency"] == [
        {
            "language": "c",
            "queue_wait_ms": {"count": 3, "p50": 400.0, "p95": 940.0},
            "run_time_ms": {"count": 3, "p50": 30.0, "p95": 1803.0},
        },
        {
            "language": "python",
            "queue_wait_ms": {"count": 2, "p50": 200.0, "p95": 290.0},
            "run_time_ms": {"count": 2, "p50": 100.0, "p95": 145.0},
        },
    ]
    assert body["active"] == {"users": 2, "sessions": 3, "users_per_bucket": [2, 2], "sessions_per_bucket": [2, 3]}
    alice = {"user_id": str(ALICE), "username": "alice", "runs": 4, "cpu_time_ms": 2040}
    bob = {"user_id": str(BOB), "username": "bob", "runs": 2, "cpu_time_ms": 2200}
    assert body["top_users"] == {"by_runs": [alice, bob], "by_cpu": [bob, alice]}
    assert body["compile_cache"] == {
        "hits": 2,
        "misses": 1,
        "hit_rate": 0.6667,
        "by_language": [{"language": "c", "hits": 2, "misses": 1, "hit_rate": 0.6667}],
    }


def test_figures_by_hour_and_the_range_widened_to_whole_buckets(seeded: LiveApp) -> None:
    body = get(seeded, "from=2026-11-01T10:30:00Z&to=2026-11-01T12:00:01%2B00:00&bucket=hour&top=1")
    assert body["buckets"] == [f"2026-11-01T{h}:00:00+00:00" for h in (10, 11, 12)]
    assert body["runs_per_language"] == [
        {"language": "python", "total": 2, "counts": [1, 1, 0]},
        {"language": "c", "total": 1, "counts": [0, 0, 1]},
    ]
    assert body["active"]["users_per_bucket"] == [1, 1, 1]
    assert [u["username"] for u in body["top_users"]["by_runs"]] == ["alice"]
    assert [u["username"] for u in body["top_users"]["by_cpu"]] == ["bob"]
    # An offset is turned into UTC: 13:30 at +02:00 is 11:30 UTC.
    shifted = get(seeded, "from=2026-11-01T13:30:00%2B02:00&to=2026-11-01T14:00:00%2B02:00&bucket=hour")
    assert shifted["buckets"] == ["2026-11-01T11:00:00+00:00"]
    assert shifted["total_runs"] == 1


def test_an_empty_range_and_runs_without_an_account(live: LiveApp) -> None:
    empty = get(live, "from=2026-11-01&to=2026-11-02")
    assert empty["total_runs"] == 0 and empty["runs_per_language"] == [] and empty["outcomes"] == []
    assert empty["latency"] == [] and empty["top_users"] == {"by_runs": [], "by_cpu": []}
    assert empty["compile_cache"] == {"hits": 0, "misses": 0, "hit_rate": None, "by_language": []}
    assert empty["active"] == {"users": 0, "sessions": 0, "users_per_bucket": [0], "sessions_per_bucket": [0]}
    # The embedded default (no sign-in): runs through the API have no owner; they are one entry.
    sid = live.session()["session_id"]
    live.execute(sid)
    body = get(live, "")
    assert body["bucket"] == "day" and len(body["buckets"]) == 7
    assert body["total_runs"] == 1
    assert body["runs_per_language"][0]["counts"][-1] == 1  # today is the last bucket
    assert body["top_users"]["by_runs"] == [{"user_id": None, "username": None, "runs": 1, "cpu_time_ms": 0}]
    assert body["active"]["sessions"] == 1 and body["active"]["users"] == 0


def test_default_range_is_the_last_seven_days_by_day_or_a_day_by_hour() -> None:
    now = datetime(2026, 12, 3, 16, 35, tzinfo=UTC)
    by_day = analytics.parse_range(None, None, None, now)
    assert (by_day.start, by_day.end, by_day.bucket) == (
        datetime(2026, 11, 27, tzinfo=UTC),
        datetime(2026, 12, 4, tzinfo=UTC),
        "day",
    )
    by_hour = analytics.parse_range(None, None, "hour", now)
    assert (by_hour.start, by_hour.end) == (
        datetime(2026, 12, 2, 17, tzinfo=UTC),
        datetime(2026, 12, 3, 17, tzinfo=UTC),
    )
    assert len(by_hour.starts()) == 24


def reference_percentile(values: list[float], p: float) -> float:
    """percentile_cont as PostgreSQL documents it, on a sorted list."""
    ordered = sorted(values)
    pos = p * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])


@pytest.mark.parametrize("n", [1, 2, 3, 20, 21, 101])
def test_portable_percentiles_equal_percentile_cont(live: LiveApp, n: int) -> None:
    rnd = random.Random(n)
    sid = uuid.uuid4()
    runs = [
        {
            "queued": at(DAY1, 0, 0, i),
            "language": "python",
            "session": sid,
            "wait_ms": rnd.randint(0, 5000),
            "run_ms": rnd.randint(1, 9000),
        }
        for i in range(n)
    ]
    seed(live, runs)
    body = get(live, "from=2026-11-01&to=2026-11-02")
    [figs] = body["latency"]
    for key, field in (("queue_wait_ms", "wait_ms"), ("run_time_ms", "run_ms")):
        values = [float(r[field]) for r in runs]
        assert figs[key]["count"] == n
        for p in analytics.PERCENTILES:
            # The wait is stored as two timestamps and read back from SQLite's julianday(): within 0.1 ms.
            assert figs[key][f"p{round(p * 100)}"] == pytest.approx(reference_percentile(values, p), abs=0.11)


def test_admin_only(secure: LiveApp) -> None:
    expect_error(secure.client.get(URL), 401)
    user = sign_up(secure)
    expect_error(secure.client.get(URL, headers=user.headers), 403, "ADMIN_REQUIRED")
    admin = sign_up(secure, role="admin")
    sid = secure.session(headers=user.headers)["session_id"]
    secure.execute(sid, headers=user.headers)
    body = get(secure, "", headers=admin.headers)
    assert body["active"]["users"] == 1
    assert body["top_users"]["by_runs"] == [
        {"user_id": user.user_id, "username": user.username, "runs": 1, "cpu_time_ms": 0}
    ]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("from=yesterday", "INVALID_QUERY"),
        ("to=9999-12-31T23:00:00-05:00", "INVALID_QUERY"),  # past year 9999 in UTC
        ("to=2026-13-01", "INVALID_QUERY"),
        ("from=2026-11-01T25:00", "INVALID_QUERY"),
        ("from=1999-12-31&to=2000-01-02", "INVALID_QUERY"),
        ("from=9999-12-31T23:30:00&to=9999-12-31T23:59:00&bucket=hour", "INVALID_QUERY"),
        ("bucket=week", "INVALID_QUERY"),
        ("from=2026-11-02&to=2026-11-01", "INVALID_RANGE"),
        ("from=2026-11-01&to=2026-11-01", "INVALID_RANGE"),
        ("from=2026-11-01&to=2026-12-02T00:00:01&bucket=hour", "RANGE_TOO_LARGE"),
        ("from=2025-01-01&to=2026-01-03&bucket=day", "RANGE_TOO_LARGE"),
        ("top=0", "INVALID_QUERY"),
        ("top=101", "INVALID_QUERY"),
        ("top=x", "INVALID_QUERY"),
    ],
)
def test_bad_input_is_a_400_in_the_one_error_shape(seeded: LiveApp, query: str, code: str) -> None:
    before = seeded.rows.snapshot()
    expect_error(seeded.client.get(f"{URL}?{query}"), 400, code)
    assert seeded.rows.snapshot() == before


def test_the_largest_ranges_allowed(seeded: LiveApp) -> None:
    assert len(get(seeded, "from=2026-11-01&to=2026-12-02&bucket=hour")["buckets"]) == 31 * 24
    assert len(get(seeded, "from=2026-01-01&to=2027-01-02&bucket=day")["buckets"]) == 366


def test_documented_in_swagger(live: LiveApp) -> None:
    spec = live.client.get("/swagger.json").get_json()
    op = spec["paths"]["/api/v1/admin/analytics"]["get"]
    assert {p["name"] for p in op["parameters"]} >= {"from", "to", "bucket", "top"}
    assert op["responses"]["200"]["schema"]["$ref"] == "#/definitions/Analytics"
    assert {"400", "401", "403"} <= set(op["responses"])
    assert set(spec["definitions"]["Analytics"]["properties"]) >= {
        "runs_per_language",
        "outcomes",
        "latency",
        "active",
        "top_users",
        "compile_cache",
        "buckets",
    }


def test_reads_the_replica_when_one_is_configured(make_live: Any, db_template: Any, tmp_path: Any) -> None:
    """The "replica" is a second migrated file that is not replicated: rows put only there are
    what the analytics count, and rows only on the primary are not."""
    import shutil

    replica = tmp_path / "replica.db"
    shutil.copy(db_template, replica)
    live = make_live(database_replica_url=f"sqlite:///{replica}")
    sid = live.session()["session_id"]
    live.execute(sid)  # on the primary only
    on_replica = LiveApp(live.app, live.client, live.settings, live.enqueued, Rows(f"sqlite:///{replica}"))
    seed(on_replica, RUNS, {"alice": ALICE, "bob": BOB})
    try:
        body = get(live, "from=2026-11-01&to=2026-11-03")
        assert body["total_runs"] == 6
        assert get(live, "")["total_runs"] == 0  # today's run is on the primary only
    finally:
        on_replica.rows.engine.dispose()


def test_the_worker_records_compile_cache_hits_and_misses() -> None:
    from livecode.worker.cache_use import compile_cached

    assert compile_cached("c", cached=True) is True
    assert compile_cached("c", cached=False) is False  # the compiler ran (a compile error too)
    assert compile_cached("python", cached=False) is None  # nothing to compile
    assert compile_cached("c", cached=False, internal_error=True) is None  # says nothing of the cache
    assert compile_cached("no-such-language", cached=True) is None


def test_a_range_with_more_runs_than_the_cap_is_refused(make_live: Any) -> None:
    live = make_live(analytics_max_runs=5)
    seed(live, RUNS, {"alice": ALICE, "bob": BOB})
    err = expect_error(live.client.get(f"{URL}?from=2026-11-01&to=2026-11-03"), 400, "RANGE_TOO_LARGE")
    assert err["details"] == {"runs": 6, "max_runs": 5}
    assert get(live, "from=2026-11-02&to=2026-11-03")["total_runs"] == 3  # a shorter range is answered


def test_the_migration_up_and_down_on_sqlite(tmp_path: Any) -> None:
    from tests.integration.test_analytics import check_analytics_migration

    check_analytics_migration(f"sqlite:///{tmp_path / 'db.sqlite'}")
