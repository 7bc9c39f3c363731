"""Batch submission (design 4.2, 4.3): many low-priority executions in one request and one
transaction. No Flask here."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import Database
from ..infra.languages import LanguageCatalog
from ..models import CodeSession, Execution, ExecutionStatus, Priority, utcnow
from ..streaming.bus import EventBus
from . import history, storage, testcases
from .access import Need, refuse, role_of, session_access
from .executions import Enqueue, ExecuteOptions, check_options, queue_runs
from .sessions import iso, not_found
from .snapshots import snapshot_of
from .validation import check_language

MAX_BATCH = 1000


@dataclass
class BatchItem:
    session_id: uuid.UUID
    options: ExecuteOptions


def submit_batch(
    db: Database,
    enqueue: Enqueue,
    settings: Settings,
    items: list[BatchItem],
    *,
    owner_id: uuid.UUID | None,
    events: EventBus,
    request_id: str | None = None,
    charge: Callable[[int], None] | None = None,
    languages: LanguageCatalog | None = None,
    after_insert: Callable[[Session, list[uuid.UUID]], object] | None = None,
) -> dict[str, Any]:
    """Queue every item on the low-priority queue, or none of them: every session must exist and
    belong to the caller, and every option be valid, before anything is written. Each execution
    gets its QUEUED event, as a single run does. `charge(n)` (the
    rate limit) is called with the number of runs right before they are inserted; it refuses the
    whole batch by raising. `after_insert(session, ids)` adds rows that belong with the runs
    (their webhooks) in the same transaction."""
    for item in items:
        item.options.priority = Priority.BATCH.value
        check_options(item.options, settings)
    wanted = {item.session_id for item in items}
    with db.read(fresh=True) as s:
        q = select(CodeSession.id, CodeSession.user_id, CodeSession.language, CodeSession.source_code,
                   CodeSession.files, CodeSession.entry).where(CodeSession.id.in_(wanted))
        if owner_id is not None:
            q = q.where(session_access(Need.RUN, owner_id))
        sessions = {row.id: row for row in s.execute(q)}
    for sid in sorted(wanted - set(sessions), key=str):
        if owner_id is not None:
            refuse(sid, role_of(db, sid, owner_id), Need.RUN)  # 404 to a stranger, 403 to a viewer
        raise not_found(sid)
    for language in {row.language for row in sessions.values()}:
        check_language(language, languages)

    now = utcnow()
    snapshots = {sid: snapshot_of(row) for sid, row in sessions.items()}
    rows = []
    for item in items:
        src = sessions[item.session_id]
        rows.append({
            "id": uuid.uuid4(), "session_id": src.id, "user_id": src.user_id, "language": src.language,
            "source_hash": snapshots[src.id].entry_hash, "entry": snapshots[src.id].entry,
            "stdin": item.options.stdin, "args": item.options.args,
            "limits": item.options.limits, "priority": Priority.BATCH.value, "merge_stderr": item.options.merge_stderr,
            "status": ExecutionStatus.QUEUED.value, "stdout_truncated": False, "stderr_truncated": False,
            "attempts": 0, "request_id": request_id, "queued_at": now,
            "tests": testcases.stored_tests(item.options.tests), "compare_mode": item.options.compare,
        })
    with db.write() as s:
        # Each distinct source once (a batch of 1000 runs of one session stores its code once);
        # written first, so that SQLite takes the write lock before the quota is counted.
        storage.store_sources(s, {h: text for snap in snapshots.values() for h, text in snap.texts.items()}, now)
        _check_quota(s, settings, rows)  # raising rolls back: a refused batch changes nothing
        if charge is not None:  # the rate limit last: a batch refused for any other reason costs nothing
            charge(len(rows))
        # One history version per session of the batch (services/history.py): every file set first,
        # then the session rows in one order, as every writer takes its locks (history.record).
        conn = s.connection()
        refs = {sid: history.ref_of_snapshot(snapshots[sid], sessions[sid].language) for sid in snapshots}
        for sid in sorted(refs, key=str):
            history.store_set(conn, refs[sid], now, sources_stored=True)
        for sid in sorted(refs, key=str):
            mine = [row for row in rows if row["session_id"] == sid]
            number = history.record(conn, sid, refs[sid], reason="execution", author=owner_id or sessions[sid].user_id,
                                    now=now, execution_id=mine[0]["id"], only_if_changed=True, set_stored=True)
            for row in mine:
                row["history_version"] = number
        s.execute(insert(Execution), rows)
        for sid, snap in snapshots.items():
            snap.insert_files(s, [row["id"] for row in rows if row["session_id"] == sid])
        if after_insert is not None:
            after_insert(s, [row["id"] for row in rows])
    queue_runs(events, enqueue, [row["id"] for row in rows], Priority.BATCH.value, request_id)
    return {
        "count": len(rows),
        "executions": [
            {"execution_id": str(r["id"]), "session_id": str(r["session_id"]), "status": r["status"],
             "queued_at": iso(now)}
            for r in rows
        ],
    }


def _check_quota(s: Session, settings: Settings, rows: list[dict[str, Any]]) -> None:
    """Refuse the whole batch if it would take an owner over the stored-executions cap."""
    cap = settings.max_stored_executions
    if not cap:
        return
    for owner, requested in Counter(row["user_id"] for row in rows).items():
        count = storage.stored_executions(s, settings, owner)
        if count + requested > cap:
            raise storage.execution_quota_error(settings, count, requested)
