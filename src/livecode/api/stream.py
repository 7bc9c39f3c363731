"""Follow an execution live: Server-Sent Events and a WebSocket over the execution's event stream.

    GET /api/v1/executions/{id}/events   text/event-stream: `id:` (the bus event id), `event:`
                                         status | output | result | end, `data:` JSON
    GET /api/v1/executions/{id}/ws       WebSocket: the same events as {"id", "event", "data"};
                                         takes {"type": "stdin", "data": "..."} and
                                         {"type": "stdin_eof"} for interactive runs

Both replay from `Last-Event-ID` (header or ?last_event_id=) and then follow the live tail; both
end after "end". This module is only the two transports: what is sent, and when, is the
follower's (streaming/follower.py); interactive input goes through the runtime's stdin channels
(streaming/stdin.py). See docs/streaming.md.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, g, request
from flask_restx import Namespace, Resource
from flask_sock import Sock
from wsproto.utilities import RemoteProtocolError

from ..errors import ApiError, NotFound
from ..runtime import Runtime
from ..services import executions as svc
from ..services.access import Need, grants, role_of
from ..streaming.bus import Event, EventBus
from ..streaming.follower import HEARTBEAT_S, TERMINAL, RowLoader, check_last_event_id, follow, nothing_left
from ..streaming.tails import SharedTails
from . import schemas
from .body import parse_uuid
from .context import owner_id, rt
from .errors import json_error_response
from .stream_slots import ReleaseStreamSlots, StreamSlots, hold_slot
from .websockets import close_websocket, is_preflight_or_refused, receive_until_closed

log = logging.getLogger(__name__)

ns = Namespace(
    "streaming",
    description="Follow an execution live. Server-Sent Events below; the same events over a "
    "WebSocket at /api/v1/executions/{id}/ws, which also takes interactive stdin: "
    '{"type": "stdin", "data": "line\\n"} and {"type": "stdin_eof"} (runs submitted with '
    '"interactive": true). Events: status {status, attempt?}, output {stream: '
    "stdout|stderr|compile, text}, result {the execution}, end {status}.",
)
schemas.attach(ns)


def tails() -> SharedTails:
    return current_app.extensions["livecode.tails"]  # type: ignore[no-any-return]


def _lookup(execution_id: str) -> tuple[uuid.UUID, dict[str, Any]]:
    eid = parse_uuid(execution_id, "execution_id")
    return eid, svc.get_execution(rt().db, eid, owner_id())


def row_loader(r: Runtime, execution_id: uuid.UUID, owner: uuid.UUID | None) -> RowLoader:
    """The follower's way to read the row again: as GET returns it, None once it is gone."""

    def load() -> dict[str, Any] | None:
        try:
            return svc.get_execution(r.db, execution_id, owner)
        except NotFound:
            return None

    return load


def _resume_point() -> str | None:
    return check_last_event_id(request.headers.get("Last-Event-ID") or request.args.get("last_event_id"))


# ---- Server-Sent Events ----------------------------------------------------------------------


def sse_format(event: Event) -> str:
    event_id, kind, data = event
    # json.dumps escapes newlines, so the data is always one `data:` line.
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _sse_body(events: Iterator[Event | None]) -> Iterator[str]:
    yield "retry: 2000\n\n"  # sent at once, so the client sees the headers without waiting
    for event in events:
        yield ": keepalive\n\n" if event is None else sse_format(event)


@ns.route("/<string:execution_id>/events")
@ns.param("execution_id", "the execution's UUID")
class ExecutionEvents(Resource):
    @ns.doc(
        "follow_execution_events",
        params={
            "Last-Event-ID": {"in": "header", "type": "string",
                              "description": "resume after this event id (sent by EventSource on reconnect)"},
            "last_event_id": {"in": "query", "type": "string",
                              "description": "the same, for clients that cannot set headers"},
        },
    )
    @ns.produces(["text/event-stream"])
    @ns.response(200, "text/event-stream of status, output, result and end events; ends after end")
    @ns.response(204, "The client has already received the end of the stream")
    @ns.response(400, "Not a UUID, or an invalid Last-Event-ID", schemas.error)
    @ns.response(404, "No such execution", schemas.error)
    @ns.response(429, "TOO_MANY_STREAMS: this user (or address) follows as many executions as allowed",
                 schemas.error)
    @ns.response(503, "STREAMS_BUSY: this API process follows as many executions as it can", schemas.error)
    def get(self, execution_id: str) -> Any:
        """Follow an execution: what was missed since Last-Event-ID, then the live events.

        Each event carries `id:`, `event:` (status | output | result | end) and one JSON `data:`
        line. The joined `output` texts of a stream equal the stored stdout/stderr. A
        `status` RUNNING with attempt > 1 means the run started over on another worker: drop
        the output shown so far. Comment lines are sent every 15 s to keep the connection open.
        """
        eid, row = _lookup(execution_id)
        after = _resume_point()
        bus = tails()
        if nothing_left(bus, str(eid), row, after):
            return Response(status=204)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        if request.method == "HEAD":  # the headers a GET would have; nobody follows
            return Response(mimetype="text/event-stream", headers=headers)
        hold_slot(owner_id())  # given back when the server closes the response, however it ends
        return Response(_sse_body(follow(bus, str(eid), row_loader(rt(), eid, owner_id()), row, after)),
                        mimetype="text/event-stream", headers=headers)


# ---- WebSocket -------------------------------------------------------------------------------


def _error_message(code: str, message: str) -> dict[str, Any]:
    return {"id": None, "event": "error", "data": {"error": {"code": code, "message": message}}}


class _Session:
    """One WebSocket follower: the main thread sends events; a second thread takes stdin."""

    def __init__(self, ws: Any, bus: EventBus, r: Runtime, execution_id: uuid.UUID, row: dict[str, Any],
                 may_send_input: bool = True) -> None:
        self.ws, self.bus, self.r, self.row = ws, bus, r, row
        self.may_send_input = may_send_input  # a viewer follows a run but may not type into it
        self.eid = str(execution_id)
        self.status = row["status"]
        self.closed = threading.Event()
        self._send_lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            self.ws.send(json.dumps(message, separators=(",", ":")))

    def receive_loop(self) -> None:
        receive_until_closed(self.ws, self.closed, self.handle, "execution")

    def handle(self, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = None
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind not in ("stdin", "stdin_eof"):
            self.send(_error_message("BAD_MESSAGE", 'send {"type": "stdin", "data": "..."} or {"type": "stdin_eof"}'))
            return
        if not self.row.get("interactive"):
            self.send(_error_message("NOT_INTERACTIVE", 'this run was not submitted with "interactive": true'))
            return
        if not self.may_send_input:
            self.send(_error_message("READ_ONLY_MEMBER", "a viewer may follow this session's runs, not type into them"))
            return
        if self.status in TERMINAL:
            self.send(_error_message("EXECUTION_FINISHED", "the run has ended; input is no longer read"))
            return
        try:
            if kind == "stdin":
                data = msg.get("data") if isinstance(msg, dict) else None
                if not isinstance(data, str):
                    self.send(_error_message("BAD_MESSAGE", "'data' must be a string"))
                    return
                self.r.stdin.send(self.eid, data)
            else:
                self.r.stdin.close(self.eid)
        except ApiError as exc:
            self.send({"id": None, "event": "error", "data": exc.body()})
        except redis.RedisError:
            self.send(_error_message("REDIS_UNAVAILABLE", "the broker (Redis) is unavailable; try again"))

    def run(self, after: str | None, owner: uuid.UUID | None) -> None:
        receiver = threading.Thread(target=self.receive_loop, name=f"ws-stdin-{self.eid[:8]}", daemon=True)
        receiver.start()
        try:
            if not nothing_left(self.bus, self.eid, self.row, after):
                load_row = row_loader(self.r, uuid.UUID(self.eid), owner)
                for event in follow(self.bus, self.eid, load_row, self.row, after):
                    if self.closed.is_set():
                        break
                    if event is None:
                        continue  # simple-websocket pings the client itself
                    if event[1] == "status":
                        self.status = event[2].get("status", self.status)
                    self.send({"id": event[0], "event": event[1], "data": event[2]})
        except OSError:
            # The client stopped reading: the send timeout (SO_SNDTIMEO) ran out. The connection
            # is dropped; the slot is given back when the request ends.
            log.info("websocket client stopped reading; closing", extra={"execution_id": self.eid})
        finally:
            self.closed.set()
            receiver.join(2)


def _may_send_input(row: dict[str, Any]) -> bool:
    """Whether the caller may type into this run: whoever may run the session's code (the owner,
    an editor); a viewer only follows it."""
    if not row.get("interactive"):
        return True  # nothing to type into: refused as NOT_INTERACTIVE
    role = role_of(rt().db, uuid.UUID(str(row["session_id"])), owner_id())
    return role is not None and grants(role, Need.RUN)


def register_websocket(app: Flask) -> None:
    """The WebSocket route, and the process's shared tails that SSE and WebSocket followers
    read through. The route is a plain Flask route (Flask-RESTX has no WebSockets); the
    execution is looked up before the handshake so an unknown one is a 404 JSON error."""
    app.extensions["livecode.tails"] = SharedTails(app.extensions["livecode.runtime"].events)
    bp = Blueprint("execution_ws", __name__)
    sock = Sock()
    app.config.setdefault("SOCK_SERVER_OPTIONS", {
        "ping_interval": HEARTBEAT_S,
        "max_message_size": app.config.get("MAX_CONTENT_LENGTH") or 2 * 1024 * 1024,
    })

    settings = app.extensions["livecode.runtime"].settings
    app.extensions["livecode.stream_slots"] = StreamSlots.for_server(settings.api_threads, settings.streams_per_user,
                                                                     settings.streams_per_address)
    app.wsgi_app = ReleaseStreamSlots(app.wsgi_app)  # type: ignore[method-assign]

    @bp.before_request
    def _check() -> None:
        if is_preflight_or_refused():
            return
        execution_id = (request.view_args or {}).get("execution_id", "")
        g.stream_execution = _lookup(execution_id)
        g.stream_after = _resume_point()
        hold_slot(owner_id())  # before the handshake, so a refusal is a plain 503/429

    @app.errorhandler(RemoteProtocolError)
    def _bad_handshake(exc: RemoteProtocolError) -> Response:
        # An Upgrade request wsproto refuses (no key, wrong version): the client's mistake, a 4xx.
        status = getattr(exc.event_hint, "status_code", None) or 400
        return json_error_response(ApiError(
            f"not a valid WebSocket handshake: {exc}", code="BAD_WEBSOCKET_HANDSHAKE", status=status,
            headers={"Sec-WebSocket-Version": "13"} if status == 426 else None,
        ))

    @sock.route("/api/v1/executions/<string:execution_id>/ws", bp=bp)
    def _ws(ws: Any, execution_id: str) -> None:
        eid, row = g.stream_execution
        try:
            _Session(ws, tails(), rt(), eid, row, _may_send_input(row)).run(g.stream_after, owner_id())
        finally:
            close_websocket(ws)

    app.register_blueprint(bp)
