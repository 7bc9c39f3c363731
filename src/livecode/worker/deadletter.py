"""The dead-letter queue (design 3.4): tasks that exhausted their retries, kept for operators.

A task usually exhausts its retries because the database is down, which is also where dead
letters live. So a dead letter that cannot be written to the database is parked in a Redis list
and moved into the table by the reconciler's next pass once the database answers again. Each
letter carries its id from the start, so moving it twice (a pass that dies between the INSERT and
the removal from Redis) still stores it once.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict, internal_error_message
from ..models import DeadLetter, Execution, ExecutionStatus, utcnow
from ..runtime import Runtime

log = logging.getLogger(__name__)

PENDING_KEY = "livecode:dead-letters:pending"
REASON = "DEAD_LETTER"


def _letter(execution_id: str, task_name: str, exc: BaseException, attempts: int,
            first_failed_at: datetime | None) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": str(uuid.uuid4()),
        "execution_id": str(uuid.UUID(str(execution_id))),
        "task_name": task_name,
        "error": f"{type(exc).__name__}: {exc}"[:4000],
        "attempts": attempts,
        "first_failed_at": (first_failed_at or now).isoformat(),
        "created_at": now.isoformat(),
    }


def _store(rt: Runtime, letter: dict[str, Any]) -> bool:
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
            .where(Execution.id == eid, Execution.status.in_(("QUEUED", "RUNNING")))
            # The user sees a generic message; the error itself is the operator's (the dead letter,
            # the log line), under the same id.
            .values(status=ExecutionStatus.FAILED.value, reason=REASON,
                    stderr=(f"the task failed after {letter['attempts']} attempts; "
                            + internal_error_message(letter["id"])).encode(),
                    finished_at=utcnow())
        )
    return True


def record_dead_letter(
    rt: Runtime, execution_id: str, task_name: str, exc: BaseException, attempts: int,
    first_failed_at: datetime | None = None,
) -> None:
    """Keep a task that will not be tried again. Never raises: it runs in Celery's failure hook."""
    try:
        letter = _letter(execution_id, task_name, exc, attempts, first_failed_at)
    except ValueError:
        log.error("dead letter for a task without an execution id", extra={"execution_id": str(execution_id)})
        return
    extra = {"execution_id": letter["execution_id"], "error": letter["error"], "attempts": attempts,
             "error_id": letter["id"]}
    try:
        _store(rt, letter)
        log.error("task dead-lettered", extra=extra)
        return
    except Exception:  # noqa: BLE001 - most likely the database is what failed; park it in Redis
        log.warning("could not write the dead letter to the database", extra=extra, exc_info=True)
    if rt.redis is None:
        # Embedded mode: the row stays QUEUED and the reconciler queues it again.
        return
    try:
        rt.redis.rpush(PENDING_KEY, json.dumps(letter))
        log.error("task dead-lettered (parked until the database is back)", extra=extra)
    except Exception:  # noqa: BLE001 - both stores down; the QUEUED row is re-run by the reconciler
        log.exception("could not park the dead letter either", extra=extra)


def drain_pending(rt: Runtime) -> int:
    """Move dead letters parked in Redis into the database. Returns how many were stored."""
    if rt.redis is None:
        return 0
    stored = 0
    parked: list[bytes] = rt.redis.lrange(PENDING_KEY, 0, -1)  # type: ignore[assignment]
    for raw in parked:
        try:
            letter = json.loads(raw)
            if _store(rt, letter):
                stored += 1
        except (ValueError, KeyError, TypeError):
            log.error("dropping an unreadable parked dead letter: %r", raw[:200])
        # Removed only after the INSERT committed (or the letter proved unreadable); a database
        # error propagates and leaves it parked for the next pass.
        rt.redis.lrem(PENDING_KEY, 1, raw)  # type: ignore[arg-type]
    return stored


def serialize_dead_letter(d: DeadLetter, execution_status: str | None = None) -> dict[str, Any]:
    from ..services.sessions import iso

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
            statuses = dict(found.tuples().all())
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
