"""GET /api/v1/code-sessions/{id}/ws: co-edit a session live, speaking the Yjs sync protocol
(y-protocols sync and awareness, binary messages) over a WebSocket. See docs/collaboration.md.

Authentication is the rest of the API's: a bearer token or API key header, or `?access_token=`
(browsers cannot set headers on a WebSocket). The session is looked up with the one membership
rule before the handshake, so a stranger gets the same 404 JSON error as everywhere; the owner and
editors may edit, viewers receive the document and presence but their updates are refused.
The rooms themselves (documents, relaying, persistence) are services/collab.py.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

from flask import Blueprint, Flask, current_app, g, request
from simple_websocket import ConnectionClosed

from ..services import collab_doc as yd
from ..services.access import Need, grants, require
from ..services.collab import CollabRooms, DocumentTooLarge
from .body import parse_uuid
from .context import owner_id, rt
from .stream_slots import hold_slot
from .websockets import close_websocket, is_preflight_or_refused

log = logging.getLogger(__name__)
RECEIVE_TIMEOUT_S = 5.0
CLOSE_TOO_LARGE = 4413  # private-use close codes: 4000 + the HTTP status
CLOSE_BAD_MESSAGE = 4400


def collab_rooms() -> CollabRooms:
    return current_app.extensions["livecode.collab"]  # type: ignore[no-any-return]


class WsPeer:
    """A room's view of one WebSocket: sends are serialized (the room and this connection's
    thread both send)."""

    def __init__(self, ws: Any, can_edit: bool, user_id: uuid.UUID | None) -> None:
        self.ws, self.can_edit, self.user_id = ws, can_edit, user_id
        self._lock = threading.Lock()

    def send(self, message: bytes) -> None:
        with self._lock:
            self.ws.send(message)

    def close(self, code: int, reason: str) -> None:
        with self._lock:
            try:
                self.ws.close(reason=code, message=reason)
            except ConnectionClosed:
                pass


def _error(code: str, message: str) -> bytes:
    return yd.livecode_message(json.dumps({"type": "error", "code": code, "message": message}))


def _serve(ws: Any, rooms: CollabRooms, session_id: uuid.UUID, can_edit: bool, user_id: uuid.UUID | None) -> None:
    peer = WsPeer(ws, can_edit, user_id)
    room = rooms.join(session_id, peer)
    try:
        while not room.closed:
            raw = ws.receive(timeout=RECEIVE_TIMEOUT_S)
            if raw is None:
                continue
            if isinstance(raw, str):
                raw = raw.encode()
            try:
                rooms.receive(room, peer, raw)
            except DocumentTooLarge as exc:
                peer.send(_error(exc.code, exc.message))
                peer.close(CLOSE_TOO_LARGE, exc.code)
                return
            except (ValueError, IndexError, KeyError) as exc:
                peer.send(_error("BAD_MESSAGE", f"not a y-protocols message: {str(exc)[:100]}"))
                peer.close(CLOSE_BAD_MESSAGE, "BAD_MESSAGE")
                return
    except ConnectionClosed:
        pass
    finally:
        rooms.leave(room, peer)


def register_collab(app: Flask) -> None:
    """The co-editing WebSocket route (a plain Flask route: Flask-RESTX has no WebSockets) and
    this process's rooms."""
    from flask_sock import Sock

    r = app.extensions["livecode.runtime"]
    app.extensions["livecode.collab"] = CollabRooms(r.db, r.collab_log, r.settings)
    bp = Blueprint("collab_ws", __name__)
    sock = Sock()

    @bp.before_request
    def _check() -> None:
        if is_preflight_or_refused():
            return
        sid = parse_uuid((request.view_args or {}).get("session_id", ""), "session_id")
        role = require(rt().db, sid, owner_id(), Need.VIEW)  # 404 to a stranger
        collab_rooms().check_capacity(sid)
        g.collab = (sid, grants(role, Need.EDIT))
        hold_slot(owner_id())  # a co-editor holds a server thread, as a follower does

    @sock.route("/api/v1/code-sessions/<string:session_id>/ws", bp=bp)
    def _ws(ws: Any, session_id: str) -> None:
        sid, can_edit = g.collab
        try:
            _serve(ws, collab_rooms(), sid, can_edit, owner_id())
        finally:
            close_websocket(ws)

    app.register_blueprint(bp)
