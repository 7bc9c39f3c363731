"""WS /piston/api/v2/connect: Piston's interactive protocol over LiveCode's interactive runs.

The client sends `init` (the body of an execute) within a second, then `data` (stdin) and
`signal` messages; the server sends `runtime`, `stage` (compile, run), `data` (stdout/stderr)
and `exit` per stage, then closes with 4999. Piston's close codes: 4000 already initialized,
4001 no init in time, 4002 an error was sent just before, 4003 not initialized yet, 4004 not
stdin, 4005 not a signal. The run is an interactive execution (stdin stays open until the
client's input ends or the time limit), followed through the same follower as
/api/v1/executions/{id}/ws; input goes through the runtime's stdin channels.

A `signal` goes through LiveCode's cancel (services/cancel.py): the worker that runs the program
delivers it in the sandbox (before the program starts, the run is cancelled), and the `exit`
message names the signal that ended it. A valid Piston signal outside LiveCode's list
(cancel.SIGNALS) is answered with an `error` message and not sent (the connection stays open);
see docs/compat.md.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

import redis
from flask import Blueprint, Flask
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from ...errors import ApiError, Conflict, NotFound
from ...models import ExecutionStatus
from ...runtime import Runtime
from ...services import cancel
from ...services import executions as executions_svc
from ...services import piston as svc
from ...streaming.follower import follow
from ..context import enqueue, owner_id, request_id, rt
from ..errors import to_response
from ..ratelimit import charge_executions
from ..stream import row_loader, tails
from ..stream_slots import hold_slot
from ..websockets import close_websocket, is_preflight_or_refused, receive_until_closed

log = logging.getLogger(__name__)
INIT_TIMEOUT_S = 1.0  # Piston's: a connection with no init after a second is closed (4001)


class Closed(Exception):
    """The connection was closed with a Piston close code."""


class _Connection:
    def __init__(self, ws: Any, r: Runtime) -> None:
        self.ws, self.r = ws, r
        self.eid: str | None = None
        self.owner: uuid.UUID | None = None  # the caller, for the receiving thread (no request context)
        self.session_id: uuid.UUID | None = None
        self.closed = threading.Event()
        self.finished = False
        self._send_lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            self.ws.send(json.dumps(message, separators=(",", ":")))

    def close(self, code: int, reason: str) -> None:
        if not self.closed.is_set():
            self.closed.set()
            try:
                self.ws.close(reason=code, message=reason)
            except ConnectionClosed:
                pass

    def error(self, message: str) -> None:
        """Piston's way to report an error: the message, then close 4002."""
        try:
            self.send({"type": "error", "message": message})
        except ConnectionClosed:
            pass
        self.close(4002, "Notified Error")

    # ---- before init ---------------------------------------------------------------------

    def wait_for_init(self) -> dict[str, Any] | None:
        deadline = time.monotonic() + INIT_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            raw = self.ws.receive(timeout=max(remaining, 0.001)) if remaining > 0 else None
            if raw is None:
                self.close(4001, "Initialization Timeout")
                return None
            msg = self.parse(raw)
            if msg is None:
                return None
            kind = msg.get("type")
            if kind == "init":
                return msg
            if kind in ("data", "signal"):
                self.close(4003, "Not yet initialized")
                return None
            # Piston ignores a message of any other type.

    def parse(self, raw: str | bytes) -> dict[str, Any] | None:
        try:
            msg = json.loads(raw)
        except (ValueError, RecursionError):
            msg = None
        if not isinstance(msg, dict):
            self.error("a message must be a JSON object with a type")
            return None
        return msg

    # ---- after init ----------------------------------------------------------------------

    def receive_loop(self) -> None:
        receive_until_closed(self.ws, self.closed, self.handle, "piston")

    def handle(self, raw: str | bytes) -> None:
        msg = self.parse(raw)
        if msg is None or self.eid is None:
            return
        kind = msg.get("type")
        if kind == "init":
            self.close(4000, "Already Initialized")
        elif kind == "data":
            if msg.get("stream") != "stdin":
                self.close(4004, "Can only write to stdin")
            elif not isinstance(msg.get("data"), str):
                self.error("data must be a string")
            elif not self.finished:
                self.to_program(lambda: self.r.stdin.send(self.eid or "", msg["data"]))
        elif kind == "signal":
            name = msg.get("signal")
            if name not in svc.SIGNAL_NAMES.values():
                self.close(4005, "Invalid signal")
            elif name not in cancel.SIGNALS:
                self.send({"type": "error", "message": f"{name} was not sent: this server sends only "
                           f"{', '.join(cancel.SIGNALS)}"})
            elif not self.finished:
                self.to_program(lambda: self.signal(name))

    def signal(self, name: str) -> None:
        try:
            cancel.cancel_execution(self.r.db, self.r.stdin, self.r.events, uuid.UUID(self.eid or ""), self.owner,
                                    name)
        except Conflict:
            pass  # it has just ended: as Piston's kill of an ended process, nothing happens

    def to_program(self, act: Any) -> None:
        try:
            act()
        except ApiError as exc:
            self.error(exc.message)
        except redis.RedisError:
            self.error("the broker (Redis) is unavailable; try again")

    # ---- the run -------------------------------------------------------------------------

    def run(self) -> None:
        msg = self.wait_for_init()
        if msg is None:
            return
        try:
            job = svc.parse_job(msg, svc.runtimes(self.r.languages), self.r.settings)
            charge_executions(1)
            self.session_id, eid = svc.start_run(
                self.r.db,
                enqueue(),
                self.r.settings,
                self.r.events,
                job,
                owner_id=owner_id(),
                request_id=request_id(),
                languages=self.r.languages,
                interactive=True,
            )
            row = executions_svc.get_execution(self.r.db, eid, owner_id())
        except svc.PistonError as exc:
            self.error(exc.message)
            return
        except Exception as exc:  # noqa: BLE001 - LiveCode's mapping: 4xx messages, 503s, logged bugs
            self.error(to_response(exc)[0]["message"])  # under /piston: Piston's shape
            return
        self.eid, self.owner = str(eid), owner_id()
        self.send({"type": "runtime", "language": job.runtime.language, "version": job.runtime.version})
        receiver = threading.Thread(target=self.receive_loop, name=f"piston-ws-{self.eid[:8]}", daemon=True)
        receiver.start()
        try:
            self.follow(job.runtime, eid, row)
        finally:
            self.closed.set()
            receiver.join(2)

    def follow(self, runtime: svc.Runtime, eid: uuid.UUID, row: dict[str, Any]) -> None:
        stage: str | None = None
        # A heartbeat each second: a connection closed by the client (or with 4000) stops here soon.
        for event in follow(tails(), str(eid), row_loader(self.r, eid, owner_id()), row, None, heartbeat_s=1.0):
            if self.closed.is_set():
                return
            if event is None:
                continue
            _id, kind, data = event
            if kind == "status" and data.get("status") == ExecutionStatus.RUNNING and stage is None:
                stage = "compile" if runtime.compiled else "run"
                self.send({"type": "stage", "stage": stage})
            elif kind == "stage" and data.get("stage") == "run" and stage != "run":
                stage = self.next_stage(stage)  # the compiler is done: announced as the run starts
            elif kind == "output":
                stream = data.get("stream")
                if stream == "compile":
                    stage = stage or "compile"
                    self.send({"type": "data", "stream": "stderr", "data": data.get("text", "")})
                    continue
                if stage != "run":  # the first output of the program: the compile stage is over
                    stage = self.next_stage(stage)
                self.send({"type": "data", "stream": stream, "data": data.get("text", "")})
            elif kind == "result":
                self.finished = True
                self.exits(runtime, stage, data)
            elif kind == "end":
                self.close(4999, "Job Completed")
                return

    def next_stage(self, stage: str | None) -> str:
        if stage == "compile":
            self.send({"type": "exit", "stage": "compile", "code": 0, "signal": None})
        self.send({"type": "stage", "stage": "run"})
        return "run"

    def exits(self, runtime: svc.Runtime, stage: str | None, row: dict[str, Any]) -> None:
        code, signal, _message, _status = svc.ending(row)
        if runtime.compiled and row.get("reason") == "COMPILE_ERROR":
            if stage is None:
                self.send({"type": "stage", "stage": "compile"})
            self.send({"type": "exit", "stage": "compile", "code": code, "signal": signal})
            return
        if stage != "run":
            self.next_stage(stage)
        self.send({"type": "exit", "stage": "run", "code": code, "signal": signal})

    def forget(self) -> None:
        if self.session_id is None:
            return
        if not self.finished and self.eid is not None:
            try:  # a program still waiting for input ends now rather than at its time limit
                self.r.stdin.close(self.eid)
            except (ApiError, redis.RedisError):
                pass
        svc.forget_run(self.r.db, self.session_id, owner_id())


def register_connect(app: Flask) -> None:
    """The route is a plain Flask route (Flask-RESTX has no WebSockets); credentials and the
    caller's stream slot are checked before the handshake, so a refusal is a plain HTTP answer
    in Piston's shape."""
    bp = Blueprint("piston_connect", __name__)
    sock = Sock()

    @bp.before_request
    def _check() -> None:
        if is_preflight_or_refused():
            return
        hold_slot(owner_id())  # before the handshake, so a refusal is a plain 503/429

    @sock.route("/piston/api/v2/connect", bp=bp)
    def _connect(ws: Any) -> None:
        conn = _Connection(ws, rt())
        try:
            conn.run()
        except ConnectionClosed:
            pass
        except (NotFound, redis.RedisError, OSError):
            log.info("piston websocket ended early", exc_info=True)
        except Exception as exc:  # noqa: BLE001 - after the handshake there is no HTTP answer to give
            to_response(exc)  # logged with an error id when it is a bug
            conn.close(1011, "Internal Error")
        finally:
            try:
                conn.forget()
            finally:
                close_websocket(ws)

    app.register_blueprint(bp)
