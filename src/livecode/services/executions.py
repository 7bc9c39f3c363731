"""Executions: submit (API side) and the state transitions (worker side). No Flask, no Celery.

Every transition is a conditional UPDATE on the row's current status (and attempt number), so a
task delivered twice, or a run the reconciler already gave up on, changes nothing.
"""

from __future__ import annotations

import base64
import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

from sqlalchemy import Table, bindparam, exists, func, select, update
from sqlalchemy.exc import IntegrityError

from ..config import Settings
from ..db import Database
from ..errors import Conflict, ValidationError
from ..infra.languages import LanguageCatalog
from ..models import (
    ACTIVE_STATUSES,
    CodeSession,
    Execution,
    ExecutionStatus,
    Priority,
    Source,
    WebhookDelivery,
    status_values,
    utcnow,
)
from ..sandbox.outputs import OutputFile
from ..sandbox.program import SourceFile
from ..sandbox.types import RunRequest, SandboxLimits, text_view
from ..streaming.bus import EventBus, RedisEventBus
from ..streaming.publisher import event_queued, publish_queued
from . import history, output_files, storage, submission_sql, testcases
from .access import Need, execution_access, execution_not_found, refuse, role_of, session_access
from .sessions import iso, not_found
from .snapshots import snapshot_files, snapshot_of
from .validation import check_language, check_text

log = logging.getLogger(__name__)

EXECUTIONS = cast(Table, Execution.__table__)  # for Core statements

# (execution_id, priority, request_id) -> None; publishes the id on the queue.
Enqueue = Callable[[uuid.UUID, str, str | None], None]
# Runs a callable later (the API's: once the response has been sent).
Defer = Callable[[Callable[[], None]], object]

LIMIT_FIELDS = (
    "time_limit_ms", "cpu_time_ms", "cpu_extra_ms", "memory_limit_mb", "max_processes", "max_output_bytes",
    "max_file_size_kb", "stack_kb",
)

# How stdout, stderr and compile_output are returned. "text": UTF-8 with every undecodable
# sequence replaced by U+FFFD (what the event stream sends). "base64": the exact bytes written.
OUTPUT_ENCODINGS = ("text", "base64")


@dataclass
class ExecuteOptions:
    stdin: str = ""
    args: list[str] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)
    priority: str = Priority.INTERACTIVE.value
    interactive: bool = False  # stdin stays open for input sent over the WebSocket
    merge_stderr: bool = False  # the program's stderr goes into its stdout (2>&1)
    tests: list[testcases.TestCase] | None = None  # run once per test, with verdicts
    compare: str | None = None  # how each test's output is compared (services/compare.py)


def limit_maxima(settings: Settings) -> dict[str, int]:
    return {
        "time_limit_ms": settings.max_time_limit_ms,
        "cpu_time_ms": settings.max_time_limit_ms,
        "cpu_extra_ms": settings.max_time_limit_ms,
        "memory_limit_mb": settings.max_memory_limit_mb,
        "max_processes": settings.max_processes,
        "max_output_bytes": settings.max_output_bytes,
        "max_file_size_kb": settings.max_file_size_limit_kb,
        "stack_kb": settings.max_stack_limit_kb,
    }


def limit_minimum(name: str) -> int:
    """The least a request may ask for: 1, except no extra CPU time (the normal case)."""
    return 0 if name == "cpu_extra_ms" else 1


def effective_cpu_ms(limits: dict[str, int], default_time_ms: int) -> int:
    """The CPU limit a run gets: asked for, else its wall-time limit (asked for, else the default)."""
    return limits.get("cpu_time_ms", limits.get("time_limit_ms", default_time_ms))


def check_options(opts: ExecuteOptions, settings: Settings) -> None:
    check_text(opts.stdin, "stdin", settings.max_stdin_bytes)
    if len(opts.args) > 64:
        raise ValidationError("args may hold at most 64 items", code="INVALID_ARGS")
    for arg in opts.args:
        check_text(arg, "args", 4096)
    maxima = limit_maxima(settings)
    for name, value in opts.limits.items():
        if name not in maxima:
            raise ValidationError(f"unknown limit {name!r}; known: {', '.join(LIMIT_FIELDS)}")
        least = limit_minimum(name)
        if value < least:
            raise ValidationError(f"{name} must be at least {least}", code="INVALID_LIMIT")
        if value > maxima[name]:
            raise ValidationError(
                f"{name}={value} is above the maximum of {maxima[name]}",
                code="LIMIT_ABOVE_MAXIMUM",
                details={"limit": name, "maximum": maxima[name]},
            )
    extra = opts.limits.get("cpu_extra_ms", 0)
    if extra:  # the program is killed at cpu + extra: together they stay within the CPU maximum
        cpu = effective_cpu_ms(opts.limits, settings.time_limit_ms)
        if cpu + extra > settings.max_time_limit_ms:
            raise ValidationError(
                f"cpu_time_ms + cpu_extra_ms = {cpu + extra} is above the maximum of {settings.max_time_limit_ms}",
                code="LIMIT_ABOVE_MAXIMUM",
                details={"limit": "cpu_extra_ms", "maximum": max(0, settings.max_time_limit_ms - cpu)},
            )
    if opts.priority not in {p.value for p in Priority}:
        raise ValidationError("priority must be 'interactive' or 'batch'", code="INVALID_PRIORITY")
    testcases.check_tests(opts.tests, opts.compare, settings, stdin=opts.stdin, args=opts.args,
                          interactive=opts.interactive)


def check_encoding(value: str | None) -> str:
    """The output encoding a client asked for (default "text"); 400 for an unknown one."""
    if value is None or value == "":
        return "text"
    if value not in OUTPUT_ENCODINGS:
        raise ValidationError(
            f"unknown output encoding {value[:40]!r}; known: {', '.join(OUTPUT_ENCODINGS)}",
            code="INVALID_ENCODING",
            details={"allowed": list(OUTPUT_ENCODINGS)},
        )
    return value


def encode_output(data: bytes | None, encoding: str = "text") -> str | None:
    if data is None:
        return None
    if encoding == "base64":
        return base64.b64encode(data).decode("ascii")
    return text_view(data)


def serialize_execution(e: Execution, encoding: str = "text") -> dict[str, Any]:
    return {
        "execution_id": str(e.id),
        "session_id": str(e.session_id),
        "status": e.status,
        "reason": e.reason,
        "language": e.language,
        "entry": e.entry,
        "version": e.history_version,
        "priority": e.priority,
        "interactive": e.interactive,
        "merge_stderr": e.merge_stderr,
        "encoding": encoding,
        "stdout": encode_output(e.stdout, encoding),
        "stderr": encode_output(e.stderr, encoding),
        "compile_output": encode_output(e.compile_output, encoding),
        "stdout_truncated": e.stdout_truncated,
        "stderr_truncated": e.stderr_truncated,
        "exit_code": e.exit_code,
        "signal": e.signal,
        "execution_time_ms": e.execution_time_ms,
        "cpu_time_ms": e.cpu_time_ms,
        "memory_kb": e.memory_kb,
        "files_truncated": e.files_truncated,
        "attempts": e.attempts,
        "worker": e.worker,
        "queued_at": iso(e.queued_at),
        "started_at": iso(e.started_at),
        "finished_at": iso(e.finished_at),
        **testcases.serialize_tests(e.tests, e.test_results, encoding, e.compare_mode),
    }


class _NotInserted(Exception):
    pass


class _Unreadable(Exception):
    """The session is not there, or not the caller's to run: refused outside the transaction."""


def _refusal(db: Database, settings: Settings, session_id: uuid.UUID, owner: uuid.UUID | None) -> NoReturn:
    """Why INSERT ... SELECT inserted nothing: the owner is at the cap, or the session is gone."""
    with db.read(fresh=True) as s:
        exists = s.execute(select(CodeSession.id).where(CodeSession.id == session_id)).scalar() is not None
        count = storage.stored_executions(s, settings, owner) if settings.max_stored_executions else 0
    if exists and settings.max_stored_executions and count >= settings.max_stored_executions:
        raise storage.execution_quota_error(settings, count)
    raise not_found(session_id)


def _one_active_conflict(exc: IntegrityError) -> bool:
    """The insert met the session's interactive run (its one-active unique index), not another
    constraint: PostgreSQL names the index; SQLite says which columns were not unique."""
    diag = getattr(exc.orig, "diag", None)
    if diag is not None:
        return getattr(diag, "constraint_name", None) == "uq_executions_one_active_per_session"
    return "UNIQUE constraint failed: executions.session_id" in str(exc.orig)


def _active_execution(db: Database, session_id: uuid.UUID) -> tuple[uuid.UUID | None, bool]:
    """The session's active interactive run, if any, and whether the session exists."""
    with db.read(fresh=True) as s:
        active = s.execute(
            select(Execution.id).where(
                Execution.session_id == session_id,
                Execution.status.in_(status_values(ACTIVE_STATUSES)),
                Execution.priority == Priority.INTERACTIVE.value,
            )
        ).scalar()
        if active is not None:
            return active, True
        return None, s.execute(select(CodeSession.id).where(CodeSession.id == session_id)).first() is not None


def _submit_in_one(db: Database, session_id: uuid.UUID, owner_id: uuid.UUID | None, cap: int,
                   languages: LanguageCatalog | None, params: dict[str, Any]) -> Any:
    """A single-file run in one statement (services/submission_sql.py): the session row, with
    `inserted` set when the statement inserted the run. The statement is chosen by what this
    session's last run here did: a rerun of the code its newest version holds (submit_unchanged,
    the leaner) or code that made a version (submit_single); a wrong guess of "unchanged" costs a
    second statement, never a wrong row."""
    params.update(submission_sql.language_params(languages))
    guess = submission_sql.reruns.get(session_id, False)
    by_owner = owner_id is not None
    row = db.first(submission_sql.submit_unchanged(cap, by_owner) if guess
                   else submission_sql.submit_single(cap, by_owner), params, primary=True)
    if guess and row is not None and row.inserted is None:  # edited since: its version is to be made
        row = db.first(submission_sql.submit_single(cap, by_owner), params, primary=True)
    submission_sql.remember_run(session_id, None if row is None or row.inserted is None else row.made is None)
    return row


def submit_execution(
    db: Database,
    enqueue: Enqueue,
    settings: Settings,
    session_id: uuid.UUID,
    *,
    owner_id: uuid.UUID | None,
    options: ExecuteOptions,
    events: EventBus,
    request_id: str | None = None,
    on_queued: Callable[[uuid.UUID], object] | None = None,
    languages: LanguageCatalog | None = None,
    after_insert: Callable[[Any, uuid.UUID, uuid.UUID | None], object] | None = None,
    before_insert: Callable[[], object] | None = None,
    defer: Defer | None = None,
    _retry_freed_slot: bool = True,
) -> dict[str, Any]:
    """Insert a QUEUED execution of the session's code (stored once, by hash: services/storage.py),
    publish its QUEUED event, then queue its id. `on_queued` runs just before the id is queued (a
    waiter listens for the end there, so the end cannot pass unheard); its failure is logged,
    never the caller's. On PostgreSQL a single-file run is one statement (_submit_in_one); else
    the session read, then the source and the execution in one Core transaction;
    `after_insert(conn, execution_id, owner)` adds rows that belong with the execution (its
    webhook, its Judge0 extras) in that transaction. `before_insert()` runs before anything is
    written (on PostgreSQL before the one statement, else after the session read); what it
    raises refuses the submission (the API's rate-limit charge, whose answer arrives meanwhile).
    `defer`: see queue_runs. (`_retry_freed_slot`: internal, the one retry below.)
    """
    check_options(options, settings)
    execution_id = uuid.uuid4()
    now = utcnow()
    user_id: uuid.UUID | None = None
    cap = settings.max_stored_executions
    params = {
        "p_id": execution_id, "p_stdin": options.stdin, "p_args": options.args,
        "p_limits": options.limits, "p_priority": options.priority, "p_interactive": options.interactive,
        "p_merge_stderr": options.merge_stderr, "p_request_id": request_id, "p_now": now, "p_sid": session_id,
        "p_tests": testcases.stored_tests(options.tests), "p_compare": options.compare,
    }
    try:
        # The session is read in autocommit (no BEGIN). On PostgreSQL a run of a single-file
        # program is that read's own statement, its own transaction, one round trip in all
        # (_submit_in_one); when that statement cannot insert (a multi-file program, a refusal to
        # explain, a race) it returns the session row, and the rest goes on from there as from
        # the read that SQLite and a submission with after_insert's rows make: a run of unchanged
        # single-file code writes in one statement, anything more in one transaction after it.
        if not db.is_sqlite and after_insert is None:
            if before_insert is not None:  # before anything is written: the statement may write
                before_insert()
            session = _submit_in_one(db, session_id, owner_id, cap, languages, {
                **params, "p_caller": owner_id, "p_author": owner_id, "touch_before": now - storage.TOUCH_EVERY})
            if session is None:
                raise _Unreadable
            done = session.inserted is not None
        else:
            with db.write_one() as conn:
                session = conn.execute(
                    submission_sql.session_for_run(owner_id is not None), {"p_sid": session_id, "p_owner": owner_id}
                ).first()
            if session is None:
                raise _Unreadable
            if before_insert is not None:
                before_insert()
            done = False
        user_id = session.user_id
        if not done:
            check_language(session.language, languages)
            snapshot = snapshot_of(session)
            newest_known = (session.history_seq, session.history_set)
            # The run is of the code as read above (the code when the request came). INSERT
            # ... SELECT inserts nothing if the session is gone by now, or if its owner is at
            # the storage cap. RETURNING, not rowcount: psycopg reports -1 for an INSERT ...
            # SELECT that inserted nothing.
            params.update({"p_hash": snapshot.entry_hash, "p_entry": snapshot.entry, "p_owner": user_id})
            with db.write_core() as conn:
                storage.store_sources(conn, snapshot.texts, now)
                # The history version of the code it runs (services/history.py); rolled back with
                # the execution when the insert below is refused.
                params["p_version"] = history.record_run(
                    conn, session_id, snapshot, session.language, author=owner_id or user_id,
                    execution_id=execution_id, now=now, newest_known=newest_known)
                stmt = submission_sql.insert_execution(cap, user_id is None)
                if conn.execute(stmt, params).first() is None:
                    raise _NotInserted  # rolls back the source too: a refusal changes nothing
                snapshot.insert_files(conn, [execution_id])
                if after_insert is not None:
                    after_insert(conn, execution_id, user_id)
    except _Unreadable:
        refuse(session_id, role_of(db, session_id, owner_id), Need.RUN)
    except _NotInserted:
        _refusal(db, settings, session_id, user_id)
    except IntegrityError as exc:
        active, exists = _active_execution(db, session_id)
        if active is None and exists and _retry_freed_slot and _one_active_conflict(exc):  # it ended meanwhile
            return submit_execution(db, enqueue, settings, session_id, owner_id=owner_id, options=options,
                                    events=events, request_id=request_id, on_queued=on_queued, languages=languages,
                                    after_insert=after_insert, before_insert=before_insert, defer=defer,
                                    _retry_freed_slot=False)
        if active is None:  # the session was deleted between the read and the insert
            raise not_found(session_id) from exc
        raise Conflict(
            f"session {session_id} already has an execution in progress: {active}",
            code="EXECUTION_IN_PROGRESS",
            details={"active_execution_id": str(active)},
        ) from exc
    if on_queued is not None:
        try:
            on_queued(execution_id)
        except Exception:  # noqa: BLE001 - an event is a convenience; the row is the truth
            log.warning("on_queued failed", extra={"execution_id": str(execution_id)}, exc_info=True)
    queue_runs(events, enqueue, [execution_id], options.priority, request_id, defer)
    return {
        "execution_id": str(execution_id),
        "status": ExecutionStatus.QUEUED.value,
        "session_id": str(session_id),
        "queued_at": iso(now),
    }


def queue_runs(events: EventBus, enqueue: Enqueue, execution_ids: list[uuid.UUID], priority: str,
               request_id: str | None, defer: Defer | None = None) -> None:
    """Publish new runs' QUEUED events, then put their ids on the queue (a follower sees QUEUED
    before the worker's RUNNING). When the enqueue hands over its broker messages (`message`: the
    API's, worker/celery_app.py) and the bus is on Redis, both go in one round trip. An id that
    could not be queued is logged; its row stays QUEUED and the reconciler queues it.

    With `defer` (the API's: after the response has been sent) that round trip's commands are
    written to Redis now and its replies read later: what they could say changes nothing the
    caller answers (a failure is logged, as without it), so the answer need not wait for them."""
    message = getattr(enqueue, "message", None)
    ids = [str(i) for i in execution_ids]

    def failed(count: int) -> None:  # in the except block: the log carries the cause
        log.warning("enqueue failed; the reconciler will queue them", exc_info=True,
                    extra={"execution_id": ids[0] if len(ids) == 1 else None, "failed": count})

    if message is not None and isinstance(events, RedisEventBus):
        try:
            # A failure here is the enqueue's too (the runs' messages were not pushed either).
            sent = events.send_each(ids, *event_queued(), [message(i, priority, request_id) for i in execution_ids])
        except Exception:  # noqa: BLE001 - the row is the truth; the reconciler queues it again
            failed(len(ids))
            return

        def confirm() -> None:
            try:
                sent.replies()
            except Exception:  # noqa: BLE001 - as above
                failed(len(ids))

        if defer is None or not sent.on_the_wire:  # a failed send is retried before the answer
            confirm()
        else:
            defer(confirm)
        return
    publish_queued(events, ids)
    for execution_id in execution_ids:
        try:
            enqueue(execution_id, priority, request_id)
        except Exception:  # noqa: BLE001 - as above
            failed(1)


# Columns serialize_execution does not show: neither a GET nor the worker's final write reads them.
_NOT_SERIALIZED = {"user_id", "source_hash", "stdin", "args", "limits", "request_id", "compile_cached"}

@functools.cache
def _execution_by_id(by_owner: bool) -> Any:
    t = Execution.__table__.c
    # What serialize_execution reads: a GET (a poll) leaves stdin (it can be large), args and
    # limits (JSON to decode) and the rest of _NOT_SERIALIZED in PostgreSQL.
    q = select(*(c for c in t if c.name not in _NOT_SERIALIZED)).where(t.id == bindparam("p_eid"))
    # The session's owner or a member of it (services/access.py).
    return q.where(execution_access(bindparam("p_owner", type_=t.user_id.type))) if by_owner else q


def get_execution(
    db: Database, execution_id: uuid.UUID, owner_id: uuid.UUID | None, encoding: str = "text"
) -> dict[str, Any]:
    # Core: the row's columns are all serialize_execution reads; one statement, no transaction.
    row = db.first(_execution_by_id(owner_id is not None), {"p_eid": execution_id, "p_owner": owner_id},
                   primary=True)
    if row is None:
        raise execution_not_found(execution_id)
    return serialize_execution(row, encoding)  # type: ignore[arg-type]


def list_executions(
    db: Database, session_id: uuid.UUID, owner_id: uuid.UUID | None, page: int, per_page: int,
    encoding: str = "text",
) -> dict[str, Any]:
    with db.read() as s:
        q = select(CodeSession.id).where(CodeSession.id == session_id)
        if owner_id is not None:
            q = q.where(session_access(Need.VIEW, owner_id))
        if s.execute(q).scalar() is None:
            raise not_found(session_id)
        total = s.execute(
            select(func.count()).select_from(Execution).where(Execution.session_id == session_id)
        ).scalar_one()
        rows = s.scalars(
            select(Execution)
            .where(Execution.session_id == session_id)
            .order_by(Execution.queued_at.desc(), Execution.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        ).all()
        return {
            "items": [serialize_execution(r, encoding) for r in rows],
            "page": page,
            "per_page": per_page,
            "total": total,
        }


# ---- worker-side transitions -------------------------------------------------------------


@dataclass
class ClaimedRun:
    execution_id: uuid.UUID
    attempt: int
    language: str
    source_code: str
    stdin: str
    args: list[str]
    limits: dict[str, int]
    request_id: str | None
    interactive: bool = False
    tests: list[dict[str, Any]] | None = None  # the test cases' definitions (services/testcases.py)
    compare: str | None = None
    # A multi-file program: every file (path, content) in order, and the entry; None: source_code
    # is the whole program.
    files: list[tuple[str, str]] | None = None
    entry: str | None = None
    merge_stderr: bool = False  # the program's stderr goes into its stdout (2>&1)
    # Callbacks were scheduled with it (services/webhooks): only then does its end wake the
    # worker's webhook thread, whose look for due deliveries is a query per run otherwise.
    has_webhooks: bool = False

    def run_request(self, limits: SandboxLimits, stdin: str = "", args: tuple[str, ...] = ()) -> RunRequest:
        """The sandbox's request for this run's program (one file, or its files and entry)."""
        return RunRequest(
            language=self.language, source=self.source_code, stdin=stdin, args=args, limits=limits,
            files=tuple(SourceFile.text(path, content) for path, content in self.files or ()), entry=self.entry,
            merge_stderr=self.merge_stderr,
        )


def _claim_statement() -> Any:
    t = Execution.__table__.c
    return (
        update(EXECUTIONS)
        .where(t.id == bindparam("p_eid"), t.status == ExecutionStatus.QUEUED.value)
        .values(
            status=ExecutionStatus.RUNNING.value,
            started_at=bindparam("p_now", type_=t.started_at.type),
            worker=bindparam("p_worker", type_=t.worker.type),
            attempts=t.attempts + 1,
        )
        .returning(
            t.attempts,
            t.language,
            # The code by hash, in the same statement: a referenced source is never collected.
            select(Source.content).where(Source.hash == t.source_hash).scalar_subquery().label("source_code"),
            t.stdin,
            t.args,
            t.limits,
            t.request_id,
            t.interactive,
            t.merge_stderr,
            t.tests,
            t.compare_mode,
            t.entry,
            # By the bound id: RETURNING names columns unqualified, so `t.id` would be the
            # deliveries' own id inside this subquery.
            exists().where(WebhookDelivery.execution_id == bindparam("p_eid")).label("has_webhooks"),
        )
    )


# Built once: a statement object reused keeps its cache key (not recomputed per run).
_CLAIM = _claim_statement()


def claim_execution(db: Database, execution_id: uuid.UUID, worker: str) -> ClaimedRun | None:
    """QUEUED -> RUNNING. None when the execution is not QUEUED (already taken, done, gone)."""
    # A transaction, not write_one: a worker that dies while its claim waits on the row lock
    # leaves a transaction that PostgreSQL rolls back (the run stays QUEUED); a statement in
    # autocommit would commit a claim that nobody holds. Two round trips: the BEGIN goes with the
    # UPDATE (db.write_core), then the COMMIT.
    with db.write_core() as conn:  # Core: one statement, none of the ORM session's bookkeeping
        row = conn.execute(_CLAIM, {"p_eid": execution_id, "p_now": utcnow(), "p_worker": worker}).first()
        files = snapshot_files(conn, execution_id) if row is not None and row.entry is not None else None
    if row is None:
        return None
    return ClaimedRun(
        execution_id,
        row.attempts,
        row.language,
        row.source_code,
        row.stdin,
        list(row.args or []),
        dict(row.limits or {}),
        row.request_id,
        bool(row.interactive),
        row.tests,
        row.compare_mode,
        files=files,
        entry=row.entry,
        merge_stderr=bool(row.merge_stderr),
        has_webhooks=bool(row.has_webhooks),
    )


def finish_execution(
    db: Database, execution_id: uuid.UUID, attempt: int, status: ExecutionStatus, **result: Any
) -> bool:
    """RUNNING -> terminal, only for the attempt that is still current."""
    return finish_execution_returning(db, execution_id, attempt, status, **result) is not None


def finish_execution_returning(
    db: Database, execution_id: uuid.UUID, attempt: int, status: ExecutionStatus,
    files: Sequence[OutputFile] = (), **result: Any,
) -> dict[str, Any] | None:
    """finish_execution that also returns the finished execution as GET returns it (from the
    UPDATE's RETURNING: no second read), or None when the row was not the attempt's to finish.
    `files` (what the run left in out/) are stored in the same transaction as the result."""
    # The SET clause is the parameters' column keys (status, finished_at and the result's).
    values = {"status": status.value, "finished_at": utcnow(), **result, "p_eid": execution_id, "p_attempt": attempt}
    if files:
        with db.write_core() as tx:
            row = tx.execute(_FINISH, values).first()
            if row is not None:
                output_files.store_files(tx, execution_id, files)
        return serialize_execution(row) if row is not None else None  # type: ignore[arg-type]
    # write_one: a result committed after its worker died is still the run's result (its
    # message, never acked, finds the row terminal and is skipped).
    with db.write_one() as conn:  # Core: the row's columns are all serialize_execution reads
        row = conn.execute(_FINISH, values).first()
    return serialize_execution(row) if row is not None else None  # type: ignore[arg-type]


_FINISH = (
    update(EXECUTIONS)
    .where(
        Execution.__table__.c.id == bindparam("p_eid"),
        Execution.__table__.c.status == ExecutionStatus.RUNNING.value,
        Execution.__table__.c.attempts == bindparam("p_attempt"),
    )
    # What serialize_execution reads: not the run's stdin (up to the stdin cap), args, limits,
    # owner, source hash, request id, which GET does not show.
    .returning(*(c for c in EXECUTIONS.columns if c.name not in _NOT_SERIALIZED))
)


def release_execution(db: Database, execution_id: uuid.UUID, attempt: int) -> bool:
    """RUNNING -> QUEUED for a run that was interrupted before it could finish (worker shutdown)."""
    stmt = (
        update(Execution)
        .where(
            Execution.id == execution_id,
            Execution.status == ExecutionStatus.RUNNING.value,
            Execution.attempts == attempt,
        )
        .values(status=ExecutionStatus.QUEUED.value, worker=None, started_at=None)
    )
    with db.write() as s:
        return bool(s.execute(stmt).rowcount)  # type: ignore[attr-defined]


def fail_queued(db: Database, execution_id: uuid.UUID, reason: str, message: str) -> bool:
    """QUEUED or RUNNING -> FAILED, e.g. when the task gave up after its retries. `message` is
    shown to the user: a generic text, never exception details."""
    stmt = (
        update(Execution)
        .where(Execution.id == execution_id, Execution.status.in_(status_values(ACTIVE_STATUSES)))
        .values(status=ExecutionStatus.FAILED.value, reason=reason, stderr=message.encode(), finished_at=utcnow())
    )
    with db.write() as s:
        return bool(s.execute(stmt).rowcount)  # type: ignore[attr-defined]
