"""Idempotency keys: the same key and body within 24 hours gives the first response, once.

A request first claims its key with a pending row (the primary key makes the claim atomic across
processes), does the work, then stores the response. A racing twin finds the claim and waits for
the stored response instead of creating a second resource.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from ..db import Database
from ..errors import ApiError, Conflict, Unprocessable, ValidationError
from ..models import IdempotencyRecord, utcnow

TTL = timedelta(hours=24)
PENDING = 0  # status_code of a claimed key whose response is not stored yet
ABANDONED_AFTER = timedelta(seconds=60)
WAIT_S = 10.0

Work = Callable[[], tuple[dict[str, Any], int]]


def request_fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_key(key: str) -> None:
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise ValidationError(
            "Idempotency-Key must be 1 to 255 printable characters", code="INVALID_IDEMPOTENCY_KEY"
        )


def run_once(db: Database, scope: str, key: str, body: Any, work: Work) -> tuple[dict[str, Any], int]:
    check_key(key)
    fingerprint = request_fingerprint(body)
    deadline = time.monotonic() + WAIT_S
    while True:
        if _claim(db, scope, key, fingerprint):
            break
        stored = _lookup(db, scope, key)
        if stored is None:
            continue  # expired or abandoned and removed: claim again
        if stored.request_hash != fingerprint:
            raise Unprocessable(
                "this Idempotency-Key was used with a different request body",
                code="IDEMPOTENCY_KEY_REUSED",
            )
        if stored.status_code != PENDING:
            return stored.response_body, stored.status_code
        if time.monotonic() > deadline:
            raise Conflict("a request with this Idempotency-Key is still in progress",
                           code="IDEMPOTENCY_IN_PROGRESS")
        time.sleep(0.05)
    try:
        response, status = work()
    except BaseException:
        _release(db, scope, key)
        raise
    with db.write() as s:
        s.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
            .values(status_code=status, response_body=response)
        )
    return response, status


def _claim(db: Database, scope: str, key: str, fingerprint: str) -> bool:
    try:
        with db.write() as s:
            s.add(IdempotencyRecord(scope=scope, key=key, request_hash=fingerprint,
                                    status_code=PENDING, response_body={}, created_at=utcnow()))
        return True
    except IntegrityError:
        return False


def _lookup(db: Database, scope: str, key: str) -> IdempotencyRecord | None:
    with db.read(fresh=True) as s:
        row = s.scalars(
            select(IdempotencyRecord).where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
        ).first()
    if row is None:
        return None
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=utcnow().tzinfo)
    age = utcnow() - created
    if age > TTL or (row.status_code == PENDING and age > ABANDONED_AFTER):
        with db.write() as s:
            s.execute(delete(IdempotencyRecord).where(
                IdempotencyRecord.scope == scope, IdempotencyRecord.key == key,
                IdempotencyRecord.created_at == row.created_at))
        return None
    return row


def _release(db: Database, scope: str, key: str) -> None:
    try:
        with db.write() as s:
            s.execute(delete(IdempotencyRecord).where(
                IdempotencyRecord.scope == scope, IdempotencyRecord.key == key,
                IdempotencyRecord.status_code == PENDING))
    except Exception:  # noqa: BLE001 - an abandoned claim expires by itself
        pass


def purge_expired(db: Database) -> int:
    with db.write() as s:
        return int(s.execute(delete(IdempotencyRecord).where(
            IdempotencyRecord.created_at < utcnow() - TTL)).rowcount)  # type: ignore[attr-defined]


__all__ = ["run_once", "purge_expired", "ApiError"]
