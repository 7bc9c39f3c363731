"""Stopping a run (a Stop button, POST /api/v1/executions/{id}/cancel, Piston's `signal`).

A QUEUED execution becomes CANCELLED by a conditional UPDATE, so the worker's claim (which
wants QUEUED) finds nothing to do and it never runs. A RUNNING one gets the signal through its
run's channel (streaming/stdin.py): the worker that runs it, on whatever host, delivers it to the
program inside the sandbox, and the final status records what happened (CANCELLED with the
signal, or the program's own exit when it handled the signal). A finished one is a 409.

A cancel that races the run's end changes nothing: the UPDATE wants QUEUED, and a signal queued
for a run that has just ended is never read (its channel expires).
"""

from __future__ import annotations

import functools
import signal
import uuid
from typing import Any

from sqlalchemy import bindparam, select, update

from ..db import Database
from ..errors import Conflict, ValidationError
from ..models import Execution, ExecutionStatus, utcnow
from ..streaming.bus import EventBus
from ..streaming.publisher import publish_finished
from ..streaming.stdin import StdinChannels
from .access import Need, execution_access, execution_not_found, require
from .executions import EXECUTIONS, serialize_execution

# What a user may send: what a terminal's keys and `kill` send to a program, and nothing that
# would only freeze it (SIGSTOP) or look like its own crash (SIGSEGV).
SIGNALS = ("SIGINT", "SIGTERM", "SIGKILL", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGHUP")
DEFAULT_SIGNAL = "SIGKILL"
REASON = "CANCELLED"


def check_signal(name: Any) -> int:
    """The number of an allowed signal name (None: the default, SIGKILL); 400 otherwise."""
    if name is None:
        name = DEFAULT_SIGNAL
    if not isinstance(name, str) or name not in SIGNALS:
        shown = repr(name[:20]) if isinstance(name, str) else type(name).__name__
        raise ValidationError(
            f"unknown signal {shown}; allowed: {', '.join(SIGNALS)}",
            code="INVALID_SIGNAL",
            details={"allowed": list(SIGNALS)},
        )
    return int(signal.Signals[name])


@functools.cache
def _state(by_user: bool) -> Any:
    t = Execution.__table__.c
    q = select(t.status, t.session_id, t.user_id).where(t.id == bindparam("p_eid"))
    return q.where(execution_access(bindparam("p_user", type_=t.user_id.type))) if by_user else q


_CANCEL_QUEUED = (
    update(EXECUTIONS)
    .where(Execution.__table__.c.id == bindparam("p_eid"),
           Execution.__table__.c.status == ExecutionStatus.QUEUED.value)
    .values(status=ExecutionStatus.CANCELLED.value, reason=REASON,
            finished_at=bindparam("p_now", type_=Execution.__table__.c.finished_at.type))
    .returning(*Execution.__table__.columns)
)


def cancel_execution(
    db: Database, channels: StdinChannels, events: EventBus, execution_id: uuid.UUID, user_id: uuid.UUID | None,
    signal_name: Any = None,
) -> tuple[dict[str, Any], bool]:
    """Stop an execution: (the cancelled execution, True) when it was still QUEUED, or (what was
    sent, False) when it runs. 404 for one the caller may not see, 403 for a viewer of its
    session, 409 once it has ended."""
    signum = check_signal(signal_name)
    for _ in range(3):  # QUEUED -> RUNNING (or back) between the read and the update: look again
        with db.read_core(fresh=True) as conn:
            row = conn.execute(_state(user_id is not None), {"p_eid": execution_id, "p_user": user_id}).first()
        if row is None:
            raise execution_not_found(execution_id)
        if user_id is not None and row.user_id != user_id:
            require(db, row.session_id, user_id, Need.RUN)  # a viewer follows runs, never stops them
        if row.status == ExecutionStatus.QUEUED:
            with db.write_one() as conn:
                done = conn.execute(_CANCEL_QUEUED, {"p_eid": execution_id, "p_now": utcnow()}).first()
            if done is None:
                continue
            final = serialize_execution(done)  # type: ignore[arg-type]
            publish_finished(events, str(execution_id), ExecutionStatus.CANCELLED.value, final)
            return final, True
        if row.status == ExecutionStatus.RUNNING:
            channels.signal(str(execution_id), signum)
            return {
                "execution_id": str(execution_id),
                "session_id": str(row.session_id),
                "status": ExecutionStatus.RUNNING.value,
                "signal": signal.Signals(signum).name,
            }, False
        raise Conflict(
            f"execution {execution_id} has already ended ({row.status}); there is nothing to stop",
            code="EXECUTION_FINISHED",
            details={"status": row.status},
        )
    raise Conflict(f"execution {execution_id} is changing state; try again", code="EXECUTION_BUSY")
