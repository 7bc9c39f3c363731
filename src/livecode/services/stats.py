"""Operator statistics (design: monitoring and analytics): executions by status and language over a
time window, queue depth, workers. No Flask here."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from ..models import Execution, ExecutionStatus, utcnow
from ..runtime import Runtime

# Kombu's Redis transport keeps a queue's messages of priority p>0 in "<queue>\x06\x16<p>".
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def broker_queue_lengths(rt: Runtime) -> dict[str, int]:
    """Messages waiting in each broker queue (Redis LLEN); from the database in embedded mode,
    where the broker lives in memory: executions QUEUED per priority."""
    s = rt.settings
    queues = {s.queue_high: "interactive", s.queue_low: "batch"}
    if rt.redis is None:
        with rt.db.read() as db:
            rows = db.execute(
                select(Execution.priority, func.count())
                .where(Execution.status == ExecutionStatus.QUEUED.value)
                .group_by(Execution.priority)
            ).all()
        by_priority = {p: int(n) for p, n in rows}
        return {q: by_priority.get(p, 0) for q, p in queues.items()}
    pipe = rt.redis.pipeline(transaction=False)
    for q in queues:
        pipe.llen(q)
        for step in _PRIORITY_STEPS:
            pipe.llen(f"{q}{_PRIORITY_SEP}{step}")
    counts = pipe.execute()
    width = 1 + len(_PRIORITY_STEPS)
    return {q: int(sum(counts[i * width : (i + 1) * width])) for i, q in enumerate(queues)}


def execution_stats(rt: Runtime, window_s: int) -> dict[str, Any]:
    """Executions queued within the last `window_s` seconds, by status and language (replica)."""
    since = utcnow() - timedelta(seconds=window_s)
    with rt.db.read() as db:
        rows = db.execute(
            select(Execution.status, Execution.language, func.count(),
                   func.avg(Execution.execution_time_ms))
            .where(Execution.queued_at >= since)
            .group_by(Execution.status, Execution.language)
        ).all()
    by_status: dict[str, int] = {}
    by_language: dict[str, dict[str, int]] = {}
    total = 0
    for status, language, count, _avg in rows:
        n = int(count)
        total += n
        by_status[status] = by_status.get(status, 0) + n
        by_language.setdefault(language, {})[status] = n
    return {"total": total, "by_status": by_status, "by_language": by_language}


def admin_stats(rt: Runtime, window_s: int) -> dict[str, Any]:
    alive = rt.registry.alive()
    return {
        "window_s": window_s,
        "generated_at": utcnow().isoformat(),
        "executions": execution_stats(rt, window_s),
        "queues": broker_queue_lengths(rt),
        "workers": {
            "count": len(alive),
            "nodes": {name: {k: info.get(k) for k in ("host", "pid", "active", "concurrency", "cpu_seconds",
                                                        "rss_bytes")}
                      for name, info in sorted(alive.items())},
        },
    }
