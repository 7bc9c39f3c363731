"""Judge0 submissions on LiveCode's services. Each submission is a code session of its own, owned
by the caller, and one execution of it; the token is the execution id, and the Judge0 extras
(language id, expected output, the options in Judge0's units) are a judge0_submissions row
written in the execution's transaction."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import Table, func, insert, select

from ...config import Settings
from ...db import Database
from ...infra.languages import LanguageCatalog
from ...models import ACTIVE_STATUSES, Execution, Judge0Submission, Source, status_values, utcnow
from ...streaming.bus import EventBus
from ..access import execution_access, shown_to_member
from ..executions import Enqueue, submit_execution
from ..programs import default_path
from ..sessions import create_session, delete_session
from .catalog import languages
from .params import Parsed

JUDGE0 = cast(Table, Judge0Submission.__table__)
EXECUTIONS = cast(Table, Execution.__table__)

# (conn, execution_id, owner) -> None: more rows in the submission's transaction (its callback).
AfterInsert = Callable[[Any, uuid.UUID, uuid.UUID | None], object]


class NotFoundToken(LookupError):
    """No submission with that token (or not the caller's)."""


class StillRunning(ValueError):
    """DELETE of a submission that is queued or processing."""


def create(
    db: Database,
    enqueue: Enqueue,
    settings: Settings,
    parsed: Parsed,
    *,
    owner_id: uuid.UUID | None,
    events: EventBus,
    request_id: str | None,
    catalog: LanguageCatalog | None,
    on_queued: Callable[[uuid.UUID], object] | None = None,
    after_insert: AfterInsert | None = None,
) -> str:
    """Create the submission's session and queue its execution; returns the token. A refused run
    removes the session again (the caller sees the refusal and nothing stays behind)."""
    files = entry = None
    if parsed.additional_files:  # the source at the language's default path, the archive's files beside it
        entry = default_path(parsed.language)
        files = [(entry, parsed.source_code), *parsed.additional_files]
    session = create_session(
        db,
        language=parsed.language,
        source_code=None if files else parsed.source_code,
        owner_id=owner_id,
        max_bytes=settings.max_source_bytes,
        settings=settings,
        languages=catalog,
        files=files,
        entry=entry,
    )
    sid = uuid.UUID(session["session_id"])
    names = {i["id"]: i["name"] for i in languages(catalog, include_archived=True)}
    shown = {**parsed.shown, "language_name": names.get(parsed.language_id, "")}

    def add_rows(conn: Any, execution_id: uuid.UUID, owner: uuid.UUID | None) -> None:
        conn.execute(
            insert(JUDGE0).values(
                execution_id=execution_id,
                user_id=owner,
                language_id=parsed.language_id,
                expected_output=parsed.expected_output,
                options=shown,
                created_at=utcnow(),
            )
        )
        if after_insert is not None:
            after_insert(conn, execution_id, owner)

    try:
        result = submit_execution(
            db,
            enqueue,
            settings,
            sid,
            owner_id=owner_id,
            options=parsed.options,
            events=events,
            request_id=request_id,
            on_queued=on_queued,
            languages=catalog,
            after_insert=add_rows,
        )
    except Exception:
        try:
            delete_session(db, sid, owner_id)
        except Exception:  # noqa: BLE001, S110 - the refusal is what the caller must see
            pass
        raise
    return str(result["execution_id"])


@functools.cache
def _select(by_owner: bool, members: bool = False) -> Any:
    """Submissions joined with their executions and source: the caller's own (`by_owner`), or
    (`members` too) every one whose session the caller may see (services/access.py)."""
    e, j = EXECUTIONS.c, JUDGE0.c
    q = select(
        *EXECUTIONS.columns,
        j.language_id,
        j.expected_output,
        j.options,
        select(Source.content).where(Source.hash == e.source_hash).scalar_subquery().label("source_code"),
    ).join(JUDGE0, j.execution_id == e.id)
    if not by_owner:
        return q
    return q.where(execution_access(_owner_param()) if members else j.user_id == _owner_param())


def _owner_param() -> Any:
    from sqlalchemy import bindparam

    return bindparam("p_owner", type_=JUDGE0.c.user_id.type)


def _ids(tokens: list[str]) -> list[uuid.UUID]:
    out = []
    for token in tokens:
        try:
            out.append(uuid.UUID(token))
        except (ValueError, AttributeError, TypeError):
            continue
    return out


def find(db: Database, tokens: list[str], owner_id: uuid.UUID | None) -> dict[str, Any]:
    """The submissions among `tokens` the caller may see (theirs, or of a session they are a
    member of, as its execution): {token: row}. A member sees the callback URL's origin only."""
    ids = _ids(tokens)
    if not ids:
        return {}
    q = _select(owner_id is not None, members=True).where(EXECUTIONS.c.id.in_(ids))
    with db.read_core(fresh=True) as conn:
        rows = conn.execute(q, {"p_owner": owner_id}).all()
    return {str(r.id): r if owner_id is None or r.user_id == owner_id else _as_member_sees(r) for r in rows}


def _as_member_sees(row: Any) -> Any:
    opts = dict(row.options or {})
    if opts.get("callback_url"):
        opts["callback_url"] = shown_to_member(opts["callback_url"])
    return SimpleNamespace(**{**row._asdict(), "options": opts})


def get(db: Database, token: str, owner_id: uuid.UUID | None) -> Any:
    row = find(db, [token], owner_id).get(_canonical(token))
    if row is None:
        raise NotFoundToken(token)
    return row


def _canonical(token: str) -> str:
    ids = _ids([token])
    return str(ids[0]) if ids else token


def page(db: Database, owner_id: uuid.UUID | None, page_no: int, per_page: int) -> tuple[list[Any], int]:
    """The caller's submissions, newest first, and how many there are."""
    q = _select(owner_id is not None).order_by(JUDGE0.c.created_at.desc(), EXECUTIONS.c.id.desc())
    count = select(func.count()).select_from(JUDGE0)
    if owner_id is not None:
        count = count.where(JUDGE0.c.user_id == owner_id)
    with db.read_core(fresh=True) as conn:
        total = int(conn.execute(count).scalar_one())
        rows = conn.execute(q.limit(per_page).offset((page_no - 1) * per_page), {"p_owner": owner_id}).all()
    return list(rows), total


def delete(db: Database, token: str, owner_id: uuid.UUID | None) -> Any:
    """Delete a finished submission (its session, execution and extras); returns the row as it
    was. The owner's only: a member gets 403 (delete_session)."""
    row = get(db, token, owner_id)
    if row.status in status_values(ACTIVE_STATUSES):
        raise StillRunning(row.status)
    delete_session(db, row.session_id, owner_id)
    return row


def statistics(db: Database, owner_id: uuid.UUID | None) -> dict[str, Any]:
    """GET /statistics, over the caller's submissions (all of them for the single local user)."""
    j = JUDGE0.c
    now = utcnow()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)

    def scoped(q: Any) -> Any:
        return q.where(j.user_id == owner_id) if owner_id is not None else q

    with db.read() as s:
        total = s.execute(scoped(select(func.count()).select_from(JUDGE0))).scalar_one()
        today = s.execute(scoped(select(func.count()).select_from(JUDGE0).where(j.created_at >= day))).scalar_one()
        month = s.execute(
            scoped(select(func.count()).select_from(JUDGE0).where(j.created_at >= now - timedelta(days=30)))
        ).scalar_one()
        by_lang = s.execute(scoped(select(j.language_id, func.count()).group_by(j.language_id))).all()
    return {
        "now": now.isoformat(),
        "submissions": {"total": int(total), "today": int(today), "last_30_days": int(month)},
        "languages": [{"language": {"id": lid}, "count": int(n)} for lid, n in sorted(by_lang)],
    }
