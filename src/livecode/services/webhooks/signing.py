"""Each user's webhook secret and the signature of a delivery.

`X-LiveCode-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under the secret>`, with
`X-LiveCode-Timestamp: <unix seconds>` (the receiver recomputes it over the raw body, compares
in constant time, and refuses an old timestamp to stop replays)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ...db import Database
from ...models import WebhookSecret, utcnow

SIGNATURE_HEADER = "X-LiveCode-Signature"
TIMESTAMP_HEADER = "X-LiveCode-Timestamp"
LOCAL_OWNER = "local"  # the single user of a service without accounts


def owner_key(user_id: uuid.UUID | None) -> str:
    return str(user_id) if user_id is not None else LOCAL_OWNER


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: int, body: bytes, header: str) -> bool:
    """What a receiver does (used by the tests and shown in docs/compat.md)."""
    return hmac.compare_digest(signature(secret, timestamp, body), header)


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def rotate_secret(db: Database, owner: str) -> dict[str, str]:
    """A new secret for `owner` (the old one stops signing at once): shown only in this answer."""
    secret, now = _new_secret(), utcnow()
    with db.write() as s:
        done = s.execute(
            update(WebhookSecret).where(WebhookSecret.owner == owner).values(secret=secret, created_at=now)
        ).rowcount  # type: ignore[attr-defined]
        if not done:
            s.add(WebhookSecret(owner=owner, secret=secret, created_at=now))
    return {"secret": secret, "created_at": now.isoformat()}


def secret_info(db: Database, owner: str) -> dict[str, object]:
    with db.read(fresh=True) as s:
        row = s.execute(select(WebhookSecret.created_at).where(WebhookSecret.owner == owner)).first()
    created = row[0] if row else None
    return {
        "exists": row is not None,
        "created_at": (created.isoformat() if created.tzinfo else created.isoformat() + "+00:00") if created else None,
    }


def secret_for(db: Database, owner: str) -> str:
    """The owner's secret, made on first use (the owner reads it by rotating: POST
    /api/v1/webhooks/secret). Two workers making it at once agree on one (insert or nothing)."""
    with db.read(fresh=True) as s:
        found = s.execute(select(WebhookSecret.secret).where(WebhookSecret.owner == owner)).scalar()
    if found:
        return str(found)
    with db.write() as s:
        dialect = s.get_bind().dialect.name
        ins = pg_insert if dialect == "postgresql" else sqlite_insert
        s.execute(
            ins(WebhookSecret)
            .values(owner=owner, secret=_new_secret(), created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["owner"])
        )
        return str(s.execute(select(WebhookSecret.secret).where(WebhookSecret.owner == owner)).scalar_one())
