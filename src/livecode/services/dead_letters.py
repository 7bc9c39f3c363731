"""Dead-letter administration (design 3.4): list, inspect, requeue and purge the tasks that
exhausted their retries. Used by the admin API and `livecode dlq`; the worker records them
(worker/deadletter.py) through `store_dead_letter`. No Flask, no Celery.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict, internal_error_message
from ..models import ACTIVE_STATUSES, DeadLetter, Execution, ExecutionStatus, status_values, utcnow
from ..runtime import Runtime
from .sessions import iso

log = logging.getLogger(__name__)

REASON = "DEAD_LETTER"


def store_dead_letter(rt: Runtime, letter: dict[str, Any]) -> bool:
    """Insert the letter and mark its execution FAILED (so it is not retried behind the
    operator's back). False when the letter was stored already."""
    dl_id = uuid.UUID(letter["id"])
    eid = uuid.UUID(letter["execution_id"])
    with rt.db.write() as s:
        if s.get(DeadLetter, dl_id) is not None:
            return False
        s.add(DeadLetter(id=dl_id, execution_id=eid, task_name=letter["task_name"],
                         error=letter["error"], attempts=letter["attempts"],
                         first_failed_at=datetime.fromisoformat(letter["first_failed_at"]),
                         created_at=datetime.fromisoformat(letter["created_at"])))
        s.execute(
            update(Execution)
            .where(Execution.id == eid, Execution.status.in_(status_values(ACTIVE_STATUSES)))
            # The user sees a generic message; the error itself is the operator's (the dead letter,
            # the log line), under the same id.
            .values(status=ExecutionStatus.FAILED.value, reason=REASON,
                    stderr=(f"the task failed after {letter['attempts']} attempts; "
                            + internal_error_message(letter["id"])).encode(),
                    finished_at=utcnow())
        )
    return True


def serialize_dead_letter(d: DeadLetter, execution_status: str | None = None) -> dict[str, Any]:
    return {
        "id": str(d.id),
        "execution_id": str(d.execution_id),
        "execution_status": execution_status,
        "task_name": d.task_name,
        "error": d.error,
        "attempts": d.attempts,
        "first_failed_at": iso(d.first_failed_at),
        "created_at": iso(d.created_at),
        "requeued_at": iso(d.requeued_at),
    }


def _with_status(rt: Runtime, rows: list[DeadLetter]) -> list[dict[str, Any]]:
    ids = [r.execution_id for r in rows]
    statuses: dict[uuid.UUID, str] = {}
    if ids:
        with rt.db.read(fresh=True) as s:
            found = s.execute(select(Execution.id, Execution.status).where(Execution.id.in_(ids)))
            statuses = {execution_id: status for execution_id, status in found}
    return [serialize_dead_letter(r, statuses.get(r.execution_id)) for r in rows]


def list_dead_letters(rt: Runtime, limit: int = 100) -> list[dict[str, Any]]:
    """Newest first. `execution_status` is None when the execution has been deleted since."""
    with rt.db.read(fresh=True) as s:
        rows = list(s.scalars(select(DeadLetter).order_by(DeadLetter.created_at.desc()).limit(limit)).all())
    return _with_status(rt, rows)


def get_dead_letter(rt: Runtime, dl_id: uuid.UUID) -> dict[str, Any] | None:
    with rt.db.read(fresh=True) as s:
        row = s.get(DeadLetter, dl_id)
    return _with_status(rt, [row])[0] if row else None


def requeue_dead_letter(rt: Runtime, dl_id: uuid.UUID, enqueue: Any) -> dict[str, Any] | None:
    """Put the execution back to QUEUED (clearing its failure) and publish it again. None when
    there is no such dead letter; Conflict when its execution is not dead-lettered any more
    (already requeued, deleted) or its session has another run in progress."""
    try:
        with rt.db.write() as s:
            row = s.get(DeadLetter, dl_id)
            if row is None:
                return None
            target = s.execute(
                update(Execution)
                .where(Execution.id == row.execution_id, Execution.reason == REASON,
                       Execution.status == ExecutionStatus.FAILED.value)
                .values(status=ExecutionStatus.QUEUED.value, reason=None, stderr=None,
                        finished_at=None, started_at=None, worker=None, queued_at=utcnow())
                .returning(Execution.priority, Execution.request_id)
            ).first()
            if target is None:
                raise Conflict(
                    f"execution {row.execution_id} is not dead-lettered any more (requeued already, "
                    "or deleted); purge this dead letter instead",
                    code="DEAD_LETTER_NOT_REQUEUEABLE",
                )
            row.requeued_at = utcnow()
            execution_id = row.execution_id
    except IntegrityError as exc:
        # The one-active-run-per-session index: the user started another run meanwhile.
        raise Conflict(
            "the execution's session has another run in progress; requeue once it has finished",
            code="EXECUTION_IN_PROGRESS",
        ) from exc
    try:
        enqueue(execution_id, target.priority, target.request_id)
    except Exception:  # noqa: BLE001 - the row is QUEUED; the reconciler publishes it
        log.warning("requeue publish failed; the reconciler will queue it", exc_info=True)
    return get_dead_letter(rt, dl_id)


def purge_dead_letters(rt: Runtime, dl_id: uuid.UUID | None = None) -> int:
    """Delete one dead letter, or all of them. Returns how many were deleted."""
    with rt.db.write() as s:
        stmt = delete(DeadLetter)
        if dl_id is not None:
            stmt = stmt.where(DeadLetter.id == dl_id)
        return int(s.execute(stmt).rowcount)  # type: ignore[attr-defined]
