"""What the history API does (issue 15, part 1): list, read, diff, checkpoint, restore. No Flask.

Access is the session's (services/access.py): the owner and its members may read the history, the
owner and editors checkpoint and restore; anyone else gets 404, a viewer asking to write 403.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update

from ..config import Settings
from ..db import Database
from ..errors import NotFound
from ..models import CodeSession, SessionVersion, utcnow
from . import history, programs
from .access import Need, refuse, role_of
from .sessions import _allowed, _conflict, iso, not_found


def _session(db: Database, conn: Any, session_id: uuid.UUID, owner_id: uuid.UUID | None, need: Need) -> Any:
    row = conn.execute(
        _allowed(
            select(
                CodeSession.id,
                CodeSession.language,
                CodeSession.source_code,
                CodeSession.files,
                CodeSession.entry,
                CodeSession.version,
                CodeSession.user_id,
            ).where(CodeSession.id == session_id),
            owner_id,
            need,
        )
    ).first()
    if row is None:
        refuse(session_id, role_of(db, session_id, owner_id), need)
    return row


def _version(conn: Any, session_id: uuid.UUID, number: int) -> Any:
    t = SessionVersion.__table__.c
    row = conn.execute(select(SessionVersion.__table__).where(t.session_id == session_id, t.number == number)).first()
    if row is None:
        raise NotFound(
            f"session {session_id} has no version {number}", code="VERSION_NOT_FOUND", details={"version": number}
        )
    return row


def list_versions(
    db: Database, session_id: uuid.UUID, owner_id: uuid.UUID | None, page: int, per_page: int
) -> dict[str, Any]:
    """A page of the session's versions, newest first."""
    with db.read(fresh=True) as s:
        _session(db, s, session_id, owner_id, Need.VIEW)
        total = history.count_versions(s, session_id)
        rows = s.scalars(
            select(SessionVersion)
            .where(SessionVersion.session_id == session_id)
            .order_by(SessionVersion.number.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        ).all()
        return {
            "items": [history.serialize_version(v) for v in rows],
            "page": page,
            "per_page": per_page,
            "total": total,
        }


def get_version(db: Database, session_id: uuid.UUID, number: int, owner_id: uuid.UUID | None) -> dict[str, Any]:
    """One version with its content: files, entry, and source_code (the entry's content)."""
    with db.read(fresh=True) as s:
        sess = _session(db, s, session_id, owner_id, Need.VIEW)
        v = _version(s, session_id, number)
        files = history.load_files(s, v.set_hash)
        entry = s.execute(select(history.FileSet.entry).where(history.FileSet.hash == v.set_hash)).scalar_one()
    program = programs.Program(tuple(files), entry)
    return {
        **history.serialize_version(v),
        "session_id": str(session_id),
        "language": sess.language,
        "source_code": program.content(entry) or "",
        **programs.as_json(program),
    }


def diff_versions(db: Database, session_id: uuid.UUID, a: int, b: int, owner_id: uuid.UUID | None) -> dict[str, Any]:
    """Version a → version b, file by file (see history.unified_diff)."""
    with db.read(fresh=True) as s:
        _session(db, s, session_id, owner_id, Need.VIEW)
        va, vb = _version(s, session_id, a), _version(s, session_id, b)
        fa, fb = history.load_files(s, va.set_hash), history.load_files(s, vb.set_hash)
        sets = select(history.FileSet.hash, history.FileSet.entry).where(
            history.FileSet.hash.in_([va.set_hash, vb.set_hash])
        )
        entries = {r.hash: r.entry for r in s.execute(sets)}
    return {
        "session_id": str(session_id),
        "from": a,
        "to": b,
        "entry_from": entries[va.set_hash],
        "entry_to": entries[vb.set_hash],
        "files": history.unified_diff(fa, fb),
    }


def checkpoint(
    db: Database, session_id: uuid.UUID, owner_id: uuid.UUID | None, label: str | None, author: uuid.UUID | None = None
) -> dict[str, Any]:
    """A version of the session as it is now (always a new one: it is asked for)."""
    now = utcnow()
    with db.write_core() as conn:
        sess = _session(db, conn, session_id, owner_id, Need.EDIT)
        number = history.record(
            conn,
            session_id,
            history.ref_of_row(sess),
            reason="checkpoint",
            author=author or owner_id or sess.user_id,
            now=now,
            label=label,
        )
        if number is None:
            raise not_found(session_id)
        v = _version(conn, session_id, number)
        return history.serialize_version(v)


def restore(
    db: Database,
    session_id: uuid.UUID,
    number: int,
    *,
    expected_version: int,
    owner_id: uuid.UUID | None,
    settings: Settings,
    author: uuid.UUID | None = None,
) -> dict[str, Any]:
    """Make version `number` the session's code, applied only if `expected_version` is still the
    session's version (409 VERSION_CONFLICT otherwise, and nothing changes). The code it replaces
    is kept first as a version of reason `restore`."""
    now = utcnow()
    with db.write_core() as conn:
        sess = _session(db, conn, session_id, owner_id, Need.EDIT)
        v = _version(conn, session_id, number)
        entry = conn.execute(select(history.FileSet.entry).where(history.FileSet.hash == v.set_hash)).scalar_one()
        target = programs.Program(tuple(history.load_files(conn, v.set_hash)), entry)
        if sess.version != expected_version:
            raise _conflict(expected_version, sess.version)
        replaced = history.ref_of_row(sess)
        history.store_set(conn, replaced, now)  # before the session row's lock (see history.record)
        saved = conn.execute(
            update(CodeSession)
            .where(CodeSession.id == session_id, CodeSession.version == expected_version)
            .values(**programs.session_columns(target, sess.language), version=CodeSession.version + 1, updated_at=now)
            .returning(CodeSession.version, CodeSession.updated_at)
        ).first()
        if saved is None:  # saved by someone else between the read and this write
            current = conn.execute(select(CodeSession.version).where(CodeSession.id == session_id)).scalar()
            if current is None:
                raise not_found(session_id)
            raise _conflict(expected_version, current)
        before = history.record(
            conn,
            session_id,
            replaced,
            reason="restore",
            author=author or owner_id or sess.user_id,
            now=now,
            set_stored=True,
        )
    return {
        "session_id": str(session_id),
        "status": "ACTIVE",
        "version": saved.version,
        "updated_at": iso(saved.updated_at),
        "restored": number,
        "saved_as": before,
    }
