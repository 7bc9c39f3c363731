"""The blocking execute (`?wait=true`): its query parameters, the per-process cap on waiters, and
the wait itself.

Under LiveCode's own server (web/front_worker.py, `livecode api|serve` without TLS) a waiting
request is parked: it holds no thread while it waits (web/parking.py), only its connection, so
one process lets three quarters of its connections wait (LIVECODE_CONNECTIONS_PER_PROCESS: 750
of 1000). Elsewhere (a TLS front, another WSGI server) it waits in its thread, and three quarters
of the threads may (LIVECODE_API_THREADS). LIVECODE_MAX_WAITS replaces the first cap, and the
second where it is lower. Past its cap a request is not refused: it answers as without `wait`
(202; Judge0: 201 with the token; Piston, which always waits: 503), and the client polls or
follows the events.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, g, request
from flask_restx.representations import output_json

from ..config import Settings
from ..errors import ValidationError
from ..services.waiting import EndWait
from ..web.parking import PLACEHOLDER, Parked
from .errors import to_response

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
    """`limit`: requests waiting at once (parked or not; None: no cap, the app runs outside
    `livecode api|serve`); `thread_limit`: of those, how many may hold a thread."""

    def __init__(self, limit: int | None, thread_limit: int | None = None) -> None:
        self.limit = limit
        self.thread_limit = limit if thread_limit is None else thread_limit
        self.active = 0
        self.in_threads = 0
        self._lock = threading.Lock()

    @classmethod
    def for_server(cls, settings: Settings) -> WaitSlots:
        threads = settings.api_threads
        if threads is None:
            return cls(settings.max_waits or None)
        connections = settings.connections_per_process
        # A quarter of the threads, and of the connections, left for other requests.
        in_threads = max(1, threads - max(4, threads // 4))
        if settings.max_waits > 0:
            return cls(settings.max_waits, min(settings.max_waits, in_threads))
        return cls(max(1, connections - max(4, connections // 4)), in_threads)

    def try_acquire(self, parks: bool = False) -> bool:
        """A slot for a wait that holds a thread (`parks` False) or only its connection."""
        with self._lock:
            if self.limit is not None and self.active >= self.limit:
                return False
            if not parks and self.thread_limit is not None and self.in_threads >= self.thread_limit:
                return False
            self.active += 1
            self.in_threads += not parks
            return True

    def release(self, parks: bool = False) -> None:
        with self._lock:
            self.active -= 1
            self.in_threads -= not parks


_create_lock = threading.Lock()


def wait_slots(settings: Settings) -> WaitSlots:
    ext = current_app.extensions
    slots = ext.get("livecode.wait_slots")
    if slots is None:
        with _create_lock:
            slots = ext.get("livecode.wait_slots") or WaitSlots.for_server(settings)
            ext["livecode.wait_slots"] = slots
    return slots  # type: ignore[no-any-return]


def execution_answer(row: dict[str, Any] | None) -> Any:
    """A finished execution as GET /api/v1/executions/{id} answers it (200); at the deadline, the
    202 the request made."""
    return PLACEHOLDER if row is None else (row, 200)


def _encoded(answer: Any) -> Any:
    """A route's answer as the server writes it: (status, body bytes, headers). `answer`: the
    PLACEHOLDER, a Response, or (data, status[, headers]) as a Flask-RESTX resource returns it."""
    if answer is PLACEHOLDER:
        return answer
    if isinstance(answer, Response):
        return answer.status_code, answer.get_data(), {}
    data, status, *headers = answer
    return status, output_json(data, status).get_data(), (headers[0] if headers else {})


class ParkedWait(Parked):
    """A wait for an execution's end, parked by the server (web/parking.py): the same steps as
    wait_for_end (services/waiting.EndWait), each run on a server thread in a context of the
    request (its path, query and app: what `answer` and the error shapes read). `answer(row)`
    makes the final answer from the finished execution, or from None at the deadline (as
    `_encoded` takes it);
    `placeholder_status`: the status of the answer the route returns (held until then);
    `after`: run once the answer is written, with the slot given back."""

    def __init__(self, wait: EndWait, slots: WaitSlots, placeholder_status: int = 202,
                 answer: Callable[[dict[str, Any] | None], Any] = execution_answer,
                 after: Callable[[], None] | None = None) -> None:
        self.wait, self.slots, self.answer, self.after = wait, slots, answer, after
        self.deadline = wait.deadline
        self.placeholder_status = placeholder_status
        self.app = current_app._get_current_object()  # type: ignore[attr-defined]
        self.environ = request.environ
        self.request_id = g.get("request_id", "")

    def arm(self, wake: Callable[[], None]) -> None:
        event = self.wait.event
        event.on_set = wake
        # Set already: it ended (or the listener resubscribed) before this. Not watched from before
        # the run was queued (an idempotent replay): it may have ended unheard; a first step reads.
        if event.is_set() or not self.wait.watched:
            wake()

    def step(self, woke: bool) -> Any:
        with self.app.request_context(self.environ):
            g.request_id = self.request_id  # in the step's log lines, as in the request's
            try:
                done, row = self.wait.check(woke)
                return _encoded(self.answer(row)) if done else None
            except Exception as exc:  # noqa: BLE001 - answered as the route would have been (e.g. 503)
                return _encoded(to_response(exc))

    def release(self) -> None:
        after, self.after = self.after, None
        try:
            self.wait.close()
        finally:
            self.slots.release(parks=True)
            # Kept no longer than the answer (the server's deadline heap may hold this a while).
            self.environ, self.answer = {}, execution_answer
            if after is not None:
                after()
