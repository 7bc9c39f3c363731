"""Users, passwords and API keys. No Flask here.

Passwords are hashed with argon2id (argon2-cffi). API keys are random tokens shown once; only
their SHA-256 is stored, so a leaked database does not leak usable keys.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from ..db import Database
from ..errors import ApiError, Conflict, NotFound, ValidationError
from ..models import ApiKey, User, utcnow
from .sessions import iso

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
ROLES = ("user", "admin")
KEY_PREFIX = "lc_"
MAX_KEYS_PER_USER = 100

_hasher = PasswordHasher()
# Verified against when the username is unknown, so a wrong username costs as much time as a
# wrong password and does not reveal which usernames exist.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user id and role."""

    user_id: uuid.UUID
    role: str
    username: str = ""


def check_credentials_shape(username: str, password: str) -> None:
    if not USERNAME_RE.match(username):
        raise ValidationError(
            "username must be 3 to 64 characters: letters, digits, '_', '.' or '-'",
            code="INVALID_USERNAME",
        )
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValidationError(
            f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters", code="INVALID_PASSWORD"
        )


def serialize_user(u: User) -> dict[str, Any]:
    return {"user_id": str(u.id), "username": u.username, "role": u.role,
            "created_at": iso(u.created_at)}


def create_user(db: Database, username: str, password: str, role: str = "user") -> dict[str, Any]:
    """Create a user; 409 USERNAME_TAKEN if the name is in use."""
    check_credentials_shape(username, password)
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}", code="INVALID_ROLE")
    user = User(id=uuid.uuid4(), username=username, password_hash=_hasher.hash(password), role=role,
                created_at=utcnow())
    try:
        with db.write() as s:
            s.add(user)
    except IntegrityError as exc:
        raise Conflict(f"username {username!r} is taken", code="USERNAME_TAKEN") from exc
    return serialize_user(user)


def set_role(db: Database, username: str, role: str) -> bool:
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}", code="INVALID_ROLE")
    with db.write() as s:
        return bool(s.execute(update(User).where(User.username == username).values(role=role)).rowcount)  # type: ignore[attr-defined]


def authenticate(db: Database, username: str, password: str) -> Principal | None:
    """The user if the password matches, else None (same cost either way)."""
    with db.read(fresh=True) as s:
        user = s.scalars(select(User).where(User.username == username)).first()
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        with db.write() as s:
            s.execute(update(User).where(User.id == user.id).values(password_hash=_hasher.hash(password)))
    return Principal(user.id, user.role, user.username)


def get_principal(db: Database, user_id: uuid.UUID) -> Principal | None:
    """The user's current role (a refresh picks up role changes), or None if the user is gone."""
    with db.read(fresh=True) as s:
        row = s.execute(select(User.role, User.username).where(User.id == user_id)).first()
    return Principal(user_id, row.role, row.username) if row else None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(db: Database, user_id: uuid.UUID, name: str) -> dict[str, Any]:
    """A new key; the only time its secret is returned."""
    if len(name) > 100:
        raise ValidationError("name must be at most 100 characters", code="INVALID_FIELD")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=uuid.uuid4(), user_id=user_id, name=name, prefix=key[:12], key_hash=hash_key(key),
                 created_at=utcnow())
    with db.write() as s:
        active = s.execute(
            select(func.count()).select_from(ApiKey).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        ).scalar_one()
        if active >= MAX_KEYS_PER_USER:
            raise ApiError(f"at most {MAX_KEYS_PER_USER} active API keys; revoke one first",
                           code="TOO_MANY_KEYS", status=409)
        s.add(row)
    return {**serialize_key(row), "key": key}


def serialize_key(k: ApiKey) -> dict[str, Any]:
    return {"id": str(k.id), "name": k.name, "prefix": k.prefix, "created_at": iso(k.created_at),
            "revoked_at": iso(k.revoked_at)}


def list_api_keys(db: Database, user_id: uuid.UUID) -> list[dict[str, Any]]:
    with db.read(fresh=True) as s:
        rows = s.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc())).all()
        return [serialize_key(r) for r in rows]


def revoke_api_key(db: Database, user_id: uuid.UUID, key_id: uuid.UUID) -> None:
    """Revoke one of the user's keys; another user's key is 404, as if it did not exist."""
    with db.write() as s:
        revoked = s.execute(
            update(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow()).returning(ApiKey.key_hash)
        ).scalar()
        if revoked is None:
            exists = s.execute(select(ApiKey.id).where(ApiKey.id == key_id, ApiKey.user_id == user_id)).scalar()
            if exists is None:
                raise NotFound(f"API key {key_id} not found", code="API_KEY_NOT_FOUND")
    if revoked is not None:
        _key_cache.drop(revoked)  # after the commit, so no request can cache it again


class _KeyCache:
    """Valid keys seen in the last KEY_CACHE_S seconds, by hash. Looking a key up in the database
    on every request costs more than the rest of an autosave; a server-to-server client sends the
    same key again and again. Only valid keys are kept, so a wrong key is always checked."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> Principal | None:
        with self._lock:
            hit = self._entries.get(key_hash)
            if hit is None or hit[1] < time.monotonic():
                return None
            return hit[0]

    def put(self, key_hash: str, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key_hash] = (principal, time.monotonic() + self.ttl_s)

    def drop(self, key_hash: str) -> None:
        with self._lock:
            self._entries.pop(key_hash, None)


# A revoked key is refused at once by the process that revoked it, and by every other API process
# within this many seconds.
KEY_CACHE_S = 5.0
_key_cache = _KeyCache(KEY_CACHE_S)


def principal_for_key(db: Database, key: str) -> Principal | None:
    """The owner of an unrevoked key (read from the primary, then cached for KEY_CACHE_S)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    digest = hash_key(key)
    cached = _key_cache.get(digest)
    if cached is not None:
        return cached
    with db.read(fresh=True) as s:
        row = s.execute(
            select(User.id, User.role, User.username)
            .join(ApiKey, ApiKey.user_id == User.id)
            .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
        ).first()
    if row is None:
        return None
    principal = Principal(row.id, row.role, row.username)
    _key_cache.put(digest, principal)
    return principal
