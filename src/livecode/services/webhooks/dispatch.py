"""Making deliveries: claim what is due, build each body from the execution row, sign, send one
try, record it. A worker calls `deliver_due` for the executions it just finished (after the
terminal write, on a thread of its own: never on the run's path) and periodically for all
(retries, and whatever a crashed worker left)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, cast

from sqlalchemy import Table, select

from ...config import Settings
from ...db import Database
from ...models import Execution, Judge0Submission, Source
from ..executions import serialize_execution
from ..judge0.serialize import DEFAULT_FIELDS, serialize
from . import signing
from .sender import TryResult, send
from .store import Claimed, claim_due, record_try

log = logging.getLogger(__name__)

EXECUTIONS = cast(Table, Execution.__table__)
JUDGE0 = cast(Table, Judge0Submission.__table__)


def lease_s(settings: Settings) -> float:
    """How long a claimed try is the claimer's: longer than a try can take (connect, send, answer)."""
    return settings.webhook_timeout_s * 3 + 5


def build_body(db: Database, claimed: Claimed) -> tuple[str, bytes] | None:
    """(method, body) of a delivery, from its execution's row; None if the execution is gone."""
    e = EXECUTIONS.c
    if claimed.kind == "judge0":
        j = JUDGE0.c
        q = (
            select(
                *EXECUTIONS.columns,
                j.language_id,
                j.expected_output,
                j.options,
                select(Source.content).where(Source.hash == e.source_hash).scalar_subquery().label("source_code"),
            )
            .join(JUDGE0, j.execution_id == e.id)
            .where(e.id == claimed.execution_id)
        )
    else:
        q = select(EXECUTIONS).where(e.id == claimed.execution_id)
    with db.read_core(fresh=True) as conn:
        row = conn.execute(q).first()
    if row is None:
        return None
    if claimed.kind == "judge0":  # Judge0's callback: a PUT of the default fields, base64-encoded
        return "PUT", json.dumps(serialize(row, DEFAULT_FIELDS, True)).encode()
    payload = {"event": "execution.finished", "execution": serialize_execution(row)}  # type: ignore[arg-type]
    return "POST", json.dumps(payload).encode()


def deliver(db: Database, settings: Settings, claimed: Claimed) -> str:
    """One try of one claimed delivery; returns its state after the try."""
    built = build_body(db, claimed)
    if built is None:
        result = TryResult(False, None, "the execution no longer exists", 0, retry=False)
    else:
        method, body = built
        timestamp = int(time.time())
        secret = signing.secret_for(db, claimed.owner)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "LiveCode-Webhooks/1",
            signing.TIMESTAMP_HEADER: str(timestamp),
            signing.SIGNATURE_HEADER: signing.signature(secret, timestamp, body),
            "X-LiveCode-Delivery": str(claimed.id),
            "X-LiveCode-Execution": str(claimed.execution_id),
        }
        result = send(
            claimed.url, body, headers, method=method, allow=settings.webhook_allow, timeout=settings.webhook_timeout_s
        )
    state = record_try(db, claimed, result, settings.webhook_backoff_s)
    log.info(
        "webhook try",
        extra={
            "execution_id": str(claimed.execution_id),
            "delivery_id": str(claimed.id),
            "attempt": claimed.attempts + 1,
            "state": state,
            "status_code": result.status_code,
            "error": result.error,
        },
    )
    return state


def deliver_due(
    db: Database, settings: Settings, execution_ids: list[uuid.UUID] | None = None, pool: Any = None
) -> int:
    """Claim and make the due deliveries (of `execution_ids`, or all); each try on `pool` (an
    executor) when given. Returns how many were claimed."""
    claimed = claim_due(db, lease_s(settings), execution_ids=execution_ids)
    for item in claimed:
        if pool is not None:
            pool.submit(_safe_deliver, db, settings, item)
        else:
            _safe_deliver(db, settings, item)
    return len(claimed)


def _safe_deliver(db: Database, settings: Settings, item: Claimed) -> None:
    try:
        deliver(db, settings, item)
    except Exception:  # noqa: BLE001 - the lease ends and the sweep tries again
        log.warning("webhook delivery failed", extra={"delivery_id": str(item.id)}, exc_info=True)
