"""The dead-letter queue (design 3.4): tasks that exhausted their retries, kept for operators."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import delete, select, update

from ..models import DeadLetter, Execution, ExecutionStatus, utcnow
from ..runtime import Runtime

log = logging.getLogger(__name__)


def record_dead_letter(
    rt: Runtime, execution_id: str, task_name: str, exc: BaseException, attempts: int
) -> None:
    """Keep the failed task with its error, and mark its execution FAILED so it is not retried
    behind the operator's back. If the database itself is what failed, the execution stays
    QUEUED and the reconciler queues it again once the database is back: nothing is lost."""
    error = f"{type(exc).__name__}: {exc}"[:4000]
    try:
        eid = uuid.UUID(str(execution_id))
        with rt.db.write() as s:
            s.add(DeadLetter(execution_id=eid, task_name=task_name, error=error,
                             attempts=attempts, first_failed_at=utcnow()))
            s.execute(
                update(Execution)
                .where(Execution.id == eid, Execution.status.in_(("QUEUED", "RUNNING")))
                .values(status=ExecutionStatus.FAILED.value, reason="DEAD_LETTER",
                        stderr=f"the task failed after {attempts} attempts: {error}",
                        finished_at=utcnow())
            )
        log.error("task dead-lettered", extra={"execution_id": str(execution_id), "error": error})
    except Exception:  # noqa: BLE001
        log.exception("could not record dead letter", extra={"execution_id": str(execution_id)})


def serialize_dead_letter(d: DeadLetter) -> dict[str, Any]:
    from ..services.sessions import iso

    return {
        "id": str(d.id),
        "execution_id": str(d.execution_id),
        "task_name": d.task_name,
        "error": d.error,
        "attempts": d.attempts,
        "first_failed_at": iso(d.first_failed_at),
        "created_at": iso(d.created_at),
        "requeued_at": iso(d.requeued_at),
    }


def list_dead_letters(rt: Runtime, limit: int = 100) -> list[dict[str, Any]]:
    with rt.db.read(fresh=True) as s:
        rows = s.scalars(select(DeadLetter).order_by(DeadLetter.created_at.desc()).limit(limit)).all()
        return [serialize_dead_letter(d) for d in rows]


def get_dead_letter(rt: Runtime, dl_id: uuid.UUID) -> dict[str, Any] | None:
    with rt.db.read(fresh=True) as s:
        row = s.get(DeadLetter, dl_id)
        return serialize_dead_letter(row) if row else None


def requeue_dead_letter(rt: Runtime, dl_id: uuid.UUID, enqueue: Any) -> dict[str, Any] | None:
    """Put the execution back to QUEUED (clearing its failure) and publish it again."""
    with rt.db.write() as s:
        row = s.get(DeadLetter, dl_id)
        if row is None:
            return None
        s.execute(
            update(Execution)
            .where(Execution.id == row.execution_id, Execution.reason == "DEAD_LETTER")
            .values(status=ExecutionStatus.QUEUED.value, reason=None, stderr=None,
                    finished_at=None, started_at=None, worker=None, queued_at=utcnow())
        )
        row.requeued_at = utcnow()
        execution_id, priority = row.execution_id, s.execute(
            select(Execution.priority).where(Execution.id == row.execution_id)
        ).scalar()
        out = serialize_dead_letter(row)
    if priority is not None:
        enqueue(execution_id, priority, None)
    return out


def purge_dead_letters(rt: Runtime, dl_id: uuid.UUID | None = None) -> int:
    with rt.db.write() as s:
        stmt = delete(DeadLetter)
        if dl_id is not None:
            stmt = stmt.where(DeadLetter.id == dl_id)
        return int(s.execute(stmt).rowcount)  # type: ignore[attr-defined]
