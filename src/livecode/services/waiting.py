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
    eid = str(execution_id)
    deadline = time.monotonic() + timeout_s
    event = watch if watch is not None else bus.watch_finished(eid)
    try:
        if watch is None:  # it may have ended before we listened
            row = get_execution(db, execution_id, owner_id, encoding)
            if row["status"] in TERMINAL_STATUSES:
                return row
        while True:
            remaining = deadline - time.monotonic()
            woke = event.wait(remaining) if remaining > 0 else False
            event.clear()
            carried, event.row = event.row, None
            if woke and carried is not None and encoding == "text" and carried.get("status") in TERMINAL_STATUSES:
                return carried
            row = get_execution(db, execution_id, owner_id, encoding)
            if row["status"] in TERMINAL_STATUSES:
                return row
            if not woke:
                return None
    finally:
        bus.unwatch_finished(eid, event)
