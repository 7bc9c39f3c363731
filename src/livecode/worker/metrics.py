"""Execution figures, recorded by whichever process runs the worker into the runtime's metrics
store (infra/metrics_store.py); the API serves them at /metrics.

Neither source reads the database: the task records its outcome and a finished execution's
status, duration and queue wait from the row its final UPDATE returned, and Celery's
task_postrun counts the tasks that did not return (retries, errors).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ..infra.metrics_store import DURATION_BUCKETS, WAIT_BUCKETS, histogram_increments
from ..runtime import Runtime, runtime
from .celery_app import TASK_NAME, queue_for

log = logging.getLogger(__name__)

def _when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None


def record_outcome(rt: Runtime, outcome: str, final: dict[str, Any] | None = None) -> None:
    """Count one task by outcome (an execution status, "skipped", "retry" or "error") and, for an
    execution it finished, its status, duration and queue wait, from the row as the final UPDATE
    returned it (serialize_execution's shape). One write to the store. Never raises: metrics
    must never fail a task."""
    try:
        increments: dict[str, float] = {f"tasks|{outcome}": 1}
        if final is not None:
            increments.update(_execution_figures(rt, final))
        rt.metrics.add(increments)
    except Exception:  # noqa: BLE001
        log.debug("could not record task metrics", exc_info=True)


def _execution_figures(rt: Runtime, final: dict[str, Any]) -> dict[str, float]:
    language = final["language"]
    out: dict[str, float] = {f"n|{final['status']}|{language}": 1}
    started, finished, queued = (_when(final.get(k)) for k in ("started_at", "finished_at", "queued_at"))
    if final.get("execution_time_ms") is not None:
        duration = final["execution_time_ms"] / 1000
    elif started and finished:
        duration = (finished - started).total_seconds()
    else:
        duration = 0.0
    out.update(histogram_increments(f"dur|{language}", duration, DURATION_BUCKETS))
    if started and queued:
        queue = queue_for(rt.settings, final.get("priority"))
        wait = max(0.0, (started - queued).total_seconds())
        out.update(histogram_increments(f"wait|{queue}", wait, WAIT_BUCKETS))
    return out


def _on_task_postrun(sender: Any = None, task_id: str | None = None, state: str | None = None, **_: Any) -> None:
    # A task that returned recorded itself; this counts the ones that did not (retries, errors).
    if getattr(sender, "name", None) != TASK_NAME or not task_id or state == "SUCCESS":
        return
    record_outcome(runtime(), "retry" if state == "RETRY" else "error")


def connect_worker_signals() -> None:
    """Count the execution tasks that raise (in whichever process runs the worker)."""
    from celery import signals

    signals.task_postrun.connect(_on_task_postrun, weak=False, dispatch_uid="livecode-metrics")
