"""Code sessions: create, read, autosave with optimistic locking, delete. No Flask here."""

from __future__ import annotations

import functools
import uuid
from typing import Any

from sqlalchemy import bindparam, delete, insert, literal, select, update

from ..config import Settings
from ..db import Database
from ..errors import Conflict
from ..infra.languages import LanguageCatalog
from ..models import CodeSession, utcnow
from . import storage
from .access import Need, grants, not_found, refuse, role_of, session_access
from .validation import check_language, check_source

__all__ = ["not_found"]  # re-exported: the rest of the services take it from here


def session_etag(session_id: uuid.UUID, version: int) -> str:
    return f'"{session_id}-v{version}"'


def serialize_session(s: CodeSession) -> dict[str, Any]:
    return {
        "session_id": str(s.id),
        "id": str(s.id),
        "language": s.language,
        "source_code": s.source_code,
        "status": s.status,
        "version": s.version,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
    }


def iso(value: Any) -> str | None:
    if value is None:
        return None
    text = value.isoformat()
    # SQLite hands back naive datetimes; every timestamp we store is UTC.
    return text if value.tzinfo else text + "+00:00"


def _allowed(stmt: Any, user_id: uuid.UUID | None, need: Need) -> Any:
    """`stmt` narrowed to what the caller may do (services/access.py); no rule without accounts."""
    return stmt.where(session_access(need, user_id)) if user_id is not None else stmt


def create_session(
    db: Database, *, language: str, source_code: str, owner_id: uuid.UUID | None, max_bytes: int,
    settings: Settings | None = None, languages: LanguageCatalog | None = None,
) -> dict[str, Any]:
    """Create a session; with `settings`, refused (429) when the owner has `max_sessions` already.
    `languages`: what can run (validation.check_language)."""
    check_language(language, languages)
    check_source(source_code, max_bytes)
    now = utcnow()
    row = CodeSession(
        id=uuid.uuid4(),
        user_id=owner_id,
        language=language,
        source_code=source_code,
        status="ACTIVE",
        version=1,
        created_at=now,
        updated_at=now,
    )
    under_cap = storage.under_session_cap(settings, owner_id) if settings is not None else None
    if under_cap is None:
        with db.write() as s:
            s.add(row)
        return serialize_session(row)
    # One INSERT ... SELECT ... WHERE <count below the cap>: the check and the insert are one
    # statement (on SQLite, under the write lock).
    values = {c: getattr(row, c) for c in ("id", "user_id", "language", "source_code", "status", "version",
                                            "created_at", "updated_at")}
    table = CodeSession.__table__
    pick = select(*(literal(v, table.c[c].type) for c, v in values.items())).where(under_cap)
    with db.write() as s:
        # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... SELECT that inserted nothing.
        inserted = s.execute(insert(CodeSession).from_select(list(values), pick).returning(CodeSession.id)).first()
    if inserted is None:
        assert settings is not None
        with db.read(fresh=True) as s:
            count = storage.stored_sessions(s, settings, owner_id)
        raise storage.session_quota_error(settings, count)
    return serialize_session(row)


def get_session(db: Database, session_id: uuid.UUID, owner_id: uuid.UUID | None, fresh: bool = False) -> dict[str, Any]:
    with db.read(fresh=fresh) as s:
        row = s.scalars(_allowed(select(CodeSession).where(CodeSession.id == session_id), owner_id, Need.VIEW)).first()
        if row is None:
            raise not_found(session_id)
        return serialize_session(row)


@functools.cache
def _autosave_statement(owned: bool, versioned: bool) -> Any:
    """The autosave UPDATE, built once per shape: autosave is the hottest write, and building the
    statement anew each time cost about as much CPU as running it."""
    stmt = update(CodeSession).where(CodeSession.id == bindparam("sid"))
    if owned:  # the owner or an editor (services/access.py)
        stmt = stmt.where(session_access(Need.EDIT, bindparam("owner", type_=CodeSession.user_id.type)))
    if versioned:
        stmt = stmt.where(CodeSession.version == bindparam("expected"))
    return stmt.values(
        source_code=bindparam("src"), version=CodeSession.version + 1, updated_at=bindparam("now")
    ).returning(CodeSession.version, CodeSession.updated_at)


def autosave(
    db: Database,
    session_id: uuid.UUID,
    *,
    source_code: str,
    expected_version: int | None,
    owner_id: uuid.UUID | None,
    max_bytes: int,
) -> dict[str, Any]:
    """One conditional UPDATE: applied only if `expected_version` (when given) is still current."""
    check_source(source_code, max_bytes)
    params = {"sid": session_id, "owner": owner_id, "expected": expected_version, "src": source_code, "now": utcnow()}
    stmt = _autosave_statement(owner_id is not None, expected_version is not None)
    with db.write_one() as conn:
        saved = conn.execute(stmt, params).first()
    if saved is not None:
        return {
            "session_id": str(session_id),
            "status": "ACTIVE",
            "version": saved.version,
            "updated_at": iso(saved.updated_at),
        }
    # Only the failure path reads: either the session is not there (or not the caller's to see,
    # or to edit), or the version moved on under the client.
    if owner_id is not None:
        role = role_of(db, session_id, owner_id)
        if role is None or not grants(role, Need.EDIT):
            refuse(session_id, role, Need.EDIT)
    with db.read(fresh=True) as s:
        current = s.execute(select(CodeSession.version).where(CodeSession.id == session_id)).scalar()
    if current is None:
        raise not_found(session_id)
    raise Conflict(
        f"version conflict: you edited version {expected_version}, the current version is {current}",
        code="VERSION_CONFLICT",
        details={"current_version": current, "your_version": expected_version},
    )


def delete_session(db: Database, session_id: uuid.UUID, owner_id: uuid.UUID | None) -> None:
    with db.write() as s:
        result = s.execute(_allowed(delete(CodeSession).where(CodeSession.id == session_id), owner_id, Need.OWN))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        refuse(session_id, role_of(db, session_id, owner_id), Need.OWN)
