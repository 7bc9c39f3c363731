"""Wait for an execution to end without polling the database: the worker's final events wake
the waiter (events.EventBus.watch_finished) and, for a small result, carry the finished row, so
the waiter answers without reading it; otherwise it reads the row once. No Flask."""

from __future__ import annotations

import time
import uuid
from typing import Any

from ..db import Database
from ..models import TERMINAL_STATUSES
from ..streaming.bus import EventBus, Finish
from .executions import get_execution


class EndWait:
    """One request's wait for an execution's end, in steps: `check(woke)` after each wake-up of
    `event` (woke=True) or at `deadline` (woke=False). A thread can wait on the event between
    steps (wait_for_end), or a server can park the request and run each step on one of its
    threads when the event is set or the deadline passes (web/parking.py): the same reads either
    way. `close()` stops listening; call it once, whatever the outcome."""

    def __init__(self, db: Database, bus: EventBus, execution_id: uuid.UUID, owner_id: uuid.UUID | None,
                 timeout_s: float, *, encoding: str = "text", watch: Finish | None = None) -> None:
        self.db, self.bus, self.execution_id, self.owner_id = db, bus, execution_id, owner_id
        self.encoding = encoding
        self.deadline = time.monotonic() + timeout_s
        self.watched = watch is not None
        self.event = watch if watch is not None else bus.watch_finished(str(execution_id))

    def first(self) -> dict[str, Any] | None:
        """Before the first wait: the row when the run ended before the event was taken (None:
        wait). Without `watch` the end may have passed unheard, so the row is read once."""
        if self.watched:
            return None
        row = get_execution(self.db, self.execution_id, self.owner_id, self.encoding)
        return row if row["status"] in TERMINAL_STATUSES else None

    def check(self, woke: bool) -> tuple[bool, dict[str, Any] | None]:
        """(True, row) once it is terminal; (True, None) when the deadline came first (woke=False
        and still not terminal); (False, None): wait again (a wake-up that was not the end)."""
        event = self.event
        event.clear()
        carried, event.row = event.row, None
        if woke and carried is not None and self.encoding == "text" and carried.get("status") in TERMINAL_STATUSES:
            return True, carried
        row = get_execution(self.db, self.execution_id, self.owner_id, self.encoding)
        if row["status"] in TERMINAL_STATUSES:
            return True, row
        return (not woke), None

    def close(self) -> None:
        self.event.on_set = None
        self.bus.unwatch_finished(str(self.execution_id), self.event)


def wait_for_end(
    db: Database,
    bus: EventBus,
    execution_id: uuid.UUID,
    owner_id: uuid.UUID | None,
    timeout_s: float,
    *,
    encoding: str = "text",
    watch: Finish | None = None,
) -> dict[str, Any] | None:
    """The execution as GET /api/v1/executions/{id} returns it once it is terminal, or None when
    `timeout_s` runs out first. `watch`: a bus.watch_finished() taken before the run was queued
    (then it cannot have ended unheard, and the first read is skipped). The row is read once per
    wake-up (the final notification, or a resubscription after Redis was lost) and once at the
    deadline, never in a loop; the database connection is not held while waiting. A final
    notification that carries the finished row (as GET returns it in the text encoding) is
    answered from it: the row the worker's final UPDATE returned, with no read at all. Access
    was checked before the wait (the caller submitted the run, or the first read below)."""
    return wait_for(EndWait(db, bus, execution_id, owner_id, timeout_s, encoding=encoding, watch=watch))


def wait_for(wait: EndWait) -> dict[str, Any] | None:
    """`wait` in this thread: the terminal row, or None at its deadline. Closes it."""
    try:
        row = wait.first()
        if row is not None:
            return row
        while True:
            remaining = wait.deadline - time.monotonic()
            woke = wait.event.wait(remaining) if remaining > 0 else False
            done, row = wait.check(woke)
            if done:
                return row
    finally:
        wait.close()
