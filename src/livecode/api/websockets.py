"""What every WebSocket route of the API shares (execution events, Piston's /connect, co-editing):
how a handshake request is screened, and the receive loop of a connection."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from flask import request
from simple_websocket import ConnectionClosed

from ..errors import ApiError

log = logging.getLogger(__name__)

CLOSE_JOIN_S = 2.0  # as long as the front worker lingers on a closed connection


def is_preflight_or_refused() -> bool:
    """In a WebSocket route's before_request: True for a CORS preflight (answered the same whether
    or not the resource exists, without looking it up, since it carries no credentials); a 405
    for any method but GET (a WebSocket opens with GET); False for a GET, which the route checks."""
    if request.method == "OPTIONS":
        return True
    if request.method != "GET":
        raise ApiError("a WebSocket opens with GET", code="METHOD_NOT_ALLOWED", status=405,
                       headers={"Allow": "GET, OPTIONS"})
    return False


def receive_until_closed(ws: Any, closed: threading.Event, handle: Callable[[Any], None], what: str) -> None:
    """Hand each message to `handle` until the client goes or `closed` is set (checked every
    second); a receive failure ends this connection only. Sets `closed` when it returns."""
    try:
        while not closed.is_set():
            raw = ws.receive(timeout=1)
            if raw is not None:
                handle(raw)
    except ConnectionClosed:
        pass
    except Exception:  # noqa: BLE001 - a receive failure ends this connection only
        log.debug("%s websocket receive failed", what, exc_info=True)
    finally:
        closed.set()


def close_websocket(ws: Any) -> None:
    """Close, and let simple-websocket's reader thread close the socket before the server goes
    on with the connection (the front worker's linger works on its own copy of the socket; this
    also ends the reader thread before the request's thread is reused)."""
    try:
        ws.close()
    except ConnectionClosed:
        pass
    ws.thread.join(CLOSE_JOIN_S)
