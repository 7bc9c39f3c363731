"""/api/v1/admin/analytics: usage over time for operators (services/analytics.py). Admin role only.

The route hangs off the admin namespace (api/admin.py), so it shares its path and its docs.
"""

from __future__ import annotations

from typing import Any

from flask import request
from flask_restx import Resource, fields

from ..services import analytics as service
from . import schemas
from .admin import ns
from .auth import admin_required
from .body import query_int
from .context import rt

percentiles = ns.model(
    "AnalyticsPercentiles",
    {
        "count": fields.Integer(required=True, description="runs the percentiles are taken over"),
        "p50": schemas.nullable(fields.Float(required=True, description="median, ms; null with no runs")),
        "p95": schemas.nullable(fields.Float(required=True, description="95th percentile, ms; null with no runs")),
    },
)
language_series = ns.model(
    "AnalyticsLanguageSeries",
    {
        "language": fields.String(required=True),
        "total": fields.Integer(required=True),
        "counts": fields.List(fields.Integer, required=True, description="runs queued in each bucket of `buckets`"),
    },
)
outcome = ns.model(
    "AnalyticsOutcome",
    {
        "outcome": fields.String(
            required=True, description="the reason when there is one, else the status", example="RUNTIME_ERROR"
        ),
        "status": fields.String(required=True, example="FAILED"),
        "reason": schemas.nullable(fields.String(required=True)),
        "count": fields.Integer(required=True),
        "share": fields.Float(required=True, description="count / total_runs, 0 to 1"),
    },
)
latency = ns.model(
    "AnalyticsLatency",
    {
        "language": fields.String(required=True),
        "queue_wait_ms": fields.Nested(
            percentiles, required=True, description="queued to started, over the runs that started"
        ),
        "run_time_ms": fields.Nested(
            percentiles, required=True, description="the program's wall time, over the runs that finished"
        ),
    },
)
active = ns.model(
    "AnalyticsActive",
    {
        "users": fields.Integer(required=True, description="distinct users with a run in the range"),
        "sessions": fields.Integer(required=True, description="distinct sessions with a run in the range"),
        "users_per_bucket": fields.List(fields.Integer, required=True),
        "sessions_per_bucket": fields.List(fields.Integer, required=True),
    },
)
top_user = ns.model(
    "AnalyticsTopUser",
    {
        "user_id": schemas.nullable(fields.String(required=True, description="null: runs without an account")),
        "username": schemas.nullable(fields.String(required=True, description="null if none or deleted")),
        "runs": fields.Integer(required=True),
        "cpu_time_ms": fields.Integer(required=True),
    },
)
top_users = ns.model(
    "AnalyticsTopUsers",
    {
        "by_runs": fields.List(fields.Nested(top_user), required=True),
        "by_cpu": fields.List(fields.Nested(top_user), required=True),
    },
)
cache_language = ns.model(
    "AnalyticsCacheLanguage",
    {
        "language": fields.String(required=True),
        "hits": fields.Integer(required=True),
        "misses": fields.Integer(required=True),
        "hit_rate": schemas.nullable(fields.Float(required=True)),
    },
)
cache = ns.model(
    "AnalyticsCompileCache",
    {
        "hits": fields.Integer(required=True, description="runs whose compiled program came from the cache"),
        "misses": fields.Integer(required=True, description="runs that compiled (compile errors included)"),
        "hit_rate": schemas.nullable(fields.Float(required=True, description="hits / (hits + misses); null if none")),
        "by_language": fields.List(fields.Nested(cache_language), required=True),
    },
)
report = ns.model(
    "Analytics",
    {
        "from": fields.String(required=True, description="start of the first bucket (UTC, inclusive)"),
        "to": fields.String(required=True, description="end of the last bucket (UTC, exclusive)"),
        "bucket": fields.String(required=True, enum=list(service.BUCKETS)),
        "generated_at": fields.String(required=True),
        "buckets": fields.List(fields.String, required=True, description="the start of each bucket"),
        "total_runs": fields.Integer(required=True),
        "runs_per_language": fields.List(fields.Nested(language_series), required=True),
        "outcomes": fields.List(fields.Nested(outcome), required=True),
        "latency": fields.List(fields.Nested(latency), required=True),
        "active": fields.Nested(active, required=True),
        "top_users": fields.Nested(top_users, required=True),
        "compile_cache": fields.Nested(cache, required=True),
    },
)


@ns.route("/analytics")
class Analytics(Resource):
    @ns.doc(
        "admin_analytics",
        params={
            "from": "ISO 8601 date or date-time (UTC unless it has an offset); default: 7 days (by day) or "
            "24 hours (by hour) before `to`; widened to the start of its bucket",
            "to": "ISO 8601 date or date-time; default now; widened to the end of its bucket",
            "bucket": f"hour or day (default day); at most {service.MAX_BUCKETS['hour']} hours or "
            f"{service.MAX_BUCKETS['day']} days in a range",
            "top": f"how many users in each top list (1 to {service.MAX_TOP}, default {service.DEFAULT_TOP})",
        },
    )
    @ns.response(200, "Analytics of the runs queued in the range", report)
    @ns.response(400, "Bad date, unknown bucket, `from` not before `to`, or a range too large", schemas.error)
    @ns.response(401, "Not signed in", schemas.error)
    @ns.response(403, "Not an admin", schemas.error)
    @admin_required
    def get(self) -> Any:
        """Runs per language over time, outcome shares, p50/p95 queue wait and run time per
        language, active users and sessions, top users by runs and CPU, compile-cache hit rate."""
        args = request.args
        rng = service.parse_range(args.get("from"), args.get("to"), args.get("bucket"))
        top = query_int("top", service.DEFAULT_TOP, 1, service.MAX_TOP)
        return service.analytics(rt(), rng, top)
