"""Code sessions: create, read, autosave with optimistic locking, delete. No Flask here."""

from __future__ import annotations

import functools
import logging
import uuid
from typing import Any

from sqlalchemy import LargeBinary, bindparam, delete, insert, literal, select, update

from ..config import Settings
from ..db import Database
from ..errors import Conflict, ValidationError
from ..infra.languages import LanguageCatalog
from ..models import CodeSession, iso, utcnow
from . import autosave_batch, history, programs, storage
from .access import Need, not_found, refuse, require, role_of, session_access
from .validation import check_language, check_source

__all__ = ["not_found"]  # re-exported: the rest of the services take it from here

log = logging.getLogger(__name__)


def session_etag(session_id: uuid.UUID, version: int) -> str:
    return f'"{session_id}-v{version}"'


def serialize_session(s: CodeSession) -> dict[str, Any]:
    program = programs.session_program(s.language, s.source_code, s.files, s.entry)
    return {
        "session_id": str(s.id),
        "id": str(s.id),
        "language": s.language,
        "source_code": s.source_code,
        **programs.as_json(program),
        "status": s.status,
        "version": s.version,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
    }


def _allowed(stmt: Any, user_id: uuid.UUID | None, need: Need) -> Any:
    """`stmt` narrowed to what the caller may do (services/access.py); no rule without accounts."""
    return stmt.where(session_access(need, user_id)) if user_id is not None else stmt


def create_session(
    db: Database, *, language: str, source_code: str | None, owner_id: uuid.UUID | None, max_bytes: int,
    settings: Settings | None = None, languages: LanguageCatalog | None = None,
    files: list[tuple[str, str]] | None = None, entry: str | None = None,
) -> dict[str, Any]:
    """Create a session of `source_code` (one file) or `files` with `entry` (services/programs.py;
    `files` needs `settings` for its limits); with `settings`, refused (429) when the owner has
    `max_sessions` already. `languages`: what can run (validation.check_language)."""
    check_language(language, languages)
    if files is None and entry is None:
        if source_code is None:
            raise ValidationError("missing field 'source_code'", code="MISSING_FIELD", details={"field": "source_code"})
        check_source(source_code, max_bytes)
        columns: dict[str, Any] = {"source_code": source_code, "files": None, "entry": None}
    else:
        if settings is None:
            raise TypeError("a multi-file session needs the settings (its limits)")
        columns = programs.request_columns(language, source_code, files, entry, settings, max_bytes)
    now = utcnow()
    row = CodeSession(
        id=uuid.uuid4(),
        user_id=owner_id,
        language=language,
        **columns,
        status="ACTIVE",
        version=1,
        created_at=now,
        updated_at=now,
        history_at=now,  # the first autosave version comes one interval into the editing
    )
    under_cap = storage.under_session_cap(settings, owner_id) if settings is not None else None
    if under_cap is None:
        with db.write() as s:
            s.add(row)
        return serialize_session(row)
    # One INSERT ... SELECT ... WHERE <count below the cap>: the check and the insert are one
    # statement (on SQLite, under the write lock).
    values = {c: getattr(row, c) for c in ("id", "user_id", "language", "source_code", "files", "entry", "status",
                                            "version", "created_at", "updated_at", "history_at")}
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


_SAVED = (CodeSession.version, CodeSession.updated_at, CodeSession.history_at, CodeSession.doc_version)


def _doc_values(doc_state: Any) -> dict[str, Any]:
    """A co-edited document's write stores its state with the text, as of the new version
    (services/collab_store.py); any other save leaves the state, to be merged into it."""
    if doc_state is None:
        return {}
    return {"doc_state": doc_state, "doc_version": CodeSession.version + 1}


@functools.cache
def _autosave_statement(owned: bool, versioned: bool, with_doc: bool = False) -> Any:
    """The autosave UPDATE, built once per shape: autosave is the hottest write, and building the
    statement anew each time cost about as much CPU as running it."""
    stmt = update(CodeSession).where(CodeSession.id == bindparam("sid"))
    if owned:  # the owner or an editor (services/access.py)
        stmt = stmt.where(session_access(Need.EDIT, bindparam("owner", type_=CodeSession.user_id.type)))
    if versioned:
        stmt = stmt.where(CodeSession.version == bindparam("expected"))
    # history_at: moved when this save is due to make a history version (services/history.py), so
    # the common save stays this one statement.
    return stmt.values(
        source_code=bindparam("src"), version=CodeSession.version + 1, updated_at=bindparam("now"),
        **history.autosave_values(), **_doc_values(bindparam("doc", type_=LargeBinary) if with_doc else None),
    ).returning(*_SAVED)


def _saved(db: Database, session_id: uuid.UUID, saved: Any, author: uuid.UUID | None, now: Any) -> dict[str, Any]:
    """What a successful save answers (after its coalesced history version, when one is due).
    `co_edited`: the session has a live document the save is to be merged into (the API takes
    the key out of the answer: services/collab.CollabRooms.merge_saved)."""
    if history.autosave_due(saved.history_at, now):
        _autosave_version(db, session_id, author, now)
    return {"session_id": str(session_id), "status": "ACTIVE", "version": saved.version,
            "updated_at": iso(saved.updated_at), "co_edited": saved.doc_version is not None}


def autosave(
    db: Database,
    session_id: uuid.UUID,
    *,
    source_code: str,
    expected_version: int | None,
    owner_id: uuid.UUID | None,
    max_bytes: int,
    history_interval_s: float = history.DEFAULT_AUTOSAVE_INTERVAL_S,
    author_id: uuid.UUID | None = None,
    doc_state: bytes | None = None,
) -> dict[str, Any]:
    """One conditional UPDATE: applied only if `expected_version` (when given) is still current.
    At most once per `history_interval_s` a save also makes a history version (by `author_id`,
    else the owner), in a second short transaction after the save is durable. `doc_state`: the
    co-edited document this text is written from (services/collab.py)."""
    check_source(source_code, max_bytes)
    save = autosave_batch.Save(session_id, owner_id, expected_version, source_code, history_interval_s)
    if doc_state is None and not db.is_sqlite:  # the common save: grouped with the process's others
        autosave_batch.batcher_for(db, _write_alone).save(save)
        if save.error is not None:
            raise save.error
        saved, now = save.row, save.now
    else:
        now = utcnow()
        saved = _write_alone(db, save, now, doc_state)
    if saved is not None:
        return _saved(db, session_id, saved, author_id or owner_id, now)
    # Only the failure path reads: either the session is not there (or not the caller's to see,
    # or to edit), or the version moved on under the client.
    if owner_id is not None:
        require(db, session_id, owner_id, Need.EDIT)
    with db.read(fresh=True) as s:
        current = s.execute(select(CodeSession.version).where(CodeSession.id == session_id)).scalar()
    if current is None:
        raise not_found(session_id)
    raise _conflict(expected_version, current)


def _write_alone(db: Database, save: autosave_batch.Save, now: Any, doc_state: bytes | None = None) -> Any:
    """One save's conditional UPDATE ... RETURNING, its own transaction: the row, or None."""
    params = {"sid": save.sid, "owner": save.owner, "expected": save.expected, "src": save.source, "now": now,
              "doc": doc_state, **history.autosave_params(now, save.interval_s)}
    stmt = _autosave_statement(save.owner is not None, save.expected is not None, doc_state is not None)
    return db.first(stmt, params, primary=True)


def _autosave_version(db: Database, session_id: uuid.UUID, author: uuid.UUID | None, now: Any) -> None:
    # The save is committed already (acknowledged, durable); a failure here costs one coalesced
    # version, never the save, so it is logged rather than turned into an error.
    try:
        with db.write_core() as conn:
            history.record_autosave(conn, session_id, author, now)
    except Exception:  # noqa: BLE001
        log.warning("could not record the autosave history version", extra={"session_id": str(session_id)},
                    exc_info=True)


def delete_session(db: Database, session_id: uuid.UUID, owner_id: uuid.UUID | None) -> None:
    with db.write() as s:
        result = s.execute(_allowed(delete(CodeSession).where(CodeSession.id == session_id), owner_id, Need.OWN))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        refuse(session_id, role_of(db, session_id, owner_id), Need.OWN)


_SAVE_RETRIES = 5  # unversioned saves that lost a race with another save re-read and re-apply


def autosave_files(
    db: Database,
    session_id: uuid.UUID,
    *,
    settings: Settings,
    expected_version: int | None,
    owner_id: uuid.UUID | None,
    files: list[tuple[str, str]] | None = None,
    file: tuple[str, str] | None = None,
    entry: str | None = None,
    source_code: str | None = None,
    author_id: uuid.UUID | None = None,
    doc_state: bytes | None = None,
) -> dict[str, Any]:
    """Autosave of a multi-file program: `files` replaces the whole set, `file` adds or replaces
    one file, `entry` names the file that runs (kept when absent and still there), `source_code`
    beside `files` is the entry's content. The new set is checked like a new session's, then
    written by an UPDATE conditional on the version it was built from (and on
    `expected_version`, when given: 409 VERSION_CONFLICT as for a plain autosave). `doc_state`:
    as for autosave."""
    seen: int | None = None  # the version the last attempt was built from
    for _ in range(_SAVE_RETRIES):
        with db.read(fresh=True) as s:
            row = s.execute(_allowed(select(CodeSession.language, CodeSession.source_code, CodeSession.files,
                                            CodeSession.entry, CodeSession.version)
                                     .where(CodeSession.id == session_id), owner_id, Need.EDIT)).first()
        if row is None:
            refuse(session_id, role_of(db, session_id, owner_id), Need.EDIT)
        seen = row.version
        if expected_version is not None and row.version != expected_version:
            raise _conflict(expected_version, row.version)
        current = programs.session_program(row.language, row.source_code, row.files, row.entry)
        columns = _edited(row.language, current, settings, files=files, file=file, entry=entry,
                          source_code=source_code)
        now = utcnow()
        stmt = (update(CodeSession).where(CodeSession.id == session_id, CodeSession.version == row.version)
                .values(**columns, version=CodeSession.version + 1, updated_at=now, **history.autosave_values(),
                        **_doc_values(doc_state))
                .returning(*_SAVED))
        with db.write_core() as conn:
            saved = conn.execute(stmt, history.autosave_params(now, settings.history_autosave_interval_s)).first()
        if saved is not None:
            return _saved(db, session_id, saved, author_id or owner_id, now)
        if expected_version is not None:  # someone saved between our read and our write
            with db.read(fresh=True) as s:
                now_at = s.execute(select(CodeSession.version).where(CodeSession.id == session_id)).scalar()
            if now_at is None:
                raise not_found(session_id)
            raise _conflict(expected_version, now_at)
    raise Conflict("the session kept changing while this save was applied; try again", code="VERSION_CONFLICT",
                   details={"current_version": seen, "your_version": expected_version})


def _edited(language: str, current: programs.Program, settings: Settings, *, files: list[tuple[str, str]] | None,
            file: tuple[str, str] | None, entry: str | None, source_code: str | None) -> dict[str, Any]:
    """The columns of `current` with the edit applied, checked."""
    if files is not None:
        if source_code is not None:
            check_source(source_code, settings.max_source_bytes)
            files, entry = programs.with_source_code(files, entry or current.entry, source_code, language)
        elif entry is None and any(p == current.entry for p, _ in files):
            entry = current.entry
        pairs = files
    else:
        pairs = list(current.files)
        if file is not None:
            at = next((i for i, (p, _) in enumerate(pairs) if p == file[0]), None)
            if at is None:
                pairs.append(file)
            else:
                pairs[at] = file
        if source_code is not None:
            check_source(source_code, settings.max_source_bytes)
            target = entry or current.entry
            pairs = [(p, source_code if p == target else c) for p, c in pairs]
        entry = entry or current.entry
    return programs.session_columns(programs.check_program(pairs, entry, language, settings), language)


def _conflict(expected: int | None, current: int) -> Conflict:
    return Conflict(
        f"version conflict: you edited version {expected}, the current version is {current}",
        code="VERSION_CONFLICT",
        details={"current_version": current, "your_version": expected},
    )
