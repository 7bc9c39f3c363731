"""/api/v1/executions: submit a run of a session's code, read results, list a session's runs."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from flask import request
from flask_restx import Namespace, Resource

from ..errors import ValidationError
from ..services import executions as svc
from ..services import testcases
from ..services.cancel import cancel_execution
from ..services.waiting import EndWait, wait_for_end
from ..web import after_response, parking
from . import schemas
from .body import json_body, optional_bool, optional_int, optional_str, parse_uuid, query_int, reject_unknown
from .callbacks import callback_for, schedule_hook
from .context import enqueue, owner_id, request_id, rt
from .idempotency import idempotent
from .ratelimit import execution_charge_sent, settle_charge
from .waiting import WAIT_PARAMS, ParkedWait, wait_seconds, wait_slots

ns = Namespace("executions", description="Asynchronous executions of a session's code")
schemas.attach(ns)

EXECUTE_FIELDS = {
    "stdin", "args", "priority", "interactive", "merge_stderr", "tests", "compare", "callback_url", *svc.LIMIT_FIELDS,
}
ENCODING_PARAM = {
    "in": "query",
    "type": "string",
    "enum": list(svc.OUTPUT_ENCODINGS),
    "default": "text",
    "description": "how stdout, stderr and compile_output are returned: `text` (UTF-8; every "
    "undecodable byte sequence replaced by U+FFFD) or `base64` (the exact bytes the program "
    "wrote, base64-encoded). The body's `encoding` field says which.",
}


def output_encoding() -> str:
    return svc.check_encoding(request.args.get("encoding"))


def parse_execute_options(body: dict[str, Any]) -> svc.ExecuteOptions:
    reject_unknown(body, EXECUTE_FIELDS)
    args = body.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValidationError("field 'args' must be a list of strings", code="INVALID_FIELD")
    limits = {}
    for name in svc.LIMIT_FIELDS:
        value = optional_int(body, name, minimum=svc.limit_minimum(name))
        if value is not None:
            limits[name] = value
    return svc.ExecuteOptions(
        stdin=optional_str(body, "stdin", "") or "",
        args=list(args),
        limits=limits,
        priority=optional_str(body, "priority", "interactive") or "interactive",
        interactive=optional_bool(body, "interactive"),
        merge_stderr=optional_bool(body, "merge_stderr"),
        tests=testcases.parse_tests(body.get("tests")),
        compare=optional_str(body, "compare"),
    )


@ns.route("/session/<string:session_id>/execute")
@ns.param("session_id", "the session's UUID")
class Execute(Resource):
    # Charged before the handler (the user's budget and the client address's), its answer awaited
    # after the session read and before anything is written: a refused request creates nothing.
    decorators = [execution_charge_sent]

    @ns.doc("execute_session", params={"Idempotency-Key": {"in": "header", "type": "string"},
                                       **WAIT_PARAMS, "encoding": ENCODING_PARAM})
    @ns.expect(schemas.execute_request, validate=False)
    @ns.response(200, "Finished (wait=true): the execution, as GET /api/v1/executions/{id}", schemas.execution)
    @ns.response(202, "Queued", schemas.execution_queued)
    @ns.response(400, "Invalid options or query parameters, unknown or unavailable language, limit above maximum",
                 schemas.error)
    @ns.response(404, "No such session", schemas.error)
    @ns.response(409, "The session already has an execution in progress", schemas.error)
    @ns.response(422, "Idempotency key reused with a different body", schemas.error)
    @ns.response(429, "Rate limit exceeded, or at the storage quota (EXECUTION_QUOTA_EXCEEDED)", schemas.error)
    def post(self, session_id: str) -> Any:
        """Queue a run of the session's current code. Returns at once (202); poll the execution or
        follow its events. With `wait=true` it answers when the run has finished (200, the
        finished execution), or 202 as usual when `timeout_ms` runs out first."""
        sid = parse_uuid(session_id, "session_id")
        body = json_body(allow_empty=True)
        r = rt()
        wait_s = wait_seconds(r.settings)
        encoding = output_encoding() if wait_s is not None else "text"
        parks = parking.can_park(request.environ)
        waiting = wait_s is not None and wait_slots(r.settings).try_acquire(parks)
        watch: dict[str, Any] = {}

        def listen(eid: Any) -> None:
            # Before the id is on the queue: the end cannot pass unheard.
            watch["eid"] = str(eid)
            watch["event"] = r.events.watch_finished(str(eid))

        def submit() -> tuple[dict[str, Any], int]:
            options = parse_execute_options(body)
            result = svc.submit_execution(
                r.db, enqueue(), r.settings, sid, owner_id=owner_id(), options=options, events=r.events,
                request_id=request_id(), on_queued=listen if waiting else None, languages=r.languages,
                after_insert=schedule_hook(callback_for(body)), before_insert=settle_charge,
                # A waiting request hears Redis's replies before it waits; any other after its 202.
                defer=None if waiting else partial(after_response.defer, request.environ),
            )
            return result, 202

        try:
            if request.headers.get("Idempotency-Key") is not None:
                # Before the key's claim is written (a refused request writes nothing) and before a
                # replay, which never reaches submit(), would wait for its run.
                settle_charge()
            result, status = idempotent("execute", body, submit)
            if not waiting or status != 202 or wait_s is None:
                return result, status
            eid = uuid.UUID(result["execution_id"])
            if parks:
                # The server holds this 202 and answers it, or the finished execution, when the
                # wait ends (api/waiting.ParkedWait); this thread goes back to serve others.
                parking.park(request.environ, ParkedWait(
                    EndWait(r.db, r.events, eid, owner_id(), wait_s, encoding=encoding, watch=watch.pop("event", None)),
                    wait_slots(r.settings)))
                waiting = False  # the parked wait gives the slot back
                return result, 202
            final = wait_for_end(r.db, r.events, eid, owner_id(), wait_s, encoding=encoding,
                                 watch=watch.pop("event", None))
            return (final, 200) if final is not None else (result, 202)
        finally:
            if "event" in watch:  # registered, but the wait never started
                r.events.unwatch_finished(watch["eid"], watch["event"])
            if waiting:
                wait_slots(r.settings).release(parks)


@ns.route("/<string:execution_id>")
@ns.param("execution_id", "the execution's UUID")
class ExecutionItem(Resource):
    @ns.doc("get_execution", params={"encoding": ENCODING_PARAM})
    @ns.response(200, "The execution", schemas.execution)
    @ns.response(400, "Not a UUID, or an unknown encoding", schemas.error)
    @ns.response(404, "No such execution", schemas.error)
    def get(self, execution_id: str) -> Any:
        """Get an execution's state and, once finished, its result."""
        eid = parse_uuid(execution_id, "execution_id")
        return svc.get_execution(rt().db, eid, owner_id(), output_encoding())


@ns.route("/<string:execution_id>/cancel")
@ns.param("execution_id", "the execution's UUID")
class CancelExecution(Resource):
    @ns.doc("cancel_execution")
    @ns.expect(schemas.cancel_request, validate=False)
    @ns.response(200, "It was still queued: now CANCELLED, and it never runs (the execution, as GET returns it)",
                 schemas.execution)
    @ns.response(202, "It is running: the signal is on its way to the program", schemas.cancel_sent)
    @ns.response(400, "Not a UUID, or a signal not in the list", schemas.error)
    @ns.response(403, "A viewer of the session: they follow runs, they do not stop them", schemas.error)
    @ns.response(404, "No such execution", schemas.error)
    @ns.response(409, "It has already ended (EXECUTION_FINISHED)", schemas.error)
    def post(self, execution_id: str) -> Any:
        """Stop a run (a Stop button). A QUEUED execution becomes CANCELLED at once (200). A
        RUNNING one gets `signal` (default SIGKILL) delivered to its program by the worker that
        runs it (202); it ends as CANCELLED with `signal` set when the signal ended it, or with
        the program's own exit when the program handled it (Python's KeyboardInterrupt for
        SIGINT). Follow it, or poll GET, for the end. A cancel that races the end changes nothing."""
        eid = parse_uuid(execution_id, "execution_id")
        body = json_body(allow_empty=True)
        reject_unknown(body, {"signal"})
        r = rt()
        result, cancelled = cancel_execution(r.db, r.stdin, r.events, eid, owner_id(), body.get("signal"))
        return result, 200 if cancelled else 202


@ns.route("/session/<string:session_id>")
@ns.param("session_id", "the session's UUID")
class SessionExecutions(Resource):
    @ns.doc("list_session_executions",
            params={"page": "1-based page", "per_page": "1 to 100", "encoding": ENCODING_PARAM})
    @ns.response(200, "The session's executions, newest first", schemas.execution_page)
    @ns.response(400, "Invalid id, paging or encoding", schemas.error)
    @ns.response(404, "No such session", schemas.error)
    def get(self, session_id: str) -> Any:
        """List a session's executions, newest first."""
        sid = parse_uuid(session_id, "session_id")
        page = query_int("page", 1, 1, 1_000_000)
        per_page = query_int("per_page", 20, 1, 100)
        return svc.list_executions(rt().db, sid, owner_id(), page, per_page, output_encoding())
