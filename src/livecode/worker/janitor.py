"""The storage job: expires old executions and collects unreferenced sources (services/storage.py).

It runs on the reconciler's thread, at most once per LIVECODE_STORAGE_CLEANUP_INTERVAL_S across the
whole cluster (a lock that lives for the interval, infra/locks.py: whichever worker takes it does the pass),
and deletes in bounded batches, each its own short transaction.
"""

from __future__ import annotations

import logging
import time

from ..runtime import Runtime
from ..services.output_files import expire_files
from ..services.storage import collect_sources, expire_executions

log = logging.getLogger(__name__)

LOCK_KEY = "livecode:storage-cleanup:lock"


def cleanup_once(rt: Runtime) -> dict[str, int]:
    """One pass: executions past the retention first, then the sources they leave unreferenced."""
    counts = {
        "expired_files": expire_files(rt.db, rt.settings),
        "expired_executions": expire_executions(rt.db, rt.settings),
        "collected_sources": collect_sources(rt.db, rt.settings),
    }
    if any(counts.values()):
        log.info("storage cleanup", extra=counts)
    return counts


class StorageCleanup:
    def __init__(self, rt: Runtime, holder: str) -> None:
        self.rt, self.holder = rt, holder
        self.next_at = time.monotonic()

    def tick(self) -> None:
        """Called every reconciler tick; does a pass when this process's interval has elapsed and
        no other process did one within the interval."""
        now = time.monotonic()
        if now < self.next_at:
            return
        interval = self.rt.settings.storage_cleanup_interval_s
        self.next_at = now + interval
        if not self.rt.locks.try_take(LOCK_KEY, self.holder, interval):
            return
        cleanup_once(self.rt)
