"""Storage (issue 10, item 8): each program text stored once, per-owner caps, and expiry. No Flask.

- Sources are content-addressed: an execution references `sources.hash` (sha256 of the UTF-8
  text) instead of carrying a copy, so a batch of 1000 runs of one session stores its code once.
- Caps: an owner (a user; every anonymous request counts as one owner, the embedded mode's user
  too) keeps at most `max_stored_executions` executions and `max_sessions` sessions. The count is
  part of the INSERT's own statement (bounded by the cap, so it never scans more than `cap` index
  entries): at the cap the insert does nothing and the request is refused with 429.
- Expiry: finished executions older than the retention are deleted, then sources that no execution
  references any more, in bounded batches (worker/janitor.py runs it every few minutes).
"""

from __future__ import annotations

import functools
import logging
import uuid
from datetime import datetime, timedelta
from hashlib import sha256
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, delete, exists, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from ..config import Settings
from ..db import Database
from ..errors import QuotaExceeded
from ..models import (
    TERMINAL_STATUSES,
    CodeSession,
    Execution,
    ExecutionFile,
    FileSet,
    FileSetFile,
    SessionVersion,
    Source,
    status_values,
    utcnow,
)

log = logging.getLogger(__name__)

# A source's last_used_at is moved forward at most this often: a hot program (everyone's Hello
# World) is not rewritten on every run. Must stay well below source_gc_grace_s (see collect_sources).
TOUCH_EVERY = timedelta(seconds=60)
# Batches per cleanup pass: a pass deletes at most this many times storage_cleanup_batch rows.
MAX_ROUNDS = 20


def source_hash(text: str) -> str:
    return sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def store_sources(s: Session | Connection, texts: dict[str, str], now: datetime) -> None:
    """Insert each source (hash -> text) unless present, in the caller's transaction, touching
    last_used_at of one that was not used for TOUCH_EVERY. One statement whatever the count.
    On a Core connection (the single execute) no ORM bulk-insert machinery runs.

    PostgreSQL locks the conflicting row (ON CONFLICT DO UPDATE locks it even when the WHERE says
    not to update), so a collection running at the same moment waits for this transaction and then
    sees it used (see collect_sources)."""
    if not texts:
        return
    conn = s if isinstance(s, Connection) else s.connection()  # the session's own transaction
    rows = [{"hash": h, "last_used_at": now, **_source_row(text, now)} for h, text in texts.items()]
    conn.execute(_upsert_source(conn.dialect.name), rows[0] if len(rows) == 1 else rows)


def _upsert_source(dialect: str) -> Any:
    return upsert_by_hash(dialect, cast(Table, Source.__table__))


@functools.cache
def upsert_by_hash(dialect: str, table: Table) -> Any:
    """INSERT of content-addressed rows (sources, history's file sets) that, when the hash is
    there already, only touches `last_used_at` (at most every TOUCH_EVERY: `touch_before`), so a
    concurrent collection does not delete what is about to be named. Built once per dialect and
    table: a statement object reused keeps its compiled form's cache key."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return _touch_when_present(insert(table), table)


def _touch_when_present(stmt: Any, table: Table) -> Any:
    return stmt.on_conflict_do_update(
        index_elements=[table.c.hash],
        set_={"last_used_at": stmt.excluded.last_used_at},
        where=table.c.last_used_at < bindparam("touch_before"),
    )


def upsert_by_hash_from(table: Table, columns: list[str], rows: Any) -> Any:
    """upsert_by_hash as an INSERT ... SELECT of `rows` (touch_before bound), for a PostgreSQL
    statement's CTE whose rows are read or computed in that statement (a submission's:
    services/submission_sql.py)."""
    return _touch_when_present(pg_insert(table).from_select(columns, rows), table)


def _source_row(text: str, now: datetime) -> dict[str, Any]:
    """A source's stored columns, and when an existing copy's last use is touched."""
    size = len(text.encode("utf-8", "surrogatepass"))
    return {"content": text, "size_bytes": size, "touch_before": now - TOUCH_EVERY}


def _owned_by(column: Any, owner: Any) -> ColumnElement[bool]:
    """`owner`: a user id, None (anonymous) or a bound parameter of a prebuilt statement."""
    return column.is_(None) if owner is None else column == owner  # type: ignore[no-any-return]


def _bounded_count(model: Any, owner: Any, cap: int) -> Any:
    """SELECT count(*) FROM (SELECT id FROM <model> WHERE user_id = owner LIMIT cap): at most
    `cap` index entries are read, however many rows the owner has."""
    rows = select(model.id).where(_owned_by(model.user_id, owner)).limit(cap).subquery()
    return select(func.count()).select_from(rows)


def under_execution_cap(cap: int, owner: Any) -> ColumnElement[bool]:
    """The condition an INSERT ... SELECT of one execution adds when the owner has a cap."""
    return _bounded_count(Execution, owner, cap).scalar_subquery() < cap  # type: ignore[no-any-return]


def under_session_cap(settings: Settings, owner: uuid.UUID | None) -> ColumnElement[bool] | None:
    cap = settings.max_sessions
    if not cap:
        return None
    return _bounded_count(CodeSession, owner, cap).scalar_subquery() < cap


def stored_executions(s: Session, settings: Settings, owner: uuid.UUID | None) -> int:
    return int(s.execute(_bounded_count(Execution, owner, settings.max_stored_executions)).scalar_one())


def stored_sessions(s: Session, settings: Settings, owner: uuid.UUID | None) -> int:
    return int(s.execute(_bounded_count(CodeSession, owner, settings.max_sessions)).scalar_one())


def execution_quota_error(settings: Settings, count: int, requested: int = 1) -> QuotaExceeded:
    limit = settings.max_stored_executions
    what = f"this batch of {requested} runs would go over it" if requested > 1 else "nothing was queued"
    expiry = (
        f", or wait until finished executions older than {settings.execution_retention_days} days expire"
        if settings.execution_retention_days
        else ""
    )
    return QuotaExceeded(
        f"execution storage quota reached: you have {count} stored executions and the limit is {limit}; "
        f"{what}. Delete code sessions you no longer need (DELETE /api/v1/code-sessions/{{id}} deletes "
        f"their executions){expiry}.",
        code="EXECUTION_QUOTA_EXCEEDED",
        details={"count": count, "limit": limit, "requested": requested},
    )


def session_quota_error(settings: Settings, count: int) -> QuotaExceeded:
    limit = settings.max_sessions
    return QuotaExceeded(
        f"session quota reached: you have {count} code sessions and the limit is {limit}; nothing was created. "
        "Delete sessions you no longer need (DELETE /api/v1/code-sessions/{id}), or reuse one.",
        code="SESSION_QUOTA_EXCEEDED",
        details={"count": count, "limit": limit},
    )


# ---- expiry (run by worker/janitor.py) ----------------------------------------------------


def expire_executions(db: Database, settings: Settings, now: datetime | None = None) -> int:
    """Delete finished executions older than the retention, a batch per transaction."""
    if not settings.execution_retention_days:
        return 0
    cutoff = (now or utcnow()) - timedelta(days=settings.execution_retention_days)
    terminal = status_values(TERMINAL_STATUSES)
    pick = (
        select(Execution.id)
        .where(Execution.finished_at < cutoff, Execution.status.in_(terminal))
        .limit(settings.storage_cleanup_batch)
    )
    return _in_rounds(db, delete(Execution).where(Execution.id.in_(pick.scalar_subquery())),
                      settings.storage_cleanup_batch)


def collect_sources(db: Database, settings: Settings, now: datetime | None = None) -> int:
    """Delete sources no execution references that were not used for the grace period.

    Why a source that a submission is about to reference is never lost:
    - the submission stores (or touches) the source and inserts its execution in one transaction;
    - on PostgreSQL, its upsert locks the source row. A DELETE that reaches the row waits for that
      transaction, then re-checks its WHERE on the row's new version (READ COMMITTED): last_used_at
      is now recent, so the row is skipped. When the upsert did not touch the row (used within
      TOUCH_EVERY), it was recent already and never a candidate (the grace period is far longer).
      A DELETE that got there first makes the upsert wait and then insert the row afresh;
    - whatever the timing (even clocks that disagree by more than the grace period), the foreign
      key executions.source_hash -> sources.hash makes deleting a referenced source fail rather
      than succeed; that pass stops and the next one goes on;
    - SQLite runs one write transaction at a time, so the two cannot interleave at all.
    """
    collect_file_sets(db, settings, now)  # first: what they leave unreferenced goes in this pass
    cutoff = (now or utcnow()) - timedelta(seconds=settings.source_gc_grace_s)
    # A source is referenced by an execution (its entry), by a file of a multi-file execution, or
    # by a file of a history version's file set (services/history.py).
    unreferenced = (~exists().where(Execution.source_hash == Source.hash)
                    & ~exists().where(ExecutionFile.source_hash == Source.hash)
                    & ~exists().where(FileSetFile.source_hash == Source.hash))
    candidate = aliased(Source)
    pick = (
        select(candidate.hash)
        .where(candidate.last_used_at < cutoff, ~exists().where(Execution.source_hash == candidate.hash),
               ~exists().where(ExecutionFile.source_hash == candidate.hash),
               ~exists().where(FileSetFile.source_hash == candidate.hash))
        .limit(settings.storage_cleanup_batch)
    )
    # The conditions are repeated on the DELETE's own row so that they are re-checked on the row's
    # latest version when the DELETE had to wait for a concurrent submission.
    stmt = delete(Source).where(Source.last_used_at < cutoff, unreferenced, Source.hash.in_(pick.scalar_subquery()))
    try:
        return _in_rounds(db, stmt, settings.storage_cleanup_batch)
    except IntegrityError:
        log.warning("a source became referenced while being collected; it was kept", exc_info=True)
        return 0


def collect_file_sets(db: Database, settings: Settings, now: datetime | None = None) -> int:
    """Delete history file sets (services/history.py) no version names that were not used for the
    grace period; their file rows go with them. A version about to name one touches it first (an
    upsert that locks it on PostgreSQL), as a submission does a source."""
    cutoff = (now or utcnow()) - timedelta(seconds=settings.source_gc_grace_s)
    unnamed = ~exists().where(SessionVersion.set_hash == FileSet.hash)
    pick = select(FileSet.hash).where(FileSet.last_used_at < cutoff, unnamed).limit(settings.storage_cleanup_batch)
    stmt = delete(FileSet).where(FileSet.last_used_at < cutoff, unnamed, FileSet.hash.in_(pick.scalar_subquery()))
    try:
        return _in_rounds(db, stmt, settings.storage_cleanup_batch)
    except IntegrityError:
        log.warning("a file set became named while being collected; it was kept", exc_info=True)
        return 0


def _in_rounds(db: Database, stmt: Any, batch: int) -> int:
    total = 0
    for _ in range(MAX_ROUNDS):
        with db.write_core() as conn:
            deleted = int(conn.execute(stmt).rowcount)
        total += deleted
        if deleted < batch:
            break
    return total
