"""The Celery application. Only an execution id travels on the queue; the row holds the rest.

Configured by whoever starts it (create_app, `livecode worker`, the embedded server,
celery_worker.py), never at import. The task itself is in tasks.py, which imports this module;
this one names the task only by its name, so the two do not import each other.
"""

from __future__ import annotations

import uuid

from celery import Celery
from kombu import Queue

from ..config import Settings
from .redis_transport import TRANSPORT

TASK_NAME = "livecode.execute"

celery = Celery("livecode", include=["livecode.worker.tasks"])


def configure_celery(settings: Settings) -> Celery:
    transport_options: dict[str, object] = {}
    transport = None
    if settings.redis_url:
        transport = TRANSPORT  # kombu's Redis transport, reusing a client per channel
        # Check queues in the order given (high before low) instead of round robin, and give an
        # unacknowledged message back to the queue after this long if its worker vanished (the
        # reconciler notices a lost worker much sooner; this is the last resort).
        transport_options = {"queue_order_strategy": "priority", "visibility_timeout": 3600}
    else:
        transport_options = {"polling_interval": 0.01}
    celery.conf.update(
        broker_url=settings.broker_url,
        broker_transport=transport,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_queues=[Queue(settings.queue_high), Queue(settings.queue_low)],
        task_default_queue=settings.queue_high,
        task_create_missing_queues=True,
        broker_channel_error_retry=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        livecode_settings=settings,
    )
    return celery


def queue_for(settings: Settings, priority: str | None) -> str:
    """The queue that carries runs of this priority (batch runs wait behind interactive ones)."""
    return settings.queue_low if priority == "batch" else settings.queue_high


def enqueue_execution(execution_id: uuid.UUID, priority: str, request_id: str | None) -> None:
    """Publish an execution's id on the queue for its priority. The task id is the execution id."""
    settings: Settings = celery.conf.livecode_settings
    queue = queue_for(settings, priority)
    celery.send_task(
        TASK_NAME,
        args=[str(execution_id)],
        task_id=str(execution_id),
        queue=queue,
        headers={"request_id": request_id},
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        ignore_result=True,
    )
