"""The blocking execute (`?wait=true`): its query parameters and the per-process cap on waiters.

Under gunicorn's gthread worker a waiting request holds a server thread, so the number of
requests one API process lets wait is capped (LIVECODE_MAX_WAITS); past it a request is not
refused, it answers 202 at once as without `wait`, and the client polls or follows the events.
"""

from __future__ import annotations

import threading

from flask import current_app, request

from ..config import Settings
from ..errors import ValidationError

WAIT_PARAMS = {
    "wait": {
        "in": "query",
        "type": "boolean",
        "default": False,
        "description": "true: answer when the run has finished (200, the body of GET "
        "/api/v1/executions/{id}), or 202 as usual when `timeout_ms` runs out first (or when this "
        "API process already has its maximum of waiting requests).",
    },
    "timeout_ms": {
        "in": "query",
        "type": "integer",
        "minimum": 0,
        "description": "with wait=true: the longest wait in milliseconds (default and maximum: "
        "LIVECODE_MAX_WAIT_MS, 30000; a longer one is cut to it).",
    },
}


def wait_seconds(settings: Settings) -> float | None:
    """How long this request asks to wait; None: not at all. 400 for a malformed parameter."""
    raw_wait = request.args.get("wait", "").strip().lower()
    if raw_wait not in ("", "true", "false", "1", "0"):
        raise ValidationError("query parameter 'wait' must be true or false", code="INVALID_QUERY")
    raw = request.args.get("timeout_ms")
    timeout_ms = settings.max_wait_ms
    if raw is not None and raw != "":
        try:
            timeout_ms = int(raw)
        except ValueError:
            raise ValidationError("query parameter 'timeout_ms' must be an integer", code="INVALID_QUERY") from None
        if timeout_ms < 0:
            raise ValidationError("query parameter 'timeout_ms' must be 0 or more", code="INVALID_QUERY")
    if raw_wait not in ("true", "1") or timeout_ms == 0:
        return None
    return min(timeout_ms, settings.max_wait_ms) / 1000


class WaitSlots:
    def __init__(self, limit: int | None) -> None:
        self.limit = limit  # None: no cap (the app runs outside `livecode api|serve`)
        self.active = 0
        self._lock = threading.Lock()

    @classmethod
    def for_server(cls, settings: Settings) -> WaitSlots:
        if settings.max_waits > 0:
            return cls(settings.max_waits)
        threads = settings.api_threads
        if threads is None:
            return cls(None)
        return cls(max(1, threads - max(4, threads // 4)))  # leave a quarter for other requests

    def try_acquire(self) -> bool:
        with self._lock:
            if self.limit is not None and self.active >= self.limit:
                return False
            self.active += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.active -= 1


_create_lock = threading.Lock()


def wait_slots(settings: Settings) -> WaitSlots:
    ext = current_app.extensions
    slots = ext.get("livecode.wait_slots")
    if slots is None:
        with _create_lock:
            slots = ext.get("livecode.wait_slots") or WaitSlots.for_server(settings)
            ext["livecode.wait_slots"] = slots
    return slots  # type: ignore[no-any-return]
