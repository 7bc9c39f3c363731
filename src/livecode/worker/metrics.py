"""Execution figures recorded by whichever process runs the worker (Celery's task_postrun), into
the runtime's metrics store (infra/metrics_store.py); the API serves them at /metrics."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from ..infra.metrics_store import DURATION_BUCKETS, WAIT_BUCKETS, histogram_increments
from ..runtime import Runtime

log = logging.getLogger(__name__)


def record_task(rt: Runtime, execution_id: str, retval: Any, state: str | None,
                finished: dict[str, Any] | None = None) -> None:
    """After a task: count it, and for a finished execution its outcome, duration and queue wait.
    `finished`: the execution as the task's final UPDATE returned it (GET's body); without it the
    row is read (the truth, including when it was queued)."""
    from ..models import ExecutionStatus

    statuses = {s.value for s in ExecutionStatus}
    if state == "RETRY":
        outcome = "retry"
    elif state not in (None, "SUCCESS") or not isinstance(retval, str):
        outcome = "error"
    else:
        outcome = retval if retval in statuses or retval == "skipped" else "error"
    increments: dict[str, float] = {f"tasks|{outcome}": 1}
    if outcome in statuses:
        row = _finished_row(finished) if finished is not None else _read_row(rt, execution_id)
        if row is not None and row["status"] in statuses:
            increments[f"n|{row['status']}|{row['language']}"] = 1
            started, finished_at, queued = row["started_at"], row["finished_at"], row["queued_at"]
            if row["execution_time_ms"] is not None:
                duration = row["execution_time_ms"] / 1000
            elif started and finished_at:
                duration = (finished_at - started).total_seconds()
            else:
                duration = 0.0
            increments.update(histogram_increments(f"dur|{row['language']}", duration, DURATION_BUCKETS))
            if started and queued:
                queue = rt.settings.queue_low if row["priority"] == "batch" else rt.settings.queue_high
                wait = max(0.0, (started - queued).total_seconds())
                increments.update(histogram_increments(f"wait|{queue}", wait, WAIT_BUCKETS))
    rt.metrics.add(increments)


_ROW_FIELDS = ("status", "language", "priority", "queued_at", "started_at", "finished_at", "execution_time_ms")


def _finished_row(finished: dict[str, Any]) -> dict[str, Any]:
    row = {k: finished.get(k) for k in _ROW_FIELDS}
    for k in ("queued_at", "started_at", "finished_at"):
        value = row[k]
        row[k] = datetime.fromisoformat(value) if isinstance(value, str) and value else None
    return row


def _read_row(rt: Runtime, execution_id: str) -> dict[str, Any] | None:
    from sqlalchemy import select

    from ..models import Execution

    with rt.db.read(fresh=True) as s:
        row = s.execute(
            select(*(getattr(Execution, k) for k in _ROW_FIELDS)).where(Execution.id == uuid.UUID(execution_id))
        ).first()
    return dict(row._mapping) if row is not None else None


def _on_task_postrun(sender: Any = None, task_id: str | None = None, retval: Any = None,
                     state: str | None = None, **_: Any) -> None:
    if getattr(sender, "name", None) != "livecode.execute" or not task_id:
        return
    try:
        from ..runtime import runtime

        # The task leaves the row its final UPDATE returned on its request (still current here).
        finished = getattr(getattr(sender, "request", None), "livecode_finished", None)
        record_task(runtime(), task_id, retval, state, finished if isinstance(finished, dict) else None)
    except Exception:  # noqa: BLE001 - metrics must never fail a task
        log.debug("could not record task metrics", exc_info=True)


def connect_worker_signals() -> None:
    """Record each execution task's figures (in whichever process runs the worker)."""
    from celery import signals

    signals.task_postrun.connect(_on_task_postrun, weak=False, dispatch_uid="livecode-metrics")
