"""The table of deliveries (models.WebhookDelivery): scheduled with the execution (in the same
transaction, so an acknowledged submission never loses its callback), claimed for one try by a
conditional UPDATE that moves `next_attempt_at` past the try's lease (two workers never try the
same delivery at once; a worker that dies mid-try leaves it due again when the lease ends), and
recorded after each try (delivered, retried later with exponential backoff, or given up)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, insert, select, update

from ...db import Database
from ...models import TERMINAL_STATUSES, Execution, WebhookDelivery, status_values, utcnow
from ..access import execution_access, execution_not_found, shown_to_member
from ..sessions import iso
from .sender import TryResult
from .urls import scrub

DELIVERIES = cast(Table, WebhookDelivery.__table__)
KINDS = ("livecode", "judge0")


@dataclass(frozen=True)
class Callback:
    """What a submission asks for: call `url` when it ends, `kind` saying the body's shape."""

    url: str
    kind: str = "livecode"
    max_attempts: int = 5


def schedule(conn: Any, execution_ids: list[uuid.UUID], owner: str, callback: Callback, now: datetime) -> None:
    """Insert one pending delivery per execution, in the caller's transaction (a Connection or a
    Session). It becomes due when its execution is terminal."""
    if not execution_ids:
        return
    conn.execute(
        insert(DELIVERIES),
        [
            {
                "id": uuid.uuid4(),
                "execution_id": eid,
                "owner": owner,
                "url": callback.url,
                "kind": callback.kind,
                "state": "pending",
                "attempts": 0,
                "max_attempts": callback.max_attempts,
                "next_attempt_at": now,
                "tries": [],
                "created_at": now,
            }
            for eid in execution_ids
        ],
    )


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    execution_id: uuid.UUID
    owner: str
    url: str
    kind: str
    attempts: int
    max_attempts: int
    tries: list[dict[str, Any]]


def claim_due(
    db: Database, lease_s: float, *, execution_ids: list[uuid.UUID] | None = None, limit: int = 50
) -> list[Claimed]:
    """Deliveries due now whose execution is terminal, each leased to the caller for `lease_s`."""
    t, e = DELIVERIES.c, Execution.__table__.c
    now = utcnow()
    q = (
        select(t.id)
        .join(Execution.__table__, e.id == t.execution_id)
        .where(t.state == "pending", t.next_attempt_at <= now, e.status.in_(status_values(TERMINAL_STATUSES)))
        .order_by(t.next_attempt_at)
        .limit(limit)
    )
    if execution_ids is not None:
        q = q.where(t.execution_id.in_(execution_ids))
    with db.read_core(fresh=True) as conn:
        ids = [row[0] for row in conn.execute(q)]
    claimed = []
    lease = now + timedelta(seconds=lease_s)
    for did in ids:
        stmt = (
            update(DELIVERIES)
            .where(t.id == did, t.state == "pending", t.next_attempt_at <= now)
            .values(next_attempt_at=lease)
            .returning(t.id, t.execution_id, t.owner, t.url, t.kind, t.attempts, t.max_attempts, t.tries)
        )
        with db.write_one() as conn:
            row = conn.execute(stmt).first()
        if row is not None:  # another worker took it first otherwise
            claimed.append(
                Claimed(
                    row.id,
                    row.execution_id,
                    row.owner,
                    row.url,
                    row.kind,
                    row.attempts,
                    row.max_attempts,
                    list(row.tries or []),
                )
            )
    return claimed


def record_try(db: Database, claimed: Claimed, result: TryResult, backoff_s: float) -> str:
    """Write a try's outcome; returns the delivery's state after it."""
    now = utcnow()
    attempts = claimed.attempts + 1
    entry = {
        "attempt": attempts,
        "at": iso(now),
        "status_code": result.status_code,
        "error": result.error,
        "duration_ms": result.duration_ms,
    }
    values: dict[str, Any] = {"attempts": attempts, "tries": [*claimed.tries, entry]}
    if result.ok:
        values.update(state="delivered", finished_at=now)
    elif not result.retry or attempts >= claimed.max_attempts:
        values.update(state="failed", finished_at=now)
    else:
        values["next_attempt_at"] = now + timedelta(seconds=backoff_s * 2 ** (attempts - 1))
    t = DELIVERIES.c
    stmt = update(DELIVERIES).where(t.id == claimed.id, t.state == "pending", t.attempts == claimed.attempts)
    with db.write_one() as conn:
        conn.execute(stmt.values(**values))
    return str(values.get("state", "pending"))


def list_deliveries(db: Database, execution_id: uuid.UUID, owner_id: uuid.UUID | None) -> dict[str, Any]:
    """GET /api/v1/executions/{id}/deliveries: every callback of the execution and each try, to
    whoever may see the execution (its session's owner or a member: services/access.py). A
    member sees each callback URL's origin only (access.shown_to_member); the signing secret is in
    no delivery."""
    e, t = Execution.__table__.c, DELIVERIES.c
    q = select(e.user_id).where(e.id == execution_id)
    if owner_id is not None:
        q = q.where(execution_access(owner_id))
    with db.read_core(fresh=True) as conn:
        found = conn.execute(q).first()
        if found is None:
            raise execution_not_found(execution_id)
        rows = conn.execute(select(DELIVERIES).where(t.execution_id == execution_id).order_by(t.created_at)).all()
    owner = owner_id is None or found.user_id == owner_id
    return {
        "execution_id": str(execution_id),
        "deliveries": [
            {
                "delivery_id": str(r.id),
                "url": r.url if owner else shown_to_member(r.url),
                "kind": r.kind,
                "state": r.state,
                "attempts": r.attempts,
                "max_attempts": r.max_attempts,
                "next_attempt_at": iso(r.next_attempt_at) if r.state == "pending" else None,
                "created_at": iso(r.created_at),
                "finished_at": iso(r.finished_at),
                "tries": list(r.tries or []) if owner else [_scrubbed(tr, r.url) for tr in r.tries or []],
            }
            for r in rows
        ],
    }


def _scrubbed(attempt: dict[str, Any], url: str) -> dict[str, Any]:
    return {**attempt, "error": scrub(attempt.get("error"), url)}
