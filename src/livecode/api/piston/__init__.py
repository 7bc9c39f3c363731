"""Piston v2 under /piston: with base URL `http://HOST:PORT/piston` a Piston client works unchanged.

    GET  /piston/api/v2/runtimes   [{language, version, aliases[, runtime]}]: what can run now
    GET  /piston/api/v2/packages   the same as Piston's installed packages (none can be added)
    POST /piston/api/v2/execute    one program, answered when it has run: {language, version, run,
                                   compile?}
    WS   /piston/api/v2/connect    Piston's interactive protocol (connect.py)
    GET  /piston/openapi.json      these operations as an OpenAPI document

Every answer is in Piston's shape, errors included: `{"message": "..."}` with Piston's status
(400 bad input, 415 not JSON) and LiveCode's own where Piston has none (401, 413, 429, 503).
Authentication, rate limits and the sandbox are LiveCode's: see docs/compat.md.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import Blueprint, Flask, Response, request

from ...errors import ApiError
from ...services import piston as svc
from ...services.waiting import EndWait, wait_for
from ...web import parking
from ...web.parking import PLACEHOLDER
from ..body import json_body
from ..context import enqueue, owner_id, request_id, rt
from ..errors import register_error_shape
from ..ratelimit import charge_executions
from ..waiting import ParkedWait, wait_slots
from .openapi import OPENAPI

bp = Blueprint("piston", __name__, url_prefix="/piston")
JSON_ONLY = "requests must be of type application/json"


def piston_json(data: Any, status: int = 200) -> Response:
    """JSON in the order Piston writes its fields (jsonify would sort the keys)."""
    return Response(json.dumps(data, separators=(",", ":")), status=status, mimetype="application/json")


def message_response(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    resp = piston_json({"message": message}, status)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def piston_error_body(_exc: BaseException, body: dict[str, Any], _status: int) -> dict[str, Any]:
    """Every error under /piston in Piston's shape (api/errors.py applies it, whichever layer
    raised, and before a route matched too): LiveCode's mapping decides the status and logs
    what is a bug; Piston's shape carries the message."""
    return {"message": body["error"]["message"]}


def piston_body() -> dict[str, Any]:
    """Piston's check first (any JSON content type, else 415), then LiveCode's strict parsing."""
    if not (request.headers.get("Content-Type") or "").startswith("application/json"):
        raise svc.PistonError(JSON_ONLY, 415)
    return json_body()


@bp.get("/api/v2/runtimes")
def runtimes() -> Any:
    return piston_json([entry.listing() for entry in svc.runtimes(rt().languages)])


@bp.get("/api/v2/packages")
def packages() -> Any:
    """Piston's package list: here every runtime is a worker's installed toolchain."""
    return piston_json(
        [
            {"language": rt.language, "language_version": rt.version, "installed": True}
            for rt in svc.runtimes(rt().languages)
        ]
    )


@bp.route("/api/v2/packages", methods=["POST", "DELETE"])
def manage_packages() -> Any:
    raise ApiError(
        "packages cannot be installed or removed here: the runtimes are the workers' own toolchains",
        status=405,
        headers={"Allow": "GET"},
    )


@bp.post("/api/v2/execute")
def execute() -> Any:
    r = rt()
    job = svc.parse_job(piston_body(), svc.runtimes(r.languages), r.settings)
    charge_executions(1)  # after the checks: bad input costs nothing, and creates nothing
    slots = wait_slots(r.settings)
    parks = parking.can_park(request.environ)
    if not slots.try_acquire(parks):
        raise ApiError(
            "this server has as many runs waiting as it can hold; retry shortly",
            status=503,
            headers={"Retry-After": "2"},
        )
    watch: dict[str, Any] = {}

    def listen(eid: uuid.UUID) -> None:
        # Before the id is on the queue: the end cannot pass unheard.
        watch["eid"] = str(eid)
        watch["event"] = r.events.watch_finished(str(eid))

    session_id = None
    parked = False
    try:
        session_id, eid = svc.start_run(
            r.db,
            enqueue(),
            r.settings,
            r.events,
            job,
            owner_id=owner_id(),
            request_id=request_id(),
            languages=r.languages,
            on_queued=listen,
        )
        # As long as LiveCode's blocking wait, plus the run's own time limit.
        wait_s = (r.settings.max_wait_ms + job.options.limits.get("time_limit_ms", r.settings.time_limit_ms)) / 1000
        late = f"the run did not finish within {wait_s:.0f} s (no worker took it in time); retry shortly"
        owner = owner_id()

        def answer(row: dict[str, Any] | None) -> Response:
            if row is None:
                return message_response(late, 503, {"Retry-After": "5"})
            stdout, stderr = row.get("stdout") or "", row.get("stderr") or ""
            output = svc.interleaved_output(r.events, str(eid), stdout, stderr) if stdout and stderr else None
            return piston_json(svc.piston_result(row, job.runtime, output))

        wait = EndWait(r.db, r.events, eid, owner, wait_s, watch=watch.pop("event", None))
        if parks:  # the server answers when the run ends, holding no thread meanwhile (web/parking.py)
            sid = session_id

            parking.park(request.environ, ParkedWait(
                wait, slots, 503, lambda row: PLACEHOLDER if row is None else answer(row),
                after=lambda: svc.forget_run(r.db, sid, owner)))
            parked = True
            return answer(None)  # held by the server: the answer if the run outlives the wait
        return answer(wait_for(wait))
    finally:
        if "event" in watch:  # registered, but the wait never started
            r.events.unwatch_finished(watch["eid"], watch["event"])
        if not parked:
            slots.release(parks)
            if session_id is not None:
                svc.forget_run(r.db, session_id, owner_id())


@bp.get("/openapi.json")
def openapi() -> Any:
    return piston_json(OPENAPI)


@bp.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def _unknown(rest: str) -> Response:
    return message_response(f"no such Piston endpoint: {request.method} /{rest[:200]}", 404)


def register_piston(app: Flask) -> None:
    """The /piston routes, and the interactive WebSocket beside them."""
    from .connect import register_connect

    register_connect(app)
    app.register_blueprint(bp)
    register_error_shape("/piston", piston_error_body)
