"""The worker's webhook thread: after the terminal write of a run that has callbacks (its claim
says so) the task names the execution here (`notify`, a queue put: the run and its result never
wait on a callback), and the thread makes its due deliveries; every
LIVECODE_WEBHOOK_SWEEP_INTERVAL_S it also sweeps for any that are due (retries, and deliveries a
worker that died left behind). Tries run on a small pool of threads so
a slow receiver holds up only its own delivery."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from ..runtime import Runtime
from ..services.webhooks.dispatch import deliver_due

log = logging.getLogger(__name__)

_current: WebhookSweeper | None = None


def notify(execution_id: str) -> None:
    """The execution is terminal: make its deliveries soon (if it has any)."""
    sweeper = _current
    if sweeper is not None:
        sweeper.finished.put(execution_id)


class WebhookSweeper:
    def __init__(self, rt: Runtime, senders: int = 4) -> None:
        self.rt = rt
        self.finished: queue.Queue[str] = queue.Queue()
        self.pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="livecode-webhook")
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="livecode-webhooks", daemon=True)

    def start(self) -> None:
        global _current
        _current = self
        self.thread.start()

    def stop(self) -> None:
        global _current
        if _current is self:
            _current = None
        self._stop.set()
        self.finished.put("")
        self.thread.join(5)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        interval = self.rt.settings.webhook_sweep_interval_s
        last_sweep = -float("inf")
        while not self._stop.is_set():
            ids = self._finished_ids(max(0.0, last_sweep + interval - time.monotonic()))
            if self._stop.is_set():
                return
            try:
                if ids:
                    deliver_due(self.rt.db, self.rt.settings, ids, self.pool)
                if time.monotonic() - last_sweep >= interval:
                    last_sweep = time.monotonic()
                    deliver_due(self.rt.db, self.rt.settings, None, self.pool)
            except Exception:  # noqa: BLE001 - the database may be down; the next round retries
                log.warning("webhook sweep failed", exc_info=True)

    def _finished_ids(self, timeout: float) -> list[uuid.UUID]:
        """The executions named by notify(), waiting at most `timeout` for the first."""
        ids: list[uuid.UUID] = []
        try:
            item = self.finished.get(timeout=timeout)
            while True:
                if item:
                    ids.append(uuid.UUID(item))
                if len(ids) >= 100:
                    break
                item = self.finished.get_nowait()
        except queue.Empty:
            pass
        return ids
