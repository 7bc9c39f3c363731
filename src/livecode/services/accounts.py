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
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..db import Database
from ..errors import ApiError, Conflict, NotFound, ValidationError
from ..models import ApiKey, Invitation, RefreshToken, User, utcnow
from .sessions import iso

# Checked after normalisation (NFKC, case-fold), so look-alikes and case variants are one name.
USERNAME_RE = re.compile(r"[a-z0-9_.-]{3,64}")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
ROLES = ("user", "admin")
KEY_PREFIX = "lc_"
MAX_KEYS_PER_USER = 100



@lru_cache(maxsize=4)
def _hashing(time_cost: int, memory_kib: int) -> tuple[PasswordHasher, str]:
    """The Argon2id hasher of these costs (settings LIVECODE_PASSWORD_HASH_*), and a hash to verify
    against when the username is unknown, so a wrong username costs as much time as a wrong
    password and does not reveal which usernames exist."""
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
    return hasher, hasher.hash(secrets.token_hex(16))


def _hasher_of(db: Database) -> tuple[PasswordHasher, str]:
    return _hashing(db.settings.password_hash_time_cost, db.settings.password_hash_memory_kib)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user id and role."""

    user_id: uuid.UUID
    role: str
    username: str = ""
    token_version: int = 0
    callback_url: str | None = None  # the API key's default webhook (services/webhooks)


def normalize_username(raw: str) -> str:
    """The one spelling of a username: NFKC (full-width and compatibility forms fold to ASCII)
    then case-folded, so 'Alice', 'ALICE' and 'ａｌｉｃｅ' are the same account."""
    return unicodedata.normalize("NFKC", raw).casefold()


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    # zxcvbn's list of the 30,000 most common passwords from real leaks.
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def check_username(username: str) -> str:
    """The normalised username, or 400 INVALID_USERNAME."""
    if any(unicodedata.category(ch)[0] == "C" for ch in username):
        raise ValidationError("username must not contain control or invisible characters",
                              code="INVALID_USERNAME")
    name = normalize_username(username)
    if not USERNAME_RE.fullmatch(name):
        raise ValidationError(
            "username must be 3 to 64 characters: letters, digits, '_', '.' or '-'",
            code="INVALID_USERNAME",
        )
    return name


def check_password(password: str, username: str = "", min_length: int = MIN_PASSWORD) -> None:
    if not min_length <= len(password) <= MAX_PASSWORD:
        raise ValidationError(
            f"password must be {min_length} to {MAX_PASSWORD} characters", code="INVALID_PASSWORD"
        )
    folded = password.casefold()
    if folded in _common_passwords() or (username and folded == username):
        raise ValidationError("that password is among the most common ones (or is the username); "
                              "choose another, e.g. a few unrelated words", code="COMMON_PASSWORD")


def check_credentials_shape(username: str, password: str, min_length: int = MIN_PASSWORD) -> str:
    """The normalised username once both are acceptable."""
    name = check_username(username)
    check_password(password, name, min_length)
    return name


def serialize_user(u: User) -> dict[str, Any]:
    return {"user_id": str(u.id), "username": u.username, "role": u.role,
            "created_at": iso(u.created_at)}


def create_user(
    db: Database, username: str, password: str, role: str = "user", *, min_password: int = MIN_PASSWORD,
    invitation: str | None = None,
) -> dict[str, Any]:
    """Create a user; 409 USERNAME_TAKEN if the name is in use. With `invitation`, the code is
    used up in the same transaction (400 INVALID_INVITATION if it is unknown, used or expired)."""
    username = check_credentials_shape(username, password, min_password)
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}", code="INVALID_ROLE")
    user = User(id=uuid.uuid4(), username=username, password_hash=_hasher_of(db)[0].hash(password), role=role,
                created_at=utcnow())
    try:
        with db.write() as s:
            s.add(user)
            s.flush()
            if invitation is not None:
                used = s.execute(
                    update(Invitation)
                    .where(Invitation.code_hash == hash_key(invitation), Invitation.used_at.is_(None),
                           Invitation.expires_at > utcnow())
                    .values(used_at=utcnow(), used_by=user.id)
                ).rowcount  # type: ignore[attr-defined]
                if not used:
                    raise ValidationError("the invitation code is unknown, used or expired",
                                          code="INVALID_INVITATION")
    except IntegrityError as exc:
        raise Conflict(f"username {username!r} is taken", code="USERNAME_TAKEN") from exc
    return serialize_user(user)


def create_invitation(db: Database, created_by: uuid.UUID | None, days: int = 7) -> dict[str, Any]:
    """A one-time registration code (only its hash is stored)."""
    code = "inv_" + secrets.token_urlsafe(24)
    row = Invitation(code_hash=hash_key(code), created_by=created_by, created_at=utcnow(),
                     expires_at=utcnow() + timedelta(days=days))
    with db.write() as s:
        s.add(row)
    return {"code": code, "expires_at": iso(row.expires_at)}


def delete_user(db: Database, username: str) -> bool:
    """Delete an account and everything it owns (sessions, executions, keys, tokens)."""
    with db.write() as s:
        gone = s.execute(delete(User).where(User.username == normalize_username(username))).rowcount  # type: ignore[attr-defined]
    _principal_cache.clear()
    return bool(gone)


def set_role(db: Database, username: str, role: str) -> bool:
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}", code="INVALID_ROLE")
    with db.write() as s:
        done = bool(s.execute(update(User).where(User.username == normalize_username(username))
                              .values(role=role)).rowcount)  # type: ignore[attr-defined]
    _principal_cache.clear()
    return done


def _find_user(db: Database, username: str) -> User | None:
    with db.read(fresh=True) as s:
        return s.scalars(select(User).where(User.username == normalize_username(username))).first()


def authenticate(db: Database, username: str, password: str) -> Principal | None:
    """The user if the password matches, else None (same cost either way)."""
    user = _find_user(db, username)
    hasher, dummy = _hasher_of(db)
    try:
        hasher.verify(user.password_hash if user else dummy, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if hasher.check_needs_rehash(user.password_hash):
        with db.write() as s:
            s.execute(update(User).where(User.id == user.id).values(password_hash=hasher.hash(password)))
    return Principal(user.id, user.role, user.username, user.token_version)


def change_password(db: Database, user_id: uuid.UUID, current: str, new: str,
                    min_length: int = MIN_PASSWORD) -> Principal:
    """Set a new password and end every session: all access and refresh tokens issued so far are
    refused from now on (token_version bump; refresh families revoked). API keys stay valid:
    they are separate credentials, listed and revoked at /api/v1/api-keys."""
    with db.read(fresh=True) as s:
        user = s.get(User, user_id)
    if user is None:
        raise AccountGone()
    hasher = _hasher_of(db)[0]
    try:
        hasher.verify(user.password_hash, current)
    except (VerificationError, InvalidHashError) as exc:
        raise ApiError("the current password is wrong", code="INVALID_CREDENTIALS", status=403) from exc
    check_password(new, user.username, min_length)
    with db.write() as s:
        version = s.execute(
            update(User).where(User.id == user_id)
            .values(password_hash=hasher.hash(new), token_version=User.token_version + 1)
            .returning(User.token_version)
        ).scalar_one()
        s.execute(update(RefreshToken).where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
                  .values(revoked_at=utcnow()))
    _principal_cache.drop_user(user_id)
    return Principal(user.id, user.role, user.username, version)


class AccountGone(ApiError):
    status = 401
    code = "ACCOUNT_GONE"

    def __init__(self, message: str = "the account no longer exists", **kw: Any) -> None:
        super().__init__(message, **kw)


class TokenRevoked(ApiError):
    status = 401
    code = "TOKEN_REVOKED"


# ---- refresh tokens: rotation with reuse detection ----------------------------------------


def record_refresh(db: Database, jti: str, user_id: uuid.UUID, family_id: uuid.UUID, expires_at: datetime) -> None:
    with db.write() as s:
        s.add(RefreshToken(jti=jti, user_id=user_id, family_id=family_id, issued_at=utcnow(),
                           expires_at=expires_at))


def use_refresh(db: Database, jti: str, user_id: uuid.UUID, token_version: int) -> tuple[Principal, uuid.UUID]:
    """Use up a refresh token: (the user as of now, its family) to issue the next one. A token
    that was already used is a stolen copy or a replay: its whole family is revoked."""
    now = utcnow()
    with db.write() as s:
        row = s.execute(
            update(RefreshToken)
            .where(RefreshToken.jti == jti, RefreshToken.user_id == user_id, RefreshToken.used_at.is_(None),
                   RefreshToken.revoked_at.is_(None), RefreshToken.expires_at > now)
            .values(used_at=now).returning(RefreshToken.family_id)
        ).first()
        if row is None:
            known = s.execute(select(RefreshToken.family_id, RefreshToken.used_at, RefreshToken.revoked_at)
                              .where(RefreshToken.jti == jti, RefreshToken.user_id == user_id)).first()
            if known is not None and known.used_at is not None and known.revoked_at is None:
                s.execute(update(RefreshToken)
                          .where(RefreshToken.family_id == known.family_id, RefreshToken.revoked_at.is_(None))
                          .values(revoked_at=now))
                reused = True
            else:
                reused = False
        user = s.execute(select(User.role, User.username, User.token_version).where(User.id == user_id)).first()
    if row is None:
        if reused:
            _principal_cache.drop_user(user_id)
            raise TokenRevoked("this refresh token was already used: as a precaution every token of this "
                               "sign-in is revoked; sign in again", code="TOKEN_REUSED")
        raise TokenRevoked("the refresh token has been revoked or has expired; sign in again")
    if user is None:
        raise AccountGone()
    if user.token_version != token_version:
        raise TokenRevoked("the password was changed since this token was issued; sign in again")
    return Principal(user_id, user.role, user.username, user.token_version), row.family_id


def revoke_family(db: Database, user_id: uuid.UUID, family_id: uuid.UUID) -> None:
    with db.write() as s:
        s.execute(update(RefreshToken)
                  .where(RefreshToken.family_id == family_id, RefreshToken.user_id == user_id,
                         RefreshToken.revoked_at.is_(None))
                  .values(revoked_at=utcnow()))
    _principal_cache.drop_user(user_id)


def family_of(db: Database, jti: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    with db.read(fresh=True) as s:
        row = s.execute(select(RefreshToken.user_id, RefreshToken.family_id).where(RefreshToken.jti == jti)).first()
    return (row.user_id, row.family_id) if row else None


# ---- the principal behind an access token, checked at request time -------------------------


class _PrincipalCache:
    """Who an access token's (user, token version, sign-in family) is now, for a few seconds: a
    demoted, deleted or signed-out user loses access within PRINCIPAL_CACHE_S everywhere, at
    once on the process that made the change, without a database read on every request."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: dict[tuple[uuid.UUID, int, uuid.UUID | None], tuple[Principal | None, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[uuid.UUID, int, uuid.UUID | None]) -> tuple[Principal | None] | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or hit[1] < time.monotonic():
                return None
            return (hit[0],)

    def put(self, key: tuple[uuid.UUID, int, uuid.UUID | None], principal: Principal | None) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (principal, time.monotonic() + self.ttl_s)

    def drop_user(self, user_id: uuid.UUID) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == user_id]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


PRINCIPAL_CACHE_S = 5.0
_principal_cache = _PrincipalCache(PRINCIPAL_CACHE_S)


def principal_for_token(db: Database, user_id: uuid.UUID, token_version: int,
                        family_id: uuid.UUID | None) -> Principal | None:
    """The user behind a valid access token as of now (role from the database), or None if the
    account is gone, the password changed since, or that sign-in was ended (logout, reuse)."""
    key = (user_id, token_version, family_id)
    hit = _principal_cache.get(key)
    if hit is not None:
        return hit[0]
    revoked = exists().where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_not(None))
    with db.read(fresh=True) as s:
        row = s.execute(
            select(User.role, User.username, User.token_version, revoked.label("revoked")).where(User.id == user_id)
        ).first()
    principal = None
    if row is not None and row.token_version == token_version and not (family_id and row.revoked):
        principal = Principal(user_id, row.role, row.username, token_version)
    _principal_cache.put(key, principal)
    return principal


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(
    db: Database, user_id: uuid.UUID, name: str, expires_in_days: int | None = None,
    callback_url: str | None = None,
) -> dict[str, Any]:
    """A new key; the only time its secret is returned. With `expires_in_days` it stops working then."""
    if len(name) > 100:
        raise ValidationError("name must be at most 100 characters", code="INVALID_FIELD")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    expires = now + timedelta(days=expires_in_days) if expires_in_days else None
    row = ApiKey(id=uuid.uuid4(), user_id=user_id, name=name, prefix=key[:12], key_hash=hash_key(key),
                 created_at=now, expires_at=expires, callback_url=callback_url)
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
            "revoked_at": iso(k.revoked_at), "expires_at": iso(k.expires_at), "callback_url": k.callback_url}


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

    def put(self, key_hash: str, principal: Principal, ttl_s: float | None = None) -> None:
        ttl = self.ttl_s if ttl_s is None else max(0.0, min(ttl_s, self.ttl_s))
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key_hash] = (principal, time.monotonic() + ttl)

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
            select(User.id, User.role, User.username, User.token_version, ApiKey.expires_at, ApiKey.callback_url)
            .join(ApiKey, ApiKey.user_id == User.id)
            .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None),
                   or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > utcnow()))
        ).first()
    if row is None:
        return None
    principal = Principal(row.id, row.role, row.username, row.token_version, row.callback_url)
    ttl = None
    if row.expires_at is not None:  # never cached past its expiry
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=utcnow().tzinfo)
        ttl = (expires - utcnow()).total_seconds()
    _key_cache.put(digest, principal, ttl)
    return principal
