"""A session's history (issue 15, part 1): versions without one row per keystroke. No Flask.

A version is made when an execution is submitted (the code it runs: a run of the files the newest
version already holds names that version instead), by an explicit checkpoint (with an optional
label), by autosave at most once per LIVECODE_HISTORY_AUTOSAVE_INTERVAL_S, and before a restore.

Storage: a version names a file set (`file_sets`), keyed by the sha256 of its manifest (entry and
each file's path and content hash), so a program is stored once however many versions hold it;
the contents themselves are the `sources` rows executions use (an execution's version reuses the
hashes its snapshot stored). `code_sessions.history_seq` is the newest version's number, bumped
by the UPDATE that makes a version (the session row serialises concurrent makers), and
`history_set` its file set. Autosave's own UPDATE moves `history_at` when the last autosave
version is older than the interval (services/sessions.py): only then does it make a version, so
the common autosave stays one statement.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from hashlib import sha256
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from ..models import CodeSession, FileSet, FileSetFile, SessionVersion, Source, iso
from . import programs, storage
from .snapshots import Snapshot

REASONS = ("execution", "checkpoint", "autosave", "restore")
DEFAULT_AUTOSAVE_INTERVAL_S = 60.0  # the setting's default, for callers without the settings


@dataclass(frozen=True)
class FileSetRef:
    """A program as history stores it: (path, content hash) in order, the entry, and the texts."""

    files: tuple[tuple[str, str], ...]
    entry: str
    texts: dict[str, str]

    @functools.cached_property
    def hash(self) -> str:
        manifest = json.dumps({"entry": self.entry, "files": self.files}, separators=(",", ":"), ensure_ascii=False)
        return sha256(manifest.encode("utf-8", "surrogatepass")).hexdigest()


def ref_of_program(program: programs.Program) -> FileSetRef:
    hashed = [(p, storage.source_hash(c), c) for p, c in program.files]
    return FileSetRef(tuple((p, h) for p, h, _ in hashed), program.entry, {h: c for _, h, c in hashed})


def ref_of_snapshot(snapshot: Snapshot, language: str) -> FileSetRef:
    """An execution's snapshot as a file set: its hashes are reused, nothing is hashed again."""
    if snapshot.entry is None:
        path = programs.default_path(language)
        return FileSetRef(((path, snapshot.entry_hash),), path, snapshot.texts)
    return FileSetRef(tuple(snapshot.files), snapshot.entry, snapshot.texts)


def ref_of_row(row: Any) -> FileSetRef:
    """A session row's (language, source_code, files, entry) program as a file set."""
    return ref_of_program(programs.session_program(row.language, row.source_code, row.files, row.entry))


# ---- making versions -------------------------------------------------------------------------


def _upsert_set(dialect: str) -> Any:
    # Touching last_used_at (and, on PostgreSQL, locking the row) keeps a concurrent collection
    # from deleting a set a version is about to name, as store_sources does for sources.
    return storage.upsert_by_hash(dialect, cast(Table, FileSet.__table__))


@functools.cache
def _store_set_pg() -> Any:
    """store_set's one round trip on PostgreSQL: the set (a CTE), then its files (a set's hash
    fixes its files, so a present one conflicts row for row and inserts nothing), the files bound
    as arrays (unnest). Built once, so its compiled form is cached whatever the number of files:
    a multi-row VALUES is compiled anew on every call (SQLAlchemy gives it no cache key), which
    cost a first run of new code more CPU than the rest of its submission's SQL."""
    s, f = cast(Table, FileSet.__table__).c, cast(Table, FileSetFile.__table__).c
    the_set = _upsert_set("postgresql").values(
        hash=bindparam("p_hash", type_=s.hash.type), entry=bindparam("p_entry", type_=s.entry.type),
        last_used_at=bindparam("p_now", type_=s.last_used_at.type),
    ).cte("file_set")
    files = func.unnest(
        bindparam("p_positions", type_=ARRAY(f.position.type)), bindparam("p_paths", type_=ARRAY(f.path.type)),
        bindparam("p_hashes", type_=ARRAY(f.source_hash.type)),
    ).table_valued("position", "path", "source_hash").render_derived()
    rows = select(bindparam("p_set_hash", type_=f.set_hash.type), files.c.position, files.c.path, files.c.source_hash)
    return (pg_insert(FileSetFile).from_select(["set_hash", "position", "path", "source_hash"], rows)
            .on_conflict_do_nothing().add_cte(the_set))


def store_set(conn: Connection, ref: FileSetRef, now: datetime, sources_stored: bool = False) -> None:
    """Store `ref`'s sources (unless stored already) and its file set, touching them when present."""
    if not sources_stored:
        storage.store_sources(conn, ref.texts, now)
    set_params = {"hash": ref.hash, "entry": ref.entry, "last_used_at": now}
    touch = {"touch_before": now - storage.TOUCH_EVERY}
    if conn.dialect.name == "postgresql":
        conn.execute(_store_set_pg(), {
            "p_hash": ref.hash, "p_set_hash": ref.hash, "p_entry": ref.entry, "p_now": now, **touch,
            "p_positions": list(range(len(ref.files))), "p_paths": [p for p, _ in ref.files],
            "p_hashes": [h for _, h in ref.files],
        })
        return
    rows = [{"set_hash": ref.hash, "position": i, "path": p, "source_hash": h} for i, (p, h) in enumerate(ref.files)]
    conn.execute(_upsert_set(conn.dialect.name), {**set_params, **touch})
    if conn.execute(select(FileSetFile.position).where(FileSetFile.set_hash == ref.hash).limit(1)).first():
        return
    conn.execute(sqlite_insert(FileSetFile).on_conflict_do_nothing(), rows)


_VERSION_COLUMNS = ("session_id", "created_at", "author_id", "reason", "label", "set_hash", "execution_id")


@functools.cache
def _bump(only_if_changed: bool) -> Any:
    """The session's history_seq bumped to name a version of set p_set. Built once per shape (as
    the other hot statements): building and keying a statement on every call cost as much CPU
    as running it."""
    bump = update(CodeSession).where(CodeSession.id == bindparam("p_sid"))
    if only_if_changed:  # checked again on the row itself: another writer may have made it meanwhile
        bump = bump.where(or_(CodeSession.history_set.is_(None), CodeSession.history_set != bindparam("p_set")))
    return (bump.values(history_seq=CodeSession.history_seq + 1, history_set=bindparam("p_set"))
            .returning(CodeSession.history_seq))


@functools.cache
def _version_pg(only_if_changed: bool) -> Any:
    """One round trip on PostgreSQL: the bump, and the version numbered by it (none if it matched
    nothing); the version's columns bound as v_<column>."""
    made = _bump(only_if_changed).cte("made")
    c = cast(Table, SessionVersion.__table__).c
    values = [bindparam(f"v_{k}", type_=c[k].type) for k in _VERSION_COLUMNS]
    return (insert(SessionVersion).from_select([*_VERSION_COLUMNS, "number"], select(*values, made.c.history_seq))
            .add_cte(made).returning(SessionVersion.number))


def record(
    conn: Connection,
    session_id: uuid.UUID,
    ref: FileSetRef,
    *,
    reason: str,
    author: uuid.UUID | None,
    now: datetime,
    label: str | None = None,
    execution_id: uuid.UUID | None = None,
    only_if_changed: bool = False,
    sources_stored: bool = False,
    set_stored: bool = False,
    newest_known: tuple[int, str | None] | None = None,
) -> int | None:
    """Make a version of `ref` in the caller's transaction and return its number. With
    `only_if_changed`, a program the newest version already holds makes none: that version's
    number is returned. None: the session is gone.

    Locks are taken in one order everywhere: sources, then the file set, then the session row
    (a submission stores its sources before it reaches here; a restore stores the replaced code
    before its UPDATE), so two writers of one session never wait on each other in a cycle.
    `newest_known`: the session's (history_seq, history_set) as the caller's transaction already
    read them (a submission's session read), so they are not read again."""
    if only_if_changed:
        current = newest_known or conn.execute(
            select(CodeSession.history_seq, CodeSession.history_set).where(CodeSession.id == session_id)
        ).first()
        if current is None:
            return None
        if current[1] == ref.hash:
            return int(current[0])
    if not set_stored:
        store_set(conn, ref, now, sources_stored)
    version = {"session_id": session_id, "created_at": now, "author_id": author, "reason": reason, "label": label,
               "set_hash": ref.hash, "execution_id": execution_id}
    bump_params = {"p_sid": session_id, "p_set": ref.hash}
    if conn.dialect.name == "postgresql":
        number = conn.execute(_version_pg(only_if_changed),
                              {**bump_params, **{f"v_{k}": v for k, v in version.items()}}).scalar()
    else:
        made = conn.execute(_bump(only_if_changed), bump_params).first()
        number = None
        if made is not None:
            number = made.history_seq
            conn.execute(insert(SessionVersion).values(**version, number=number))
    if number is None:
        if not only_if_changed:
            return None
        # Another writer made this very file set since it was read: the version that holds it (the
        # newest such), not the session's newest, which a third writer may have moved on since.
        holding = (select(func.max(SessionVersion.number))
                   .where(SessionVersion.session_id == session_id, SessionVersion.set_hash == ref.hash)
                   .scalar_subquery())
        newest = select(func.coalesce(holding, CodeSession.history_seq)).where(CodeSession.id == session_id)
        return conn.execute(newest).scalar()
    return int(number)


def single_file_set_parts(language: str) -> tuple[str, str]:
    """A single-file program's file-set manifest (FileSetRef.hash hashes it) around its content
    hash: (before, after). PostgreSQL computes the set's hash from them and the hash of the
    session's code, so a submission learns in its one statement whether the newest version holds
    the code it runs (services/submission_sql.py). Tests compare it with FileSetRef.hash."""
    mark = uuid.uuid4().hex  # hex, as the hash it stands for: JSON leaves it as is
    path = programs.default_path(language)
    manifest = json.dumps({"entry": path, "files": ((path, mark),)}, separators=(",", ":"), ensure_ascii=False)
    before, after = manifest.split(mark)
    return before, after


def record_run(
    conn: Connection,
    session_id: uuid.UUID,
    snapshot: Snapshot,
    language: str,
    *,
    author: uuid.UUID | None,
    execution_id: uuid.UUID,
    now: datetime,
    newest_known: tuple[int, str | None] | None = None,
) -> int | None:
    """The version an execution runs (its sources were stored by the submission itself)."""
    return record(
        conn,
        session_id,
        ref_of_snapshot(snapshot, language),
        reason="execution",
        author=author,
        now=now,
        execution_id=execution_id,
        only_if_changed=True,
        sources_stored=True,
        newest_known=newest_known,
    )


def autosave_values() -> dict[str, Any]:
    """What autosave's UPDATE sets besides the code: `history_at` moves to now (bound as
    `hnow`) when the last autosave version is older than the interval (bound as `hcut`), which
    is how the caller learns (RETURNING history_at) that this save makes a version."""
    due = or_(CodeSession.history_at.is_(None), CodeSession.history_at <= bindparam("hcut"))
    return {
        "history_at": case((due, bindparam("hnow", type_=CodeSession.history_at.type)), else_=CodeSession.history_at)
    }


def autosave_params(now: datetime, interval_s: float) -> dict[str, Any]:
    return {"hnow": now, "hcut": now - timedelta(seconds=interval_s)}


def autosave_due(history_at: datetime | None, now: datetime) -> bool:
    """Whether the autosave UPDATE that returned `history_at` moved it (SQLite gives it back naive)."""
    if history_at is None:
        return False
    if history_at.tzinfo is None:
        return history_at == now.replace(tzinfo=None)
    return history_at == now


def record_autosave(conn: Connection, session_id: uuid.UUID, author: uuid.UUID | None, now: datetime) -> int | None:
    """The coalesced autosave version of the session as it is now (none if the newest version
    already holds it)."""
    row = conn.execute(
        select(
            CodeSession.language, CodeSession.source_code, CodeSession.files, CodeSession.entry, CodeSession.user_id
        ).where(CodeSession.id == session_id)
    ).first()
    if row is None:
        return None
    return record(
        conn,
        session_id,
        ref_of_row(row),
        reason="autosave",
        author=author or row.user_id,
        now=now,
        only_if_changed=True,
    )


# ---- reading ---------------------------------------------------------------------------------


def serialize_version(v: Any) -> dict[str, Any]:
    return {
        "version": v.number,
        "created_at": iso(v.created_at),
        "author": str(v.author_id) if v.author_id else None,
        "reason": v.reason,
        "label": v.label,
        "execution_id": str(v.execution_id) if v.execution_id else None,
    }


def load_files(conn: Any, set_hash: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        select(FileSetFile.path, Source.content)
        .join(Source, Source.hash == FileSetFile.source_hash)
        .where(FileSetFile.set_hash == set_hash)
        .order_by(FileSetFile.position)
    ).all()
    return [(r.path, r.content) for r in rows]


def count_versions(conn: Any, session_id: uuid.UUID) -> int:
    return int(
        conn.execute(
            select(func.count()).select_from(SessionVersion).where(SessionVersion.session_id == session_id)
        ).scalar_one()
    )


# ---- retention (the storage job: worker/janitor.py) -------------------------------------------


def expire_versions(db: Any, settings: Any, now: datetime | None = None) -> int:
    """Drop versions outside both bounds: not among the session's newest
    LIVECODE_HISTORY_KEEP_VERSIONS and older than LIVECODE_HISTORY_KEEP_DAYS (0 switches a bound
    off; both 0 keeps everything). A labelled checkpoint is never dropped."""
    keep_n, keep_d = settings.history_keep_versions, settings.history_keep_days
    if not keep_n and not keep_d:
        return 0
    v = SessionVersion
    pick = select(v.id).where(v.label.is_(None))
    if keep_n:
        newest = select(CodeSession.history_seq).where(CodeSession.id == v.session_id).scalar_subquery()
        pick = pick.where(v.number <= newest - keep_n)
    if keep_d:
        pick = pick.where(v.created_at < (now or _utcnow()) - timedelta(days=keep_d))
    batch = settings.storage_cleanup_batch
    stmt = delete(SessionVersion).where(v.id.in_(pick.limit(batch).scalar_subquery()))
    return _in_rounds(db, stmt, batch)


def _in_rounds(db: Any, stmt: Any, batch: int) -> int:
    total = 0
    for _ in range(storage.MAX_ROUNDS):
        with db.write_core() as conn:
            deleted = int(conn.execute(stmt).rowcount)
        total += deleted
        if deleted < batch:
            break
    return total


def _utcnow() -> datetime:
    from ..models import utcnow

    return utcnow()


def unified_diff(a: Sequence[tuple[str, str]], b: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Per file, a→b: added, removed or modified files with their unified diff (unchanged
    files are left out), in b's order then the removed ones."""
    import difflib

    old, new = dict(a), dict(b)

    def diff(path: str, x: str | None, y: str | None) -> str:
        lines = difflib.unified_diff(
            (x or "").splitlines(keepends=True),
            (y or "").splitlines(keepends=True),
            fromfile=f"a/{path}" if x is not None else "/dev/null",
            tofile=f"b/{path}" if y is not None else "/dev/null",
        )
        # Like git: a last line without a newline is marked, not glued to the next one.
        return "".join(ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n" for ln in lines)

    out: list[dict[str, Any]] = []
    for path, content in b:
        if path not in old:
            out.append({"path": path, "change": "added", "diff": diff(path, None, content)})
        elif old[path] != content:
            out.append({"path": path, "change": "modified", "diff": diff(path, old[path], content)})
    out.extend({"path": p, "change": "removed", "diff": diff(p, c, None)} for p, c in a if p not in new)
    return out
