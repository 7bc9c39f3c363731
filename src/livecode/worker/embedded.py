"""The embedded mode: API, broker and worker in one process, SQLite in the data directory.

The worker is Celery's own WorkController (threads pool) consuming the in-memory broker, so the
embedded mode runs exactly the task code of the distributed mode. Executions that were QUEUED or
RUNNING when the previous process stopped are queued again at start-up.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery.worker import WorkController

from ..runtime import Runtime
from .celery_app import celery, configure_celery, enqueue_execution
from .heartbeat import set_identity
from .lifecycle import start_background, stop_background
from .metrics import connect_worker_signals
from .reconciler import reconcile_once
from .sandbox_runner import get_process_runner

log = logging.getLogger(__name__)

CONSUMER_STOP_WAIT_S = 0.2


class InProcessWorker:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.name = f"embedded@{socket.gethostname()}:{os.getpid()}"
        self.controller: WorkController | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        settings = self.rt.settings
        configure_celery(settings)
        celery.conf.livecode_inprocess = True
        connect_worker_signals()  # this process runs the tasks: it records their figures
        get_process_runner(settings)  # refuse to start without the configured sandbox
        set_identity(self.name)
        self.controller = WorkController(
            app=celery,
            hostname=self.name,
            pool_cls="threads",
            concurrency=settings.worker_concurrency,
            queues=[settings.queue_high, settings.queue_low],
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel=settings.log_level,
        )
        self.thread = threading.Thread(target=self.controller.start, name="livecode-worker", daemon=True)
        self.thread.start()
        counts = reconcile_once(self.rt, enqueue_execution, startup=True)
        if any(counts.values()):
            log.warning("queued again after restart", extra=counts)
        start_background(self.rt, self.name, settings.worker_concurrency)

    def alive(self) -> bool:
        return bool(self.thread and self.thread.is_alive())

    def stop(self, timeout: float = CONSUMER_STOP_WAIT_S) -> None:
        stop_background()
        if self.controller is not None:
            # Celery's warm shutdown, in this thread: the runs in flight finish and the pool stops
            # before it returns.
            self.controller.stop(in_sighandler=False)
        if self.thread is not None:
            # All the consumer's thread has left to do is notice: Celery's loop for this broker
            # (synloop) polls it for up to 2 s at a time, which made every stop of `livecode
            # serve` 2 s longer. A message it takes meanwhile stays QUEUED in the database, and
            # the next start queues it again (reconcile_once), as after a crash.
            self.thread.join(timeout)


def stop_worker(worker: Any) -> None:
    if worker is not None:
        worker.stop()
