"""Usage analytics for operators (design: future enhancement "analytics"): runs per language over
time, outcome shares, queue wait and run time percentiles, active users and sessions, the heaviest
users, and the compile cache's hit rate. No Flask here.

Every figure is one aggregate query over the executions queued in [start, end), on the read
replica when there is one. Each selects by `queued_at` range through ix_executions_queued_language
(migration 0007_analytics), so its cost grows with the runs in the range, not with the table.
Percentiles are PostgreSQL's percentile_cont; SQLite (the embedded mode) has no such aggregate,
so there a window query returns only the two rows around each percentile's position per language,
and the interpolation percentile_cont does is done here (`portable_percentiles`, exact and equal
to percentile_cont; the integration tests compare the two on PostgreSQL).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Float, and_, case, cast, func, literal_column, or_, select, true
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from ..errors import ValidationError
from ..models import Execution, User, utcnow
from ..runtime import Runtime

BUCKETS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
# The most points one answer has: a month by hour, a year (and a leap day) by day.
MAX_BUCKETS = {"hour": 31 * 24, "day": 366}
DEFAULT_BUCKET = "day"
DEFAULT_SPAN = {"hour": timedelta(hours=24), "day": timedelta(days=7)}
PERCENTILES = (0.5, 0.95)
DEFAULT_TOP = 10
MAX_TOP = 100

E = Execution.__table__.c


@dataclass(frozen=True)
class Range:
    """The bucket grid: [start, end) cut into whole buckets, both ends on bucket boundaries (UTC)."""

    start: datetime
    end: datetime
    bucket: str

    @property
    def step(self) -> timedelta:
        return BUCKETS[self.bucket]

    def starts(self) -> list[datetime]:
        n = int((self.end - self.start) / self.step)
        return [self.start + i * self.step for i in range(n)]


def _floor(t: datetime, bucket: str) -> datetime:
    t = t.replace(minute=0, second=0, microsecond=0)
    return t.replace(hour=0) if bucket == "day" else t


def _ceil(t: datetime, bucket: str) -> datetime:
    floored = _floor(t, bucket)
    return floored if floored == t else floored + BUCKETS[bucket]


def _parse_time(name: str, raw: str) -> datetime:
    """An ISO 8601 date or date-time; one without an offset is UTC."""
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError as exc:
        raise ValidationError(
            f"query parameter {name!r} must be an ISO 8601 date or date-time (e.g. 2026-12-01 or "
            f"2026-12-01T09:00:00Z), got {raw[:40]!r}",
            code="INVALID_QUERY",
            details={"parameter": name},
        ) from exc
    try:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # an offset that moves it past year 1 or 9999
        value = datetime.min.replace(tzinfo=UTC)
    if not 2000 <= value.year <= 9000:
        raise ValidationError(
            f"query parameter {name!r} must be between the years 2000 and 9000",
            code="INVALID_QUERY",
            details={"parameter": name},
        )
    return value


def parse_range(raw_from: str | None, raw_to: str | None, raw_bucket: str | None, now: datetime | None = None) -> Range:
    """The time range and bucket of a request. `to` defaults to now, `from` to 7 days (by day) or
    24 hours (by hour) before `to`; both are widened to whole buckets. Raises ValidationError for
    an unknown bucket, a bad date, `from` not before `to`, or more than MAX_BUCKETS buckets."""
    bucket = (raw_bucket or DEFAULT_BUCKET).strip().lower()
    if bucket not in BUCKETS:
        raise ValidationError(
            f"query parameter 'bucket' must be one of {', '.join(BUCKETS)}, got {(raw_bucket or '')[:40]!r}",
            code="INVALID_QUERY",
            details={"parameter": "bucket"},
        )
    end_at = _parse_time("to", raw_to) if raw_to else (now or utcnow())
    start_at = _parse_time("from", raw_from) if raw_from else _ceil(end_at, bucket) - DEFAULT_SPAN[bucket]
    if start_at >= end_at:
        raise ValidationError(
            "'from' must be before 'to'",
            code="INVALID_RANGE",
            details={"from": start_at.isoformat(), "to": end_at.isoformat()},
        )
    rng = Range(_floor(start_at, bucket), _ceil(end_at, bucket), bucket)
    count = int((rng.end - rng.start) / rng.step)
    if count > MAX_BUCKETS[bucket]:
        raise ValidationError(
            f"the range has {count} {bucket}s; at most {MAX_BUCKETS[bucket]} by {bucket}"
            + ("; ask by day for a longer range" if bucket == "hour" else ""),
            code="RANGE_TOO_LARGE",
            details={"buckets": count, "max_buckets": MAX_BUCKETS[bucket]},
        )
    return rng


# ---- SQL pieces that differ between PostgreSQL and SQLite -------------------------------------


def _bucket_of(dialect: str, bucket: str) -> ColumnElement[Any]:
    """The start of the bucket a run was queued in (UTC)."""
    if dialect == "postgresql":
        # date_trunc on a timestamptz would cut in the session's time zone; cut in UTC.
        return func.date_trunc(bucket, func.timezone("UTC", E.queued_at))
    # SQLite keeps the UTC time as text ("2026-12-03 16:35:41.123456").
    return func.strftime("%Y-%m-%d 00:00:00" if bucket == "day" else "%Y-%m-%d %H:00:00", E.queued_at)


def _wait_ms(dialect: str) -> ColumnElement[Any]:
    """Queued to started, in milliseconds (null until started)."""
    if dialect == "postgresql":
        return cast(func.extract("epoch", E.started_at - E.queued_at) * 1000, Float)
    return (func.julianday(E.started_at) - func.julianday(E.queued_at)) * 86_400_000.0


def _as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ---- the figures --------------------------------------------------------------------------------


def _in_range(rng: Range) -> ColumnElement[bool]:
    return and_(E.queued_at >= rng.start, E.queued_at < rng.end)


def _index(rng: Range) -> dict[datetime, int]:
    return {t: i for i, t in enumerate(rng.starts())}


def runs_per_language(conn: Connection, dialect: str, rng: Range) -> list[dict[str, Any]]:
    """Runs queued per bucket for each language, busiest language first."""
    b = _bucket_of(dialect, rng.bucket).label("b")
    rows = conn.execute(select(b, E.language, func.count()).where(_in_range(rng)).group_by(b, E.language)).all()
    slots = _index(rng)
    series: dict[str, list[int]] = {}
    for when, language, n in rows:
        series.setdefault(language, [0] * len(slots))[slots[_as_utc(when)]] += int(n)
    out = [{"language": lang, "total": sum(counts), "counts": counts} for lang, counts in series.items()]
    return sorted(out, key=lambda d: (-d["total"], d["language"]))


def _distinct(
    conn: Connection, column: ColumnElement[Any], rng: Range, bucket: ColumnElement[Any] | None = None
) -> list[Any]:
    """How many distinct values of `column` (per bucket, when given) in the range. DISTINCT in a
    subquery is hashed; count(DISTINCT ...) sorts each group, several times slower on PostgreSQL."""
    keys = [bucket.label("b")] if bucket is not None else []
    sub = select(*keys, column.label("v")).where(_in_range(rng), column.is_not(None)).distinct().subquery()
    if bucket is None:
        return [conn.execute(select(func.count()).select_from(sub)).scalar_one()]
    return list(conn.execute(select(sub.c.b, func.count()).group_by(sub.c.b)).all())


def active(conn: Connection, dialect: str, rng: Range) -> dict[str, Any]:
    """Distinct users and sessions that queued a run, per bucket and over the whole range."""
    b = _bucket_of(dialect, rng.bucket)
    slots = _index(rng)
    out: dict[str, Any] = {}
    for name, column in (("users", E.user_id), ("sessions", E.session_id)):
        per = [0] * len(slots)
        for when, n in _distinct(conn, column, rng, b):
            per[slots[_as_utc(when)]] = int(n)
        out[name] = int(_distinct(conn, column, rng)[0])
        out[f"{name}_per_bucket"] = per
    return {k: out[k] for k in ("users", "sessions", "users_per_bucket", "sessions_per_bucket")}


def outcomes(conn: Connection, rng: Range) -> list[dict[str, Any]]:
    """Runs by status and reason, with each one's share of all runs in the range."""
    rows = conn.execute(
        select(E.status, E.reason, func.count()).where(_in_range(rng)).group_by(E.status, E.reason)
    ).all()
    total = sum(int(n) for _s, _r, n in rows)
    out = [
        {
            "outcome": reason or status,
            "status": status,
            "reason": reason,
            "count": int(n),
            "share": round(int(n) / total, 4),
        }
        for status, reason, n in rows
    ]
    return sorted(out, key=lambda d: (-d["count"], d["outcome"]))


def _percentiles_of(value: ColumnElement[Any]) -> ColumnElement[Any]:
    """percentile_cont of every PERCENTILES at once: one sort of the group, not one per percentile."""
    wanted: ColumnElement[Any] = literal_column("ARRAY[" + ", ".join(str(p) for p in PERCENTILES) + "]::float8[]")
    return func.percentile_cont(wanted).within_group(value)


def latency_postgres(conn: Connection, rng: Range) -> dict[str, dict[str, dict[str, Any]]]:
    """{language: {"queue_wait_ms" | "run_time_ms": {count, p50, p95}}} with percentile_cont
    (which skips nulls: runs not yet started, or not finished)."""
    wait, run = _wait_ms("postgresql"), cast(E.execution_time_ms, Float)
    rows = conn.execute(
        select(E.language, func.count(wait), _percentiles_of(wait), func.count(run), _percentiles_of(run))
        .where(_in_range(rng))
        .group_by(E.language)
    ).all()
    return {
        language: {"queue_wait_ms": _figures(n_wait, p_wait), "run_time_ms": _figures(n_run, p_run)}
        for language, n_wait, p_wait, n_run, p_run in rows
    }


def _figures(count: Any, values: Sequence[Any] | None) -> dict[str, Any]:
    values = values or [None] * len(PERCENTILES)  # null: no value in the group
    return {"count": int(count), **{_pname(p): _ms(v) for p, v in zip(PERCENTILES, values, strict=True)}}


def _pname(p: float) -> str:
    return f"p{round(p * 100)}"


def _ms(v: Any) -> float | None:
    return None if v is None else round(float(v), 1)


def portable_percentiles(conn: Connection, value: ColumnElement[Any], rng: Range) -> dict[str, dict[str, Any]]:
    """{language: {count, p50, p95}} of `value` over the range, equal to percentile_cont, in plain
    SQL that SQLite and PostgreSQL both run: a window numbers each language's values in order,
    and only the two values around each percentile's position (1 + p*(n-1)) come back."""
    rn = func.row_number().over(partition_by=E.language, order_by=value).label("rn")
    n = func.count().over(partition_by=E.language).label("n")
    ranked = (
        select(E.language.label("language"), value.label("v"), rn, n)
        .where(_in_range(rng), value.is_not(None))
        .subquery()
    )
    # floor(p*(n-1)) in integer arithmetic (per mille), the same in both databases.
    wanted = [ranked.c.rn - 1 - (ranked.c.n - 1) * round(p * 1000) // 1000 for p in PERCENTILES]
    rows = conn.execute(
        select(ranked.c.language, ranked.c.n, ranked.c.rn, ranked.c.v).where(or_(*[w.in_([0, 1]) for w in wanted]))
    ).all()
    found: dict[str, tuple[int, dict[int, float]]] = {}
    for language, count, position, v in rows:
        found.setdefault(language, (int(count), {}))[1][int(position)] = float(v)
    out: dict[str, dict[str, Any]] = {}
    for language, (count, at) in found.items():
        figures: dict[str, Any] = {"count": count}
        for p in PERCENTILES:
            per_mille = round(p * 1000)
            k = (count - 1) * per_mille // 1000
            frac = ((count - 1) * per_mille - k * 1000) / 1000
            lo = at[k + 1]
            figures[_pname(p)] = _ms(lo + frac * (at[k + 2] - lo) if frac else lo)
        out[language] = figures
    return out


def latency_portable(conn: Connection, dialect: str, rng: Range) -> dict[str, dict[str, dict[str, Any]]]:
    waits = portable_percentiles(conn, _wait_ms(dialect), rng)
    runs = portable_percentiles(conn, E.execution_time_ms, rng)
    empty = {"count": 0, **{_pname(p): None for p in PERCENTILES}}
    return {
        lang: {"queue_wait_ms": waits.get(lang, empty), "run_time_ms": runs.get(lang, empty)}
        for lang in sorted(set(waits) | set(runs))
    }


def latency(conn: Connection, dialect: str, rng: Range) -> list[dict[str, Any]]:
    """Queue wait and run time percentiles per language, for the languages with a started run."""
    by_language = latency_postgres(conn, rng) if dialect == "postgresql" else latency_portable(conn, dialect, rng)
    return [
        {"language": lang, **figs}
        for lang, figs in sorted(by_language.items())
        if figs["queue_wait_ms"]["count"] or figs["run_time_ms"]["count"]
    ]


def top_users(conn: Connection, rng: Range, limit: int) -> dict[str, list[dict[str, Any]]]:
    """The users with the most runs, and with the most CPU time, in the range. Runs without an
    owner (sign-in off) are one entry with user_id null."""
    runs, cpu = func.count().label("runs"), func.coalesce(func.sum(E.cpu_time_ms), 0).label("cpu")
    base = (
        select(E.user_id, User.username, runs, cpu)
        .select_from(Execution.__table__.outerjoin(User, User.id == E.user_id))
        .where(_in_range(rng))
        .group_by(E.user_id, User.username)
    )
    out = {}
    for key, order in (("by_runs", (runs.desc(), cpu.desc())), ("by_cpu", (cpu.desc(), runs.desc()))):
        rows = conn.execute(base.order_by(*order, E.user_id).limit(limit)).all()
        out[key] = [
            {
                "user_id": str(uuid.UUID(str(u))) if u is not None else None,
                "username": name,
                "runs": int(r),
                "cpu_time_ms": int(c),
            }
            for u, name, r, c in rows
        ]
    return out


def compile_cache(conn: Connection, rng: Range) -> dict[str, Any]:
    """Hits and misses of the compile cache (runs of compiled languages), overall and per language."""
    hit = func.coalesce(func.sum(case((E.compile_cached == true(), 1), else_=0)), 0)
    rows = conn.execute(
        select(E.language, hit, func.count())
        .where(_in_range(rng), E.compile_cached.is_not(None))
        .group_by(E.language)
        .order_by(E.language)
    ).all()
    per = [_rate(lang, int(h), int(n) - int(h)) for lang, h, n in rows]
    overall = _rate(None, sum(d["hits"] for d in per), sum(d["misses"] for d in per))
    overall.pop("language")
    return {**overall, "by_language": per}


def _rate(language: str | None, hits: int, misses: int) -> dict[str, Any]:
    total = hits + misses
    return {"language": language, "hits": hits, "misses": misses, "hit_rate": round(hits / total, 4) if total else None}


def analytics(rt: Runtime, rng: Range, top: int = DEFAULT_TOP) -> dict[str, Any]:
    """Every figure of the admin analytics for `rng`, read on the replica when there is one."""
    dialect = rt.db.replica_engine.dialect.name
    with rt.db.read_core() as conn:
        runs = runs_per_language(conn, dialect, rng)  # an index-only scan: the cheap one goes first
        total = sum(r["total"] for r in runs)
        cap = rt.settings.analytics_max_runs
        if cap and total > cap:
            raise ValidationError(
                f"the range holds {total} runs; at most {cap} (LIVECODE_ANALYTICS_MAX_RUNS): ask for a shorter range",
                code="RANGE_TOO_LARGE",
                details={"runs": total, "max_runs": cap},
            )
        body = {
            "from": rng.start.isoformat(),
            "to": rng.end.isoformat(),
            "bucket": rng.bucket,
            "generated_at": utcnow().isoformat(),
            "buckets": [t.isoformat() for t in rng.starts()],
            "total_runs": total,
            "runs_per_language": runs,
            "outcomes": outcomes(conn, rng),
            "latency": latency(conn, dialect, rng),
            "active": active(conn, dialect, rng),
            "top_users": top_users(conn, rng, top),
            "compile_cache": compile_cache(conn, rng),
        }
    return body
