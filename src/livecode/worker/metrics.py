"""Execution figures recorded by whichever process runs the worker (Celery's task_postrun), into
the runtime's metrics store (infra/metrics_store.py); the API serves them at /metrics."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from ..infra.metrics_store import DURATION_BUCKETS, WAIT_BUCKETS, histogram_increments
from ..runtime import Runtime

log = logging.getLogger(__name__)


def record_task(rt: Runtime, execution_id: str, retval: Any, state: str | None) -> None:
    """After a task: count it, and for a finished execution its outcome, duration and queue wait,
    read from its row (the truth, including when it was queued)."""
    from sqlalchemy import select

    from ..models import Execution, ExecutionStatus

    statuses = {s.value for s in ExecutionStatus}
    if state == "RETRY":
        outcome = "retry"
    elif state not in (None, "SUCCESS") or not isinstance(retval, str):
        outcome = "error"
    else:
        outcome = retval if retval in statuses or retval == "skipped" else "error"
    increments: dict[str, float] = {f"tasks|{outcome}": 1}
    if outcome in statuses:
        with rt.db.read(fresh=True) as s:
            row = s.execute(
                select(Execution.status, Execution.language, Execution.priority, Execution.queued_at,
                       Execution.started_at, Execution.finished_at, Execution.execution_time_ms)
                .where(Execution.id == uuid.UUID(execution_id))
            ).first()
        if row is not None and row.status in statuses:
            increments[f"n|{row.status}|{row.language}"] = 1
            if row.execution_time_ms is not None:
                duration = row.execution_time_ms / 1000
            elif row.started_at and row.finished_at:
                duration = (row.finished_at - row.started_at).total_seconds()
            else:
                duration = 0.0
            increments.update(histogram_increments(f"dur|{row.language}", duration, DURATION_BUCKETS))
            if row.started_at and row.queued_at:
                queue = rt.settings.queue_low if row.priority == "batch" else rt.settings.queue_high
                wait = max(0.0, (row.started_at - row.queued_at).total_seconds())
                increments.update(histogram_increments(f"wait|{queue}", wait, WAIT_BUCKETS))
    rt.metrics.add(increments)


def _on_task_postrun(sender: Any = None, task_id: str | None = None, retval: Any = None,
                     state: str | None = None, **_: Any) -> None:
    if getattr(sender, "name", None) != "livecode.execute" or not task_id:
        return
    try:
        from ..runtime import runtime

        record_task(runtime(), task_id, retval, state)
    except Exception:  # noqa: BLE001 - metrics must never fail a task
        log.debug("could not record task metrics", exc_info=True)


def connect_worker_signals() -> None:
    """Record each execution task's figures (in whichever process runs the worker)."""
    from celery import signals

    signals.task_postrun.connect(_on_task_postrun, weak=False, dispatch_uid="livecode-metrics")
