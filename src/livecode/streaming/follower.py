"""The follower: an execution's events after a resume point, then the live tail, until "end".

Shared by the SSE and WebSocket transports (api/stream.py). The database row is the truth: when
the stream has expired, or the run ended without its final events (a lost worker), status/result/
end are made from the row, with ids "final-<part>" so that a reconnect resumes among them too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import redis

from ..errors import ValidationError
from ..models import TERMINAL_STATUSES
from .bus import Event, EventBus, parse_id

log = logging.getLogger(__name__)

# Reads the execution again, as GET returns it; None once it is gone (deleted with its session).
RowLoader = Callable[[], "dict[str, Any] | None"]

TERMINAL = TERMINAL_STATUSES
FINAL_PARTS = ("compile", "stdout", "stderr", "status", "result", "end")  # order of made-up events
TICK_MS = 1000  # longest single wait on the bus (below the Redis client's 5 s socket timeout)
HEARTBEAT_S = 15.0
RECHECK_S = 5.0  # how often a follower looks at the row for a run that ended without "end"
END_GRACE_S = 3.0  # the worker saves the row, then publishes the final events: wait for them
STALL_S = 30.0  # a follower still behind the bus's last event gives up on the bus after this


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


def follow(bus: EventBus, execution_id: str, load_row: RowLoader, row: dict[str, Any],
           after: str | None, *, heartbeat_s: float = HEARTBEAT_S) -> Iterator[Event | None]:
    """The execution's events after `after`, then the live tail, until "end". Yields None when
    `heartbeat_s` passed without an event. Holds at most one bus read (READ_COUNT events).
    `load_row` reads the execution again (None once it is gone) when the bus cannot tell."""
    eid = execution_id
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
            fresh = load_row()
            if fresh is None:
                return
            yield from final_events(fresh, None, with_output=not streamed)
            return
        if now - last_sent >= heartbeat_s:
            last_sent = now
            yield None
        if ended_at is None and now >= next_check:
            next_check = now + RECHECK_S
            try:
                fresh = load_row()
            except Exception:  # noqa: BLE001 - a database hiccup must not cut the stream
                log.debug("row re-check failed", exc_info=True)
                continue
            if fresh is None:
                return  # deleted with its session
            row = fresh
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
