"""Dead letters from the worker's side: a task that exhausted its retries is recorded for the
operators (services/dead_letters.py administers them).

A task usually exhausts its retries because the database is down, which is also where dead
letters live. So a dead letter that cannot be written to the database is parked in a Redis list
and moved into the table by the reconciler's next pass once the database answers again. Each
letter carries its id from the start, so moving it twice (a pass that dies between the INSERT and
the removal from Redis) still stores it once.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import Any

from ..models import utcnow
from ..runtime import Runtime
from ..services.dead_letters import store_dead_letter

log = logging.getLogger(__name__)

PENDING_KEY = "livecode:dead-letters:pending"


def _letter(execution_id: str, task_name: str, exc: BaseException, attempts: int,
            first_failed_at: datetime | None) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": str(uuid.uuid4()),
        "execution_id": str(uuid.UUID(str(execution_id))),
        "task_name": task_name,
        "error": f"{type(exc).__name__}: {exc}"[:4000],
        "attempts": attempts,
        "first_failed_at": (first_failed_at or now).isoformat(),
        "created_at": now.isoformat(),
    }


def record_dead_letter(
    rt: Runtime, execution_id: str, task_name: str, exc: BaseException, attempts: int,
    first_failed_at: datetime | None = None,
) -> None:
    """Keep a task that will not be tried again. Never raises: it runs in Celery's failure hook."""
    try:
        letter = _letter(execution_id, task_name, exc, attempts, first_failed_at)
    except ValueError:
        log.error("dead letter for a task without an execution id", extra={"execution_id": str(execution_id)})
        return
    extra = {"execution_id": letter["execution_id"], "error": letter["error"], "attempts": attempts,
             "error_id": letter["id"]}
    try:
        store_dead_letter(rt, letter)
        log.error("task dead-lettered", extra=extra)
        return
    except Exception:  # noqa: BLE001 - most likely the database is what failed; park it in Redis
        log.warning("could not write the dead letter to the database", extra=extra, exc_info=True)
    if rt.redis is None:
        # Embedded mode: the row stays QUEUED and the reconciler queues it again.
        return
    try:
        rt.redis.rpush(PENDING_KEY, json.dumps(letter))
        log.error("task dead-lettered (parked until the database is back)", extra=extra)
    except Exception:  # noqa: BLE001 - both stores down; the QUEUED row is re-run by the reconciler
        log.exception("could not park the dead letter either", extra=extra)


def drain_pending(rt: Runtime) -> int:
    """Move dead letters parked in Redis into the database. Returns how many were stored."""
    if rt.redis is None:
        return 0
    stored = 0
    parked: list[bytes] = rt.redis.lrange(PENDING_KEY, 0, -1)  # type: ignore[assignment]
    for raw in parked:
        try:
            letter = json.loads(raw)
            if store_dead_letter(rt, letter):
                stored += 1
        except (ValueError, KeyError, TypeError):
            log.error("dropping an unreadable parked dead letter: %r", raw[:200])
        # Removed only after the INSERT committed (or the letter proved unreadable); a database
        # error propagates and leaves it parked for the next pass.
        rt.redis.lrem(PENDING_KEY, 1, raw)  # type: ignore[arg-type]
    return stored
