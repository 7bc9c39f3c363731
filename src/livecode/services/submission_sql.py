"""The statements of a submission (services/executions.py `submit_execution`). No Flask.

The common submission runs the session's code unchanged since its last run (a user pressing Run
again, a client polling results): a single-file program whose newest history version already
holds it, so the run makes no version. On PostgreSQL that submission is one statement, one round
trip: `submit_unchanged` reads the session, and, when the run needs nothing more, stores its
source and inserts the QUEUED execution in the same statement, which is its own transaction. To
know in SQL that the newest version holds the code, PostgreSQL hashes the code as
storage.source_hash does (sha256 of its UTF-8) and the file set's manifest around that hash as
history.FileSetRef.hash does; a hash PostgreSQL computed otherwise than Python would only never
match (the slow path then runs), never make a wrong row. When the run needs more (a history
version, a multi-file program's rows, a refusal to explain), the statement inserts nothing and
returns the session row, which the caller goes on with as from its own read: no extra round trip.
"""

from __future__ import annotations

import functools
import json
from typing import Any
from typing import cast as typed

from sqlalchemy import Table, Text, bindparam, case, cast, func, insert, literal, null, or_, select
from sqlalchemy.dialects.postgresql import JSONB

from ..infra.languages import LanguageCatalog, LocalLanguages
from ..models import CodeSession, Execution, ExecutionStatus
from ..sandbox.languages import all_languages
from . import history, storage
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


@functools.cache
def session_for_run(by_owner: bool) -> Any:
    """The session read of a submission that does not go through submit_unchanged."""
    q = select(CodeSession.language, CodeSession.source_code, CodeSession.user_id, CodeSession.files,
               CodeSession.entry, CodeSession.history_seq, CodeSession.history_set).where(
        CodeSession.id == bindparam("p_sid"))
    # The owner or an editor (services/access.py).
    return q.where(session_access(Need.RUN, bindparam("p_owner", type_=CodeSession.user_id.type))) if by_owner else q


@functools.cache
def insert_execution(cap: int, anonymous: bool, with_source: bool = False) -> Any:
    """INSERT ... SELECT of one QUEUED execution from its session row, built once per storage cap
    (and anonymous or not) with bound parameters: a statement object reused keeps its cache key,
    which SQLAlchemy would otherwise compute anew from the tree on every submission. With
    `with_source` (PostgreSQL) the statement also stores the source, under the same condition."""
    t = EXECUTIONS.c
    copy = _copy(CodeSession, bindparam("p_hash", type_=t.source_hash.type), bindparam("p_entry", type_=t.entry.type),
                 bindparam("p_version", type_=t.history_version.type))
    condition = CodeSession.id == bindparam("p_sid")
    if cap:
        condition = condition & storage.under_execution_cap(cap, None if anonymous else bindparam("p_owner"))
    stmt = insert(EXECUTIONS).from_select(INSERT_COLUMNS, copy.where(condition)).returning(t.id)
    return stmt.add_cte(storage.source_upsert_where(condition).cte("stored_source")) if with_source else stmt


@functools.cache
def submit_unchanged(cap: int, by_owner: bool) -> Any:
    """PostgreSQL: the session read of session_for_run (the same columns, the same access rule)
    and `inserted`, the execution's id when the statement also inserted it (with its source)
    because the run needs nothing more; else NULL, and nothing is written.

    Inserted only when: the program is single-file (no execution_files rows); the session's
    language is among p_langs (what check_language accepts now, each with its manifest's start:
    history.single_file_set_parts); the newest history version (history_set) is the file
    set of this code (its number becomes the execution's version); the session's owner is under
    the storage cap."""
    utf8 = sql_utf8(CodeSession.source_code)
    read = select(
        CodeSession.id, CodeSession.language, CodeSession.source_code, CodeSession.user_id, CodeSession.files,
        CodeSession.entry, CodeSession.history_seq, CodeSession.history_set,
        sql_hash(utf8).label("src_hash"), func.octet_length(utf8).label("src_size"),
    ).where(CodeSession.id == bindparam("p_sid"))
    if by_owner:  # the caller: the owner or an editor (services/access.py)
        read = read.where(session_access(Need.RUN, bindparam("p_caller", type_=CodeSession.user_id.type)))
    sess = read.cte("sess")
    s = sess.c
    # The session's language among those runnable now, by its file-set manifest's start (NULL
    # for any other language: then nothing matches). One JSON text, cached (language_params):
    # psycopg sends it as it is, where arrays cost a dump of every element on every submission.
    before = cast(bindparam("p_langs", type_=Text), JSONB).op("->>", return_type=Text)(s.language)
    set_hash = sql_hash(sql_utf8(before.concat(s.src_hash).concat(bindparam("p_after", type_=Text))))
    needs_nothing = [or_(s.entry.is_(None), s.files.is_(None)), s.history_set == set_hash]
    if cap:  # the owner's: the session's user_id, or the anonymous executions when it has none
        needs_nothing.append(case(
            (s.user_id.is_(None), _bounded_count(Execution.user_id.is_(None), cap)),
            else_=_bounded_count(Execution.user_id == s.user_id, cap),
        ) < cap)
    ready = select(sess).where(*needs_nothing).cte("ready")
    r = ready.c
    stored = storage.source_upsert_from(
        select(r.src_hash, r.source_code, r.src_size, bindparam("p_now", type_=EXECUTIONS.c.queued_at.type))
    ).cte("stored_source")
    inserted = (insert(EXECUTIONS)
                .from_select(INSERT_COLUMNS, _copy(r, r.src_hash, null(), r.history_seq))
                .returning(EXECUTIONS.c.id).cte("inserted"))
    return (select(s.language, s.source_code, s.user_id, s.files, s.entry, s.history_seq, s.history_set,
                   select(inserted.c.id).scalar_subquery().label("inserted"))
            .add_cte(stored))


def _bounded_count(owned: Any, cap: int) -> Any:
    """storage's bounded count of the owner's executions (at most `cap` index entries read), the
    owner named by the enclosing statement's column."""
    rows = select(Execution.id).where(owned).correlate_except(Execution).limit(cap).subquery()
    return select(func.count()).select_from(rows).scalar_subquery()


def language_params(languages: LanguageCatalog | None) -> dict[str, Any]:
    """submit_unchanged's p_langs and p_after for the languages runnable now."""
    runnable = (languages or LocalLanguages()).runnable()
    return _language_params(None if runnable is None else frozenset(runnable))


@functools.lru_cache(maxsize=16)
def _language_params(runnable: frozenset[str] | None) -> dict[str, Any]:
    # As check_language: a declared language that a live worker offers (any, while none has said).
    parts = {lang.id: history.single_file_set_parts(lang.id)
             for lang in all_languages() if runnable is None or lang.id in runnable}
    after = next(iter(parts.values()))[1] if parts else ""
    return {"p_langs": json.dumps({lang: before for lang, (before, _) in parts.items()}), "p_after": after}
