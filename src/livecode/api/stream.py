"""Follow an execution live: Server-Sent Events and a WebSocket over the execution's event stream.

    GET /api/v1/executions/{id}/events   text/event-stream: `id:` (the bus event id), `event:`
                                         status | output | result | end, `data:` JSON
    GET /api/v1/executions/{id}/ws       WebSocket: the same events as {"id", "event", "data"};
                                         takes {"type": "stdin", "data": "..."} and
                                         {"type": "stdin_eof"} for interactive runs

Both replay from `Last-Event-ID` (header or ?last_event_id=) and then follow the live tail; both
end after "end". The database row is the truth: when the stream has expired, or the run ended
without its final events (a lost worker), status/result/end are made from the row, with ids
"final-<part>" so that a reconnect resumes among them too. See docs/streaming.md.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, g, request
from flask_restx import Namespace, Resource
from flask_sock import Sock
from simple_websocket import ConnectionClosed
from wsproto.utilities import RemoteProtocolError

from ..errors import ApiError, NotFound, ValidationError
from ..events import Event, EventBus, SharedTails, parse_id
from ..runtime import Runtime
from ..services import executions as svc
from ..worker.interactive import close_stdin, send_stdin
from . import schemas
from .body import parse_uuid
from .context import owner_id, rt
from .errors import json_error_response
from .stream_slots import ReleaseStreamSlots, StreamSlots, hold_slot

log = logging.getLogger(__name__)

TERMINAL = frozenset({"COMPLETED", "FAILED", "TIMEOUT"})
FINAL_PARTS = ("compile", "stdout", "stderr", "status", "result", "end")  # order of made-up events
TICK_MS = 1000  # longest single wait on the bus (below the Redis client's 5 s socket timeout)
HEARTBEAT_S = 15.0
RECHECK_S = 5.0  # how often a follower looks at the row for a run that ended without "end"
END_GRACE_S = 3.0  # the worker saves the row, then publishes the final events: wait for them
STALL_S = 30.0  # a follower still behind the bus's last event gives up on the bus after this

ns = Namespace(
    "streaming",
    description="Follow an execution live. Server-Sent Events below; the same events over a "
    "WebSocket at /api/v1/executions/{id}/ws, which also takes interactive stdin: "
    '{"type": "stdin", "data": "line\\n"} and {"type": "stdin_eof"} (runs submitted with '
    '"interactive": true). Events: status {status, attempt?}, output {stream: '
    "stdout|stderr|compile, text}, result {the execution}, end {status}.",
)
schemas.attach(ns)


# ---- the follower, shared by SSE and WebSocket (no Flask objects) ---------------------------


def check_last_event_id(value: str | None) -> str | None:
    """The resume point a client sent, validated; None for "from the start"."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("final-") and value[len("final-"):] in FINAL_PARTS:
        return value
    try:
        parse_id(value)
    except ValueError:
        raise ValidationError(
            "Last-Event-ID must be an event id this stream sent (like 1732871234567-0)",
            code="INVALID_LAST_EVENT_ID",
        ) from None
    return value


def nothing_left(bus: EventBus, execution_id: str, row: dict[str, Any], after: str | None) -> bool:
    """True when a reconnecting client has already seen the end (an EventSource reconnects by
    itself after the server closes; it is answered 204, which makes it stop)."""
    if after is None or row["status"] not in TERMINAL:
        return False
    if after == "final-end":
        return True
    if after.startswith("final-"):
        return False
    try:
        last = bus.read_last(execution_id)
    except redis.RedisError:
        return False
    return last is not None and last[1] == "end" and parse_id(last[0]) <= parse_id(after)


def final_events(row: dict[str, Any], after: str | None, with_output: bool) -> list[Event]:
    """status/result/end (and the output, when none was streamed) made from the stored row."""
    start = FINAL_PARTS.index(after[len("final-"):]) + 1 if after and after.startswith("final-") else 0
    out: list[Event] = []
    for part in FINAL_PARTS[start:]:
        if part in ("compile", "stdout", "stderr"):
            text = row.get("compile_output" if part == "compile" else part)
            if with_output and text:
                out.append((f"final-{part}", "output", {"stream": part, "text": text}))
        elif part == "result":
            out.append(("final-result", "result", row))
        else:
            out.append((f"final-{part}", part, {"status": row["status"]}))
    return out


def _finished_age_s(row: dict[str, Any]) -> float:
    try:
        finished = datetime.fromisoformat(row["finished_at"])
    except (TypeError, ValueError):
        return 0.0
    if finished.tzinfo is None:
        finished = finished.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - finished).total_seconds())


def follow(bus: EventBus, r: Runtime, execution_id: uuid.UUID, owner: uuid.UUID | None, row: dict[str, Any],
           after: str | None, *, heartbeat_s: float = HEARTBEAT_S) -> Iterator[Event | None]:
    """The execution's events after `after`, then the live tail, until "end". Yields None when
    `heartbeat_s` passed without an event. Holds at most one bus read (READ_COUNT events)."""
    eid = str(execution_id)
    if after and after.startswith("final-"):
        if row["status"] in TERMINAL:
            yield from final_events(row, after, with_output=True)
            return
        after = None
    cursor, streamed = after, after is not None
    now = time.monotonic()
    last_sent, last_event, next_check = now, now, now + RECHECK_S
    # When the row is already terminal, the final events are either in the stream or about to be.
    ended_at = now - _finished_age_s(row) if row["status"] in TERMINAL else None
    while True:
        try:
            events = bus.read(eid, cursor, 250 if ended_at is not None else TICK_MS)
        except redis.RedisError:
            log.warning("event bus unavailable; retrying", extra={"execution_id": eid})
            events = []
            time.sleep(1)
        for event in events:
            yield event
            cursor, streamed = event[0], True
            if event[1] == "end":
                return
        now = time.monotonic()
        if events:
            last_sent = last_event = now
            continue
        if (ended_at is not None and now - ended_at >= END_GRACE_S
                and not _behind(bus, eid, cursor, now - last_event)):
            # The stream expired, or the run ended without its final events: the row speaks.
            try:
                row = svc.get_execution(r.db, execution_id, owner)
            except NotFound:
                return
            yield from final_events(row, None, with_output=not streamed)
            return
        if now - last_sent >= heartbeat_s:
            last_sent = now
            yield None
        if ended_at is None and now >= next_check:
            next_check = now + RECHECK_S
            try:
                row = svc.get_execution(r.db, execution_id, owner)
            except NotFound:
                return  # deleted with its session
            except Exception:  # noqa: BLE001 - a database hiccup must not cut the stream
                log.debug("row re-check failed", exc_info=True)
                continue
            if row["status"] in TERMINAL:
                ended_at = now


def _behind(bus: EventBus, execution_id: str, cursor: str | None, idle_s: float) -> bool:
    """True while the bus holds events after `cursor` not read yet (a replay of a big output
    takes a while): then the stream, not the row, must deliver them, or the streamed output
    would stop short of the stored one."""
    if idle_s >= STALL_S:
        return False
    try:
        last = bus.read_last(execution_id)
    except redis.RedisError:
        return False
    return last is not None and (cursor is None or parse_id(last[0]) > parse_id(cursor))


def tails() -> SharedTails:
    return current_app.extensions["livecode.tails"]  # type: ignore[no-any-return]


def _lookup(execution_id: str) -> tuple[uuid.UUID, dict[str, Any]]:
    eid = parse_uuid(execution_id, "execution_id")
    return eid, svc.get_execution(rt().db, eid, owner_id())


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
        return Response(_sse_body(follow(bus, rt(), eid, owner_id(), row, after)),
                        mimetype="text/event-stream", headers=headers)


# ---- WebSocket -------------------------------------------------------------------------------


def _error_message(code: str, message: str) -> dict[str, Any]:
    return {"id": None, "event": "error", "data": {"error": {"code": code, "message": message}}}


class _Session:
    """One WebSocket follower: the main thread sends events; a second thread takes stdin."""

    def __init__(self, ws: Any, bus: EventBus, r: Runtime, execution_id: uuid.UUID, row: dict[str, Any]) -> None:
        self.ws, self.bus, self.r, self.row = ws, bus, r, row
        self.eid = str(execution_id)
        self.status = row["status"]
        self.closed = threading.Event()
        self._send_lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            self.ws.send(json.dumps(message, separators=(",", ":")))

    def receive_loop(self) -> None:
        try:
            while not self.closed.is_set():
                raw = self.ws.receive(timeout=1)
                if raw is not None:
                    self.handle(raw)
        except ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001 - a receive failure ends this connection only
            log.debug("websocket receive failed", exc_info=True)
        finally:
            self.closed.set()

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
        if self.status in TERMINAL:
            self.send(_error_message("EXECUTION_FINISHED", "the run has ended; input is no longer read"))
            return
        try:
            if kind == "stdin":
                data = msg.get("data") if isinstance(msg, dict) else None
                if not isinstance(data, str):
                    self.send(_error_message("BAD_MESSAGE", "'data' must be a string"))
                    return
                send_stdin(self.r, self.eid, data)
            else:
                close_stdin(self.r, self.eid)
        except ApiError as exc:
            self.send({"id": None, "event": "error", "data": exc.body()})
        except redis.RedisError:
            self.send(_error_message("REDIS_UNAVAILABLE", "the broker (Redis) is unavailable; try again"))

    def run(self, after: str | None, owner: uuid.UUID | None) -> None:
        receiver = threading.Thread(target=self.receive_loop, name=f"ws-stdin-{self.eid[:8]}", daemon=True)
        receiver.start()
        try:
            if not nothing_left(self.bus, self.eid, self.row, after):
                for event in follow(self.bus, self.r, uuid.UUID(self.eid), owner, self.row, after):
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
        if request.method == "OPTIONS":
            # A CORS preflight carries no credentials: answered the same (200, Allow) whether or
            # not the execution exists, and without looking it up.
            return
        if request.method != "GET":
            raise ApiError("a WebSocket opens with GET", code="METHOD_NOT_ALLOWED", status=405,
                           headers={"Allow": "GET, OPTIONS"})
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
        _Session(ws, tails(), rt(), eid, row).run(g.stream_after, owner_id())

    app.register_blueprint(bp)
