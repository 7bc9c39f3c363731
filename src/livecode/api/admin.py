"""/api/v1/admin: operator endpoints (statistics; dead letters are added here too). Admin role only."""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, Resource, fields

from ..services.stats import admin_stats
from . import schemas
from .auth import admin_required
from .body import query_int
from .context import rt

ns = Namespace("admin", description="Operator endpoints (admin role)")
schemas.attach(ns)

stats_model = ns.model("AdminStats", {
    "window_s": fields.Integer(required=True),
    "generated_at": fields.String(required=True),
    "executions": fields.Raw(required=True, description="{total, by_status, by_language: {lang: {status: n}}}"),
    "queues": fields.Raw(required=True, description="messages waiting per queue"),
    "workers": fields.Raw(required=True, description="{count, nodes}"),
})


@ns.route("/stats")
class Stats(Resource):
    @ns.doc("admin_stats", params={"window_s": "time window in seconds (60 to 2592000, default 3600)"})
    @ns.response(200, "Statistics", stats_model)
    @ns.response(401, "Not signed in", schemas.error)
    @ns.response(403, "Not an admin", schemas.error)
    @admin_required
    def get(self) -> Any:
        """Executions by status and language over a time window, queue depth, live workers."""
        window = query_int("window_s", 3600, 60, 30 * 24 * 3600)
        return admin_stats(rt(), window)
