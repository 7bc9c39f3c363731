"""Files a run left in out/ (issue 13, part 3): stored with their execution, listed and served. No Flask.

The worker stores them in the same transaction as the execution's result (`store_files`), so a
finished execution has either all its kept files or, when the result was not this attempt's to
write, none. They live in `execution_outputs` (the database, PostgreSQL or the embedded SQLite),
and a foreign key with ON DELETE CASCADE deletes them with their execution: a deleted session,
account or an execution removed by retention takes its files along. `expire_files` deletes older
files first when LIVECODE_OUTPUT_FILE_RETENTION_DAYS asks for it.

Content types come from a fixed list of extensions, never from the bytes or the host's MIME
database: only raster images are shown inline; everything else is a download.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, select, tuple_
from sqlalchemy.engine import Connection

from ..config import Settings
from ..db import Database
from ..errors import NotFound
from ..models import Execution, ExecutionOutput, utcnow
from ..sandbox.outputs import OutputFile, OutputLimits
from .access import execution_access, execution_not_found
from .storage import MAX_ROUNDS

FILES = cast(Table, ExecutionOutput.__table__)
OCTET_STREAM = "application/octet-stream"
# Shown in the page (an <img>): raster formats a browser cannot run anything from.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
CONTENT_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "svg": "image/svg+xml",  # can carry script: served as a download, under a sandboxing CSP
    "pdf": "application/pdf",
    "txt": "text/plain; charset=utf-8",
    "log": "text/plain; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "tsv": "text/tab-separated-values; charset=utf-8",
    "json": "application/json",
}


def content_type_for(path: str) -> str:
    """The type a file is served with, by its extension; application/octet-stream otherwise."""
    name = path.rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return CONTENT_TYPES.get(ext, OCTET_STREAM)


def output_limits(settings: Settings) -> OutputLimits | None:
    """What a run may keep of its out/; None when collection is off (LIVECODE_OUTPUT_FILES_MAX=0)."""
    if settings.output_files_max <= 0:
        return None
    return OutputLimits(max_files=settings.output_files_max, max_bytes=settings.output_files_max_bytes)


def file_rows(
    execution_id: uuid.UUID, files: Sequence[OutputFile], now: datetime | None = None
) -> list[dict[str, Any]]:
    now = now or utcnow()
    return [
        {
            "execution_id": execution_id,
            "path": f.path,
            "size": len(f.data),
            "content_type": content_type_for(f.path),
            "sha256": hashlib.sha256(f.data).hexdigest(),
            "data": f.data,
            "created_at": now,
        }
        for f in files
    ]


def store_files(conn: Connection, execution_id: uuid.UUID, files: Sequence[OutputFile]) -> None:
    """Insert a finished run's files, in the caller's transaction (the one writing its result)."""
    if files:
        conn.execute(insert(FILES), file_rows(execution_id, files))


def describe(row: Any) -> dict[str, Any]:
    return {"path": row.path, "size": row.size, "content_type": row.content_type, "sha256": row.sha256}


@functools.cache
def _owned_execution(by_owner: bool) -> Any:
    t = Execution.__table__.c
    q = select(t.id).where(t.id == bindparam("p_eid"))
    # The session's owner or a member of it (services/access.py), as for the execution itself.
    return q.where(execution_access(bindparam("p_owner", type_=t.user_id.type))) if by_owner else q


def _check_execution(conn: Connection, execution_id: uuid.UUID, owner_id: uuid.UUID | None) -> None:
    """404 for an execution that does not exist or is someone else's (the same answer)."""
    found = conn.execute(_owned_execution(owner_id is not None), {"p_eid": execution_id, "p_owner": owner_id}).first()
    if found is None:
        raise execution_not_found(execution_id)


def list_files(db: Database, execution_id: uuid.UUID, owner_id: uuid.UUID | None) -> list[dict[str, Any]]:
    """[{path, size, content_type, sha256}] of an execution's kept files, by path."""
    c = FILES.c
    with db.read_core(fresh=True) as conn:
        _check_execution(conn, execution_id, owner_id)
        rows = conn.execute(
            select(c.path, c.size, c.content_type, c.sha256).where(c.execution_id == execution_id).order_by(c.path)
        ).all()
    return [describe(r) for r in rows]


def get_file(
    db: Database, execution_id: uuid.UUID, owner_id: uuid.UUID | None, path: str
) -> tuple[dict[str, Any], bytes]:
    """One file's description and bytes; 404 FILE_NOT_FOUND when the execution has no such file."""
    c = FILES.c
    with db.read_core(fresh=True) as conn:
        _check_execution(conn, execution_id, owner_id)
        row = conn.execute(
            select(c.path, c.size, c.content_type, c.sha256, c.data).where(
                c.execution_id == execution_id, c.path == path
            )
        ).first()
    if row is None:
        raise NotFound(
            f"execution {execution_id} has no file {path[:200]!r}; GET /api/v1/executions/{execution_id}/files "
            "lists them",
            code="FILE_NOT_FOUND",
        )
    return describe(row), bytes(row.data)


def expire_files(db: Database, settings: Settings, now: datetime | None = None) -> int:
    """Delete output files older than LIVECODE_OUTPUT_FILE_RETENTION_DAYS, a batch per transaction."""
    if not settings.output_file_retention_days:
        return 0
    cutoff = (now or utcnow()) - timedelta(days=settings.output_file_retention_days)
    c = FILES.c
    pick = select(c.execution_id, c.path).where(c.created_at < cutoff).limit(settings.storage_cleanup_batch)
    stmt = delete(FILES).where(tuple_(c.execution_id, c.path).in_(pick))
    total = 0
    for _ in range(MAX_ROUNDS):
        with db.write_core() as conn:
            deleted = int(conn.execute(stmt).rowcount)
        total += deleted
        if deleted < settings.storage_cleanup_batch:
            break
    return total
