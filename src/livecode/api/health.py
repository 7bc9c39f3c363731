"""/health, /health/redis, /health/celery: 200 with details when healthy, 503 naming what is down.
Each answers within a second or two even when a dependency hangs."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask_restx import Namespace, Resource

from ..errors import new_error_id
from . import schemas
from .context import rt

log = logging.getLogger(__name__)
ns = Namespace("health", description="Health checks")
schemas.attach(ns)


def _timed(check: Any) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        detail = check() or {}
        return {"status": "ok", "latency_ms": round((time.perf_counter() - start) * 1000, 2), **detail}
    except Exception as exc:  # noqa: BLE001 - any failure means down
        # The exception names hosts, ports and statements: it goes to the operator's log only.
        error_id = new_error_id()
        log.warning("health check failed (error id %s): %s: %s", error_id, type(exc).__name__, exc,
                    extra={"error_id": error_id})
        return {"status": "down", "error": f"unreachable ({type(exc).__name__}); logged with error id {error_id}"}


def check_database() -> dict[str, Any]:
    def ping() -> dict[str, Any]:
        rt().db.ping()
        return {"dialect": rt().db.engine.dialect.name}

    return _timed(ping)


def check_redis() -> dict[str, Any]:
    return _timed(rt().broker.ping)


def check_workers() -> dict[str, Any]:
    def workers() -> dict[str, Any]:
        alive = rt().registry.alive()
        if not alive:
            return {"status": "down", "error": "no worker has sent a heartbeat recently"}
        return {
            "workers": len(alive),
            "nodes": {name: {k: info.get(k) for k in ("host", "pid", "active", "concurrency")}
                      for name, info in alive.items()},
            "embedded": rt().settings.embedded,
        }

    return _timed(workers)


def respond(checks: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], int]:
    down = [name for name, c in checks.items() if c["status"] != "ok"]
    body: dict[str, Any] = {"status": "ok" if not down else "down", "mode": rt().settings.mode, "details": checks}
    if down:
        body["down"] = down
    return body, 200 if not down else 503


@ns.route("")
class Health(Resource):
    @ns.response(200, "Healthy", schemas.health)
    @ns.response(503, "A dependency is down", schemas.health)
    def get(self) -> Any:
        """API health: the database and the broker."""
        return respond({"database": check_database(), "broker": check_redis()})


@ns.route("/redis")
class HealthRedis(Resource):
    @ns.response(200, "Healthy", schemas.health)
    @ns.response(503, "Redis is down", schemas.health)
    def get(self) -> Any:
        """Redis (broker) connection status."""
        return respond({"redis": check_redis()})


@ns.route("/celery")
class HealthCelery(Resource):
    @ns.response(200, "Healthy", schemas.health)
    @ns.response(503, "No live worker", schemas.health)
    def get(self) -> Any:
        """Celery worker status, from the workers' heartbeats."""
        return respond({"celery": check_workers()})
