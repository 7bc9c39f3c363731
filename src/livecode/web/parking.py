"""A request that waits without holding a server thread (the blocking execute, `?wait=true`).

Under gunicorn's gthread worker a request holds a thread until its answer is written, so
hundreds of blocking waits would need hundreds of threads. The front (web/front_worker.py)
offers instead to park a request: the application answers it as usual, but with a `Parked`
put in the WSGI environ (`park()`); the front then holds the answer the application returned
(its status, headers and body: the placeholder), gives the thread back, and when the parked
wait is woken (`arm`'s callback, from any thread) or its deadline passes, runs `step` on one of
its threads. A step ends the wait with an answer of its own (status, body, headers added), or
with the placeholder, or asks to wait again. The work the request left for after its answer
(web/after_response.py) runs after the final answer. `release()` is called exactly once, when
the parked request is answered or dropped.

Outside the front (Flask's test client, another WSGI server) `can_park()` is False and the
application waits in its thread as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CAN_PARK_KEY = "livecode.can_park"  # set by the front: this server parks requests
PARKED_KEY = "livecode.parked"  # set by the application: this request's answer waits
ANSWERED_KEY = "livecode.parked_answer"  # set by the front: (final status, time.perf_counter())

PLACEHOLDER = object()  # a step's outcome: answer what the application returned


class Parked:
    """What a parked request waits for. `deadline`: time.monotonic() at which `step(False)` runs
    if nothing woke it first."""

    deadline: float
    placeholder_status: int  # the status of the answer the application returns while parking

    def arm(self, wake: Callable[[], None]) -> None:
        """Call `wake()` (from any thread, cheaply) at each event that may end the wait, and at
        once if one happened already."""
        raise NotImplementedError

    def step(self, woke: bool) -> Any:
        """On a server thread: None (wait again), PLACEHOLDER, or (status, body bytes, headers
        to set). `woke`: False at the deadline (or when the server stops): the last step."""
        raise NotImplementedError

    def release(self) -> None:
        """Give back what the wait holds (its listener, its slot). Called once."""
        raise NotImplementedError


def can_park(environ: dict[str, Any]) -> bool:
    return bool(environ.get(CAN_PARK_KEY))


def park(environ: dict[str, Any], parked: Parked) -> None:
    environ[PARKED_KEY] = parked


def answered(environ: dict[str, Any]) -> tuple[int, float] | None:
    """(status, when) of a parked request's final answer, for what runs after it (metrics)."""
    return environ.get(ANSWERED_KEY)  # type: ignore[no-any-return]
