"""The Celery application. Only an execution id travels on the queue; the row holds the rest.

Configured by whoever starts it (create_app, `livecode worker`, the embedded server,
celery_worker.py), never at import. The task itself is in tasks.py, which imports this module;
this one names the task only by its name, so the two do not import each other.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import uuid
from typing import Any

from celery import Celery
from kombu import Queue
from kombu.serialization import dumps as serialize
from kombu.utils.json import dumps as json_dumps

from ..config import Settings
from .memory_transport import TRANSPORT as MEMORY_TRANSPORT
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
        transport = MEMORY_TRANSPORT  # kombu's in-memory transport, woken by a message instead of polling
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


def task_message(execution_id: uuid.UUID, priority: str, request_id: str | None) -> tuple[str, str]:
    """The Redis list and the message that `enqueue_execution` (Celery's `send_task`) puts there
    for this run: task protocol 2 (`celery.amqp.as_task_v2`), its body JSON-serialized by kombu and
    base64-encoded in kombu's Redis envelope, with a fresh delivery tag. Built without a kombu
    producer (routing, `ensure`, `maybe_declare`: most of a submission's enqueue CPU), so the API
    can push it in the same round trip as the run's QUEUED event, and from a template of that
    message (`_template`) with the run's id, request id and delivery tag filled in. A stock Celery
    worker consumes it as it does send_task's (tests/integration/test_task_message.py compares
    the two)."""
    settings: Settings = celery.conf.livecode_settings
    queue = queue_for(settings, priority)
    eid = str(execution_id)
    body_parts, parts = _template(queue, celery.thread_oid, os.getpid(), *_task_limits())
    fill = {
        _ID: eid,
        _BODY: '"' + base64.b64encode(eid.join(body_parts).encode()).decode() + '"',
        _REQUEST_ID: json_dumps(request_id),
        _TAG: '"' + str(uuid.uuid4()) + '"',
    }
    return queue, "".join([fill.get(part, part) for part in parts])


# What the template holds in place of a message's own values: a uuid (the execution id: in the
# headers, argsrepr, correlation id and body) and JSON strings of hex, neither of which JSON or
# base64 would rewrite, nor Celery's fields contain.
_MARK = uuid.uuid4().hex
_ID = str(uuid.UUID(_MARK))
_BODY, _REQUEST_ID, _TAG = (f'"{name}{_MARK}"' for name in ("body", "request", "tag"))
_SLOTS = re.compile("(" + "|".join(re.escape(slot) for slot in (_ID, _BODY, _REQUEST_ID, _TAG)) + ")")


def _task_limits() -> tuple[Any, Any]:
    """(time_limit, soft_time_limit) as send_task puts them in its message: the registered task's
    (a process that imported the worker's tasks: the embedded mode, the tests), else (None, None);
    a worker applies its task's own limits to a message without them."""
    task = celery._tasks.get(TASK_NAME)
    if task is None:
        return None, None
    options = task._get_exec_options()
    return options.get("time_limit"), options.get("soft_time_limit")


@functools.lru_cache(maxsize=256)
def _template(queue: str, reply_to: str, pid: int, time_limit: Any = None,
              soft_time_limit: Any = None) -> tuple[list[str], list[str]]:
    """task_message's message for a run on `queue`, sent from a thread whose reply-to is
    `reply_to` (Celery's per-thread oid) in process `pid` (the headers' `origin` names it: a
    forked process builds its own): the body's JSON split around the execution id, and the
    envelope's JSON split into literal text and the placeholders (_ID, _BODY, _REQUEST_ID, _TAG).
    Building it is most of the CPU of a message: as_task_v2's headers, two JSON encodings."""
    task = celery.amqp.as_task_v2(_ID, TASK_NAME, args=[_ID], reply_to=reply_to, ignore_result=True,
                                  argsrepr=repr([_ID]), kwargsrepr="{}", time_limit=time_limit,
                                  soft_time_limit=soft_time_limit)
    content_type, content_encoding, body = serialize(task.body, serializer="json")
    message = {
        "body": _BODY[1:-1],
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": {**task.headers, "request_id": _REQUEST_ID[1:-1]},
        "properties": {
            **task.properties,
            "delivery_mode": 2,  # persistent, as kombu's default exchange gives it
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,  # kombu keeps priority 0 in the list named after the queue
            "body_encoding": "base64",
            "delivery_tag": _TAG[1:-1],
        },
    }
    text = body.decode() if isinstance(body, bytes) else body
    return text.split(_ID), _SLOTS.split(json_dumps(message))


class RedisEnqueue:
    """The API's enqueue: `task_message` pushed with the client the API's event bus uses (the
    broker's Redis), and handed to the execution service (`message`) to push together with the
    runs' QUEUED events (services/executions.py, `queue_runs`)."""

    message = staticmethod(task_message)

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self, execution_id: uuid.UUID, priority: str, request_id: str | None) -> None:
        self.client.lpush(*task_message(execution_id, priority, request_id))
