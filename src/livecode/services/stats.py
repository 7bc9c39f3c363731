"""Operator statistics (design: monitoring and analytics): executions by status and language over a
time window, queue depth, workers. No Flask here."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from ..models import Execution, utcnow
from ..runtime import Runtime


def broker_queue_lengths(rt: Runtime) -> dict[str, int]:
    """Messages waiting in each broker queue (infra/broker.py: Redis LLEN, or the QUEUED rows
    when the broker lives in memory)."""
    s = rt.settings
    return rt.broker.queue_lengths({s.queue_high: "interactive", s.queue_low: "batch"})


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
