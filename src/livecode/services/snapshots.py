"""What an execution runs: a snapshot of its session's program when it was submitted. No Flask.

Every content is stored once in `sources` (services/storage.py), by hash. A single-file program
is `executions.source_hash` alone, as before multi-file programs existed. A multi-file one also
names its `entry` (whose content is source_hash) and lists every file, in order, in
`execution_files` (path and content hash); the storage job keeps a source while any execution
file references it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, func, insert, literal_column, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..db import Database
from ..models import Execution, ExecutionFile, Source
from . import programs, storage
from .access import execution_access, execution_not_found


@dataclass
class Snapshot:
    texts: dict[str, str]  # every distinct content by its hash, to store once
    entry_hash: str
    entry: str | None = None  # None: a single-file program
    files: list[tuple[str, str]] = field(default_factory=list)  # (path, content hash) in order

    def insert_files(self, s: Session | Connection, execution_ids: Sequence[uuid.UUID]) -> None:
        """The execution_files rows of these executions (one statement; none for one file)."""
        if not self.files:
            return
        rows = [
            {"execution_id": eid, "position": i, "path": path, "source_hash": digest}
            for eid in execution_ids
            for i, (path, digest) in enumerate(self.files)
        ]
        s.execute(insert(ExecutionFile), rows)


def snapshot_of(session: Any) -> Snapshot:
    """The snapshot of a session row (language, source_code, files, entry)."""
    if not session.files or session.entry is None:
        digest = storage.source_hash(session.source_code)
        return Snapshot({digest: session.source_code}, digest)
    program = programs.session_program(session.language, session.source_code, session.files, session.entry)
    hashed = [(path, storage.source_hash(content), content) for path, content in program.files]
    return Snapshot(
        texts={digest: content for _, digest, content in hashed},
        entry_hash=next(digest for path, digest, _ in hashed if path == program.entry),
        entry=program.entry,
        files=[(path, digest) for path, digest, _ in hashed],
    )


def sql_utf8(text: Any) -> ColumnElement[bytes]:
    """PostgreSQL: a text column's UTF-8 bytes (what storage.source_hash hashes)."""
    return func.convert_to(text, literal_column("'UTF8'"))


def sql_hash(data: Any) -> ColumnElement[str]:
    """PostgreSQL: sha256 of bytes as lowercase hex, as storage.source_hash gives a source's."""
    return func.encode(func.sha256(data), literal_column("'hex'"))


def snapshot_files(conn: Connection | Session, execution_id: uuid.UUID) -> list[tuple[str, str]]:
    """A multi-file execution's files (path, content), in order."""
    rows = conn.execute(
        select(ExecutionFile.path, Source.content)
        .join(Source, Source.hash == ExecutionFile.source_hash)
        .where(ExecutionFile.execution_id == execution_id)
        .order_by(ExecutionFile.position)
    ).all()
    return [(r.path, r.content) for r in rows]


def execution_program(db: Database, execution_id: uuid.UUID, owner_id: uuid.UUID | None) -> dict[str, Any]:
    """The program an execution ran (or will run): its files and entry as the session held them
    when it was submitted; 404 EXECUTION_NOT_FOUND as for the execution itself."""
    q = (
        select(Execution.language, Execution.entry, Source.content)
        .join(Source, Source.hash == Execution.source_hash)
        .where(Execution.id == execution_id)
    )
    if owner_id is not None:
        q = q.where(execution_access(owner_id))  # the session's owner or a member (services/access.py)
    with db.read(fresh=True) as s:
        row = s.execute(q).first()
        if row is None:
            raise execution_not_found(execution_id)
        if row.entry is None:
            program = programs.session_program(row.language, row.content, None, None)
        else:
            program = programs.Program(tuple(snapshot_files(s, execution_id)), row.entry)
    return {"execution_id": str(execution_id), "language": row.language, **programs.as_json(program)}
