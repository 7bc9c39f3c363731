"""Makes sure no execution stays QUEUED or RUNNING forever.

- RUNNING on a worker that has no heartbeat any more (killed, host lost), or running far past any
  limit: back to QUEUED and published again, or FAILED with WORKER_LOST once it has used up its
  attempts.
- QUEUED but carried by no message in the broker (Redis restarted or flushed, a publish that
  failed, a message delivered to a worker that died before claiming it): published again.
- Dead letters parked in Redis while the database was down: moved into the database first, so
  that their executions are FAILED (DEAD_LETTER) rather than published again.
Every change is a conditional UPDATE, so two reconcilers racing, or a message that turns up again
later, still run each execution to one result.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from ..models import Execution, ExecutionStatus, utcnow
from ..runtime import Runtime
from .deadletter import drain_pending
from .janitor import StorageCleanup

log = logging.getLogger(__name__)

LOCK_KEY = "livecode:reconciler:lock"

Enqueue = Callable[[uuid.UUID, str, str | None], None]


def broker_execution_ids(rt: Runtime, queues: list[str]) -> set[str] | None:
    """Ids of executions that some broker message still carries (queued or unacknowledged).
    None when the broker cannot be inspected (the in-process broker)."""
    # A live worker claims the row as soon as it receives the message (or after a retry countdown
    # of at most 2^(retries-1) s), so a QUEUED row whose only message was delivered longer ago
    # than that is orphaned. Scheduled retries (countdown) sit in a worker's memory, not in the
    # broker: those executions are QUEUED with a recent queued_at or are RUNNING, and the grace
    # period covers them.
    s = rt.settings
    return rt.broker.carried_ids(queues, time.time() - (s.requeue_grace_s + 2**s.task_max_retries + 5))


class AbsentWorkers:
    """When this process first saw each worker without a heartbeat. A heartbeat can vanish while
    its worker lives (Redis restarted or flushed: every key is gone until the next beat), so a
    worker only counts as lost once it has stayed absent for a whole heartbeat TTL."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._seen: dict[str, tuple[float, float]] = {}  # worker -> (first absent, last checked)

    def lost(self, worker: str, alive: set[str]) -> bool:
        now = time.monotonic()
        if worker in alive:
            self._seen.pop(worker, None)
            return False
        first, last = self._seen.get(worker, (now, now))
        if now - last > self.ttl_s:  # not checked for a while: it may have been back meanwhile
            first = now
        self._seen[worker] = (first, now)
        return now - first >= self.ttl_s

    def forget_except(self, workers: set[str]) -> None:
        for name in set(self._seen) - workers:
            del self._seen[name]


def reconcile_once(rt: Runtime, enqueue: Enqueue, *, startup: bool = False,
                   absent: AbsentWorkers | None = None) -> dict[str, int]:
    """One pass. `startup` (embedded mode) means every QUEUED or RUNNING row is orphaned: the
    in-process broker and worker of the previous process are gone. Without `absent`, a worker
    with no heartbeat right now counts as lost (a single pass, as in the tests)."""
    s = rt.settings
    now = utcnow()
    grace = timedelta(seconds=s.requeue_grace_s)
    stale_after = timedelta(milliseconds=s.max_time_limit_ms * 2 + 120_000)
    alive_info = rt.registry.alive()
    alive = set(alive_info)
    requeued = failed = republished = 0
    dead_lettered = drain_pending(rt)
    sent: set[uuid.UUID] = set()

    with rt.db.read(fresh=True) as sess:
        running = sess.execute(
            select(Execution.id, Execution.worker, Execution.attempts, Execution.started_at,
                   Execution.priority, Execution.request_id)
            .where(Execution.status == ExecutionStatus.RUNNING.value)
        ).all()
    if absent is not None:
        absent.forget_except({row.worker for row in running if row.worker})
    for row in running:
        started = _aware(row.started_at)
        missing = absent.lost(row.worker or "", alive) if absent else row.worker not in alive
        lost = startup or ((missing or _reborn(alive_info.get(row.worker or ""), started))
                           and (started is None or now - started > grace))
        stale = started is not None and now - started > stale_after
        if not (lost or stale):
            continue
        if row.attempts >= s.max_attempts:
            values = dict(status=ExecutionStatus.FAILED.value, reason="WORKER_LOST",
                          stderr=f"the worker running this execution was lost {row.attempts} times".encode(),
                          finished_at=now)
        else:
            values = dict(status=ExecutionStatus.QUEUED.value, worker=None, started_at=None)
        with rt.db.write() as sess:
            changed = sess.execute(
                update(Execution)
                .where(Execution.id == row.id, Execution.status == ExecutionStatus.RUNNING.value,
                       Execution.attempts == row.attempts)
                .values(**values)
            ).rowcount  # type: ignore[attr-defined]
        if not changed:
            continue
        if values["status"] == ExecutionStatus.QUEUED.value:
            requeued += 1
            sent.add(row.id)
            _safe_enqueue(enqueue, row.id, row.priority, row.request_id)
        else:
            failed += 1
        log.warning("lost execution %s", "requeued" if values["status"] == ExecutionStatus.QUEUED.value else "failed",
                    extra={"execution_id": str(row.id), "worker": row.worker})

    carried = None if startup else broker_execution_ids(rt, [s.queue_high, s.queue_low])
    if startup or carried is not None:
        with rt.db.read(fresh=True) as sess:
            queued_rows = sess.execute(
                select(Execution.id, Execution.priority, Execution.request_id, Execution.queued_at)
                .where(Execution.status == ExecutionStatus.QUEUED.value)
                .order_by(Execution.queued_at)
            ).all()
        for qrow in queued_rows:
            if qrow.id in sent:
                continue
            if carried is not None and (str(qrow.id) in carried or now - _aware(qrow.queued_at) < grace):
                continue
            republished += 1
            _safe_enqueue(enqueue, qrow.id, qrow.priority, qrow.request_id)
    counts = {"requeued": requeued, "failed": failed, "republished": republished,
              "dead_lettered": dead_lettered}
    if any(counts.values()):
        log.warning("reconciled", extra=counts)
    return counts


def _reborn(info: dict[str, Any] | None, started: datetime | None) -> bool:
    """The worker of this name is alive but started after the run did: it is a new process under
    the old name (a restarted container), and the run died with its predecessor."""
    boot = (info or {}).get("boot")
    return bool(boot and started is not None and float(boot) > started.timestamp())


def _aware(value):  # type: ignore[no-untyped-def]
    from datetime import UTC

    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _safe_enqueue(enqueue: Enqueue, execution_id: uuid.UUID, priority: str, request_id: str | None) -> None:
    try:
        enqueue(execution_id, priority, request_id)
    except Exception:  # noqa: BLE001 - tried again on the next pass
        log.warning("re-enqueue failed", extra={"execution_id": str(execution_id)}, exc_info=True)


class Reconciler(threading.Thread):
    """Runs `reconcile_once` every interval; one process of the cluster at a time (runtime locks)."""

    def __init__(self, rt: Runtime, enqueue: Enqueue, holder: str) -> None:
        super().__init__(name="livecode-reconciler", daemon=True)
        self.rt, self.enqueue, self.holder = rt, enqueue, holder
        self.stopped = threading.Event()
        self.absent = AbsentWorkers(rt.settings.heartbeat_ttl_s)
        self.cleanup = StorageCleanup(rt, holder)

    def run(self) -> None:
        interval = self.rt.settings.reconcile_interval_s
        while not self.stopped.wait(interval):
            try:
                if self._acquire(interval):
                    reconcile_once(self.rt, self.enqueue, absent=self.absent)
            except Exception:  # noqa: BLE001 - a dependency is down; try again next tick
                log.warning("reconcile pass failed", exc_info=True)
            try:
                self.cleanup.tick()
            except Exception:  # noqa: BLE001 - as above: the next interval tries again
                log.warning("storage cleanup failed", exc_info=True)

    def _acquire(self, interval: float) -> bool:
        return self.rt.locks.try_take(LOCK_KEY, self.holder, interval)

    def stop(self) -> None:
        self.stopped.set()
