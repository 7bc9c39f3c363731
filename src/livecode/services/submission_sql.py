"""The statements of a submission (services/executions.py `submit_execution`). No Flask.

On PostgreSQL a run of a single-file program is one statement, one round trip, its own
transaction (`submit_single`): it reads the session and, in the same statement, stores the
source, makes the history version of the code when the newest one does not hold it (the file
set, the session's history_seq, the version row, as history.record_run does) and inserts the
QUEUED execution. To know in SQL which version holds the code, PostgreSQL hashes it as
storage.source_hash does (sha256 of its UTF-8) and the file set's manifest around that hash as
history.FileSetRef.hash does (history.single_file_set_parts; tests compare the two). When the
statement cannot insert (a multi-file program, a language no worker runs, the storage cap, a
race with another version's writer) it writes nothing and returns the session row, which the
caller goes on with as from its own read (session_for_run): no extra round trip to learn why.
"""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any
from typing import cast as typed

from sqlalchemy import (
    Table,
    Text,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ..infra.languages import LanguageCatalog, LocalLanguages
from ..models import CodeSession, Execution, ExecutionStatus, FileSet, FileSetFile, SessionVersion, Source
from ..sandbox.languages import all_languages
from . import history, programs, storage
from .access import Need, session_access
from .snapshots import sql_hash, sql_utf8

EXECUTIONS = typed(Table, Execution.__table__)

INSERT_COLUMNS = [
    "id", "session_id", "user_id", "language", "source_hash", "entry", "stdin", "args", "limits", "priority",
    "interactive", "merge_stderr", "status", "stdout_truncated", "stderr_truncated", "attempts", "request_id",
    "queued_at", "tests", "compare_mode", "history_version", "files_truncated",
]


def _copy(session: Any, source_hash: Any, entry: Any, version: Any) -> Any:
    """The SELECT list of INSERT_COLUMNS: the session's columns (`session`: the table's or a CTE's)
    and the request's, bound."""
    t = EXECUTIONS.c
    return select(
        bindparam("p_id", type_=t.id.type),
        session.id,
        session.user_id,
        session.language,
        source_hash,
        entry,
        bindparam("p_stdin", type_=t.stdin.type),
        bindparam("p_args", type_=t.args.type),
        bindparam("p_limits", type_=t.limits.type),
        bindparam("p_priority", type_=t.priority.type),
        bindparam("p_interactive", type_=t.interactive.type),
        bindparam("p_merge_stderr", type_=t.merge_stderr.type),
        literal(ExecutionStatus.QUEUED.value),
        literal(False),
        literal(False),
        literal(0),
        bindparam("p_request_id", type_=t.request_id.type),
        bindparam("p_now", type_=t.queued_at.type),
        bindparam("p_tests", type_=t.tests.type),
        bindparam("p_compare", type_=t.compare_mode.type),
        version,
        literal(False),  # files_truncated, named: with a CTE added, SQLAlchemy leaves its default unfilled
    )


# What a submission reads of its session (the run's code and program, its owner, its history's newest).
_SESSION_COLUMNS = (CodeSession.language, CodeSession.source_code, CodeSession.user_id, CodeSession.files,
                    CodeSession.entry, CodeSession.history_seq, CodeSession.history_set)


@functools.cache
def session_for_run(by_owner: bool) -> Any:
    """The session read of a submission that does not go through submit_single (SQLite, a callback's rows)."""
    q = select(*_SESSION_COLUMNS).where(CodeSession.id == bindparam("p_sid"))
    # The owner or an editor (services/access.py).
    return q.where(session_access(Need.RUN, bindparam("p_owner", type_=CodeSession.user_id.type))) if by_owner else q


@functools.cache
def insert_execution(cap: int, anonymous: bool) -> Any:
    """INSERT ... SELECT of one QUEUED execution from its session row, built once per storage cap
    (and anonymous or not) with bound parameters: a statement object reused keeps its cache key,
    which SQLAlchemy would otherwise compute anew from the tree on every submission."""
    t = EXECUTIONS.c
    copy = _copy(CodeSession, bindparam("p_hash", type_=t.source_hash.type), bindparam("p_entry", type_=t.entry.type),
                 bindparam("p_version", type_=t.history_version.type))
    condition = CodeSession.id == bindparam("p_sid")
    if cap:
        condition = condition & storage.under_execution_cap(cap, None if anonymous else bindparam("p_owner"))
    return insert(EXECUTIONS).from_select(INSERT_COLUMNS, copy.where(condition)).returning(t.id)


def _ready(cap: int, by_owner: bool, unchanged: bool) -> tuple[Any, Any]:
    """The session read (`sess`: session_for_run's columns and access rule, and the code's hash
    and size) and `ready`: its row when a run of it can be inserted by the statement, with the
    default path and the file set's hash of the code; `unchanged`: only when the newest history
    version holds the code already."""
    utf8 = sql_utf8(CodeSession.source_code)
    read = select(
        CodeSession.id, *_SESSION_COLUMNS, sql_hash(utf8).label("src_hash"), func.octet_length(utf8).label("src_size"),
    ).where(CodeSession.id == bindparam("p_sid"))
    if by_owner:  # the caller: the owner or an editor (services/access.py)
        read = read.where(session_access(Need.RUN, bindparam("p_caller", type_=CodeSession.user_id.type)))
    sess = read.cte("sess")
    s = sess.c
    # The session's language among those runnable now: [manifest start, default path], NULL for
    # any other (then nothing is written). One JSON text, cached: psycopg sends it as it is.
    lang = cast(bindparam("p_langs", type_=Text), JSONB).op("->", return_type=JSONB)(s.language)
    before = lang.op("->>", return_type=Text)(literal_column("0"))
    path = lang.op("->>", return_type=Text)(literal_column("1"))
    set_hash = sql_hash(sql_utf8(before.concat(s.src_hash).concat(bindparam("p_after", type_=Text))))
    conditions = [or_(s.entry.is_(None), s.files.is_(None)), path.is_not(None)]
    if unchanged:
        conditions.append(s.history_set == set_hash)
    if cap:  # the owner's: the session's user_id, or the anonymous executions when it has none
        conditions.append(case(
            (s.user_id.is_(None), _bounded_count(Execution.user_id.is_(None), cap)),
            else_=_bounded_count(Execution.user_id == s.user_id, cap),
        ) < cap)
    return sess, select(sess, path.label("path"), set_hash.label("set_hash")).where(*conditions).cte("ready")


def _answer(sess: Any, inserted: Any, made: Any) -> Any:
    """What both statements return: the session row, the execution's id (NULL: not inserted) and
    the number of the version made for it (NULL: none)."""
    s = sess.c
    made_number = select(made.c.history_seq).scalar_subquery() if made is not None else null()
    return select(s.language, s.source_code, s.user_id, s.files, s.entry, s.history_seq, s.history_set,
                  select(inserted.c.id).scalar_subquery().label("inserted"), made_number.label("made"))


def _after(cte: Any) -> Any:
    """True, once `cte` has run to its end: a write whose WHERE holds it waits for that CTE's
    (PostgreSQL runs a statement's CTEs in no promised order)."""
    return select(func.count()).select_from(cte).scalar_subquery() >= 0


def _stored_source(ready: Any, now: Any) -> Any:
    r = ready.c
    return storage.upsert_by_hash_from(
        typed(Table, Source.__table__), ["hash", "content", "size_bytes", "last_used_at"],
        select(r.src_hash, r.source_code, r.src_size, now),
    ).returning(Source.hash).cte("stored_source")


@functools.cache
def submit_unchanged(cap: int, by_owner: bool) -> Any:
    """PostgreSQL: submit_single for a run of code the newest history version holds already
    (the common rerun): the session read, the source's touch and the execution, nothing of the
    version's machinery (whose tables' locks and indexes cost PostgreSQL ~0.2 ms a statement, and
    its planning more). When the code changed it inserts nothing and returns the row, as
    submit_single when it cannot insert."""
    sess, ready = _ready(cap, by_owner, unchanged=True)
    r = ready.c
    now = bindparam("p_now", type_=EXECUTIONS.c.queued_at.type)
    source = _stored_source(ready, now)
    # The execution after the source (its WHERE reads the source's RETURNING): locks in the order
    # submit_single and history take them (the source, then the session's one-active slot). The
    # other order deadlocked with a concurrent submit_single of the same code (a process that
    # guessed "edited"): each held the lock the other waited for.
    inserted = (insert(EXECUTIONS)
                .from_select(INSERT_COLUMNS, _copy(r, r.src_hash, null(), r.history_seq).where(_after(source)))
                .returning(EXECUTIONS.c.id).cte("inserted"))
    return _answer(sess, inserted, None).add_cte(source)


@functools.cache
def submit_single(cap: int, by_owner: bool) -> Any:
    """PostgreSQL: the session read of session_for_run (the same columns, the same access rule)
    and `inserted`, the execution's id when the statement also inserted it; else NULL, and
    nothing is written but, in a race (below), the content-addressed source and file set.

    It inserts when the program is single-file (no execution_files rows), the session's language
    is among p_langs (what check_language accepts now, each with its file-set manifest's start
    and its default path: language_params) and the session's owner is under the storage cap. Then
    it stores the source and, when the newest history version (history_set) does not hold this
    code, the version's file set, bumps history_seq and inserts the version, as history.record_run
    does; the execution names that version, or the newest one when it holds the code.

    Locks are taken in history.record's order (the source, the file set, the session row): each
    write waits for the one before it (it reads the count of that one's RETURNING rows), since
    PostgreSQL runs a statement's CTEs in no promised order. The session row's bump is checked
    again on the row (as history._bump): when another writer made this very file set meanwhile,
    it matches nothing, nothing is inserted, and the caller's longer path names that version."""
    sess, ready = _ready(cap, by_owner, unchanged=False)
    r = ready.c
    now = bindparam("p_now", type_=EXECUTIONS.c.queued_at.type)
    new_set = r.history_set.is_distinct_from(r.set_hash)
    source = _stored_source(ready, now)
    file_set = storage.upsert_by_hash_from(
        typed(Table, FileSet.__table__), ["hash", "entry", "last_used_at"],
        select(r.set_hash, r.path, now).where(new_set, _after(source)),
    ).returning(FileSet.hash).cte("file_set")
    set_files = (pg_insert(FileSetFile)
                 .from_select(["set_hash", "position", "path", "source_hash"],
                              select(r.set_hash, literal(0), r.path, r.src_hash).where(new_set, _after(file_set)))
                 .on_conflict_do_nothing().returning(FileSetFile.set_hash).cte("set_files"))
    made = (update(CodeSession)
            .where(CodeSession.id == r.id, _after(set_files),
                   or_(CodeSession.history_set.is_(None), CodeSession.history_set != r.set_hash))
            .values(history_seq=CodeSession.history_seq + 1, history_set=r.set_hash)
            .returning(CodeSession.history_seq).cte("made"))
    author = func.coalesce(bindparam("p_author", type_=CodeSession.user_id.type), r.user_id)
    execution_id = bindparam("p_id", type_=EXECUTIONS.c.id.type)
    version_row = select(r.id, now, author, literal("execution"), null(), r.set_hash, execution_id, made.c.history_seq)
    version = (insert(SessionVersion)
               .from_select(["session_id", "created_at", "author_id", "reason", "label", "set_hash", "execution_id",
                             "number"], version_row.select_from(ready.join(made, true())))
               .returning(SessionVersion.number).cte("version"))
    named = or_(made.c.history_seq.is_not(None), r.history_set == r.set_hash)
    copy = _copy(r, r.src_hash, null(), func.coalesce(made.c.history_seq, r.history_seq))
    inserted = (insert(EXECUTIONS)
                .from_select(INSERT_COLUMNS, copy.select_from(ready.outerjoin(made, true())).where(named))
                .returning(EXECUTIONS.c.id).cte("inserted"))
    return _answer(sess, inserted, made).add_cte(source, file_set, set_files, made, version)


def _bounded_count(owned: Any, cap: int) -> Any:
    """storage's bounded count of the owner's executions (at most `cap` index entries read), the
    owner named by the enclosing statement's column."""
    rows = select(Execution.id).where(owned).correlate_except(Execution).limit(cap).subquery()
    return select(func.count()).select_from(rows).scalar_subquery()


# Per process, a guess (never the truth) of which statement a session's next run needs: True when
# its last run here found its code in its newest version (a rerun), False when it made one (its
# code was being edited). Bounded: cleared when full, as a guess costs one statement at most.
reruns: dict[uuid.UUID, bool] = {}
RERUNS_KEPT = 10_000


def remember_run(session_id: uuid.UUID, unchanged: bool | None) -> None:
    """What a session's run did: True, ran unchanged code; False, made a version; None, unknown."""
    if unchanged is None:
        reruns.pop(session_id, None)
        return
    if len(reruns) >= RERUNS_KEPT:
        reruns.clear()
    reruns[session_id] = unchanged


def language_params(languages: LanguageCatalog | None) -> dict[str, Any]:
    """submit_single's p_langs and p_after for the languages runnable now."""
    runnable = (languages or LocalLanguages()).runnable()
    return _language_params(None if runnable is None else frozenset(runnable))


@functools.lru_cache(maxsize=16)
def _language_params(runnable: frozenset[str] | None) -> dict[str, Any]:
    # As check_language: a declared language that a live worker offers (any, while none has said).
    parts = {lang.id: history.single_file_set_parts(lang.id)
             for lang in all_languages() if runnable is None or lang.id in runnable}
    after = next(iter(parts.values()))[1] if parts else ""
    paths = {lang: [before, programs.default_path(lang)] for lang, (before, _) in parts.items()}
    return {"p_langs": json.dumps(paths), "p_after": after}
