"""Who may do what with a session: the one membership rule every session and execution query goes
through (services/sessions.py, executions.py, batch.py, members.py, the collaboration socket).

The owner may do everything; an editor may read, edit (autosave, co-edit) and run; a viewer may
read the session and follow its runs. Anyone else gets 404 (the session's existence is not
disclosed), a member asking for more than their role 403. When the service runs without accounts
(`user_id` None) there is one local user and no rule.

Hot paths keep one statement: the rule is a WHERE clause (session_access, execution_access) on
the statement that does the work, and only its failure path reads again (role_of) to tell a
stranger (404) from a member without the right (403).
"""

from __future__ import annotations

import enum
import uuid
from typing import Any, NoReturn
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, and_, exists, or_, select

from ..db import Database
from ..errors import ApiError, NotFound
from ..models import CodeSession, Execution, SessionMember, SessionRole

MEMBER_ROLES = (SessionRole.EDITOR.value, SessionRole.VIEWER.value)


def not_found(session_id: uuid.UUID) -> NotFound:
    return NotFound(f"code session {session_id} not found", code="SESSION_NOT_FOUND")


def execution_not_found(execution_id: uuid.UUID) -> NotFound:
    """One answer for an execution that is not there and one that is not the caller's to see."""
    return NotFound(f"execution {execution_id} not found", code="EXECUTION_NOT_FOUND")


class Need(enum.Enum):
    VIEW = "view"  # read the session, its executions and their events
    EDIT = "edit"  # autosave, co-edit
    RUN = "run"  # start an execution
    OWN = "own"  # delete, share


# The member roles that grant each need (the owner has them all).
_GRANTING = {
    Need.VIEW: MEMBER_ROLES,
    Need.EDIT: (SessionRole.EDITOR.value,),
    Need.RUN: (SessionRole.EDITOR.value,),
    Need.OWN: (),
}


class Forbidden(ApiError):
    status = 403
    code = "FORBIDDEN"


def session_access(need: Need, user: Any) -> ColumnElement[bool]:
    """The WHERE clause on code_sessions that lets `user` (a value or a bindparam) do `need`."""
    owner = CodeSession.user_id == user
    roles = _GRANTING[need]
    if not roles:
        return owner
    # role = :r [OR role = :r2], not role IN (...): SQLAlchemy renders an IN of constants anew at
    # every execution (an "expanding" parameter), which cost the hot statements that carry this
    # rule (autosave's, a submission's) more CPU than the rest of their compiled-and-cached form.
    member = exists().where(
        SessionMember.session_id == CodeSession.id, SessionMember.user_id == user,
        or_(*(SessionMember.role == role for role in roles)),
    )
    return or_(owner, member)


def execution_access(user: Any) -> ColumnElement[bool]:
    """The WHERE clause on executions a user may read: the session's owner's (an execution's
    user_id is its session's owner) or a member's of its session."""
    t = Execution.__table__.c
    member = exists().where(SessionMember.session_id == t.session_id, SessionMember.user_id == user)
    return or_(t.user_id == user, member)


def role_of(db: Database, session_id: uuid.UUID, user_id: uuid.UUID | None) -> SessionRole | None:
    """The caller's role on a session, None when it does not exist or they may not see it."""
    with db.read(fresh=True) as s:
        row = s.execute(
            select(CodeSession.user_id, SessionMember.role)
            .select_from(CodeSession)
            .outerjoin(
                SessionMember, and_(SessionMember.session_id == CodeSession.id, SessionMember.user_id == user_id)
            )
            .where(CodeSession.id == session_id)
        ).first()
    if row is None:
        return None
    if user_id is None or row.user_id == user_id:
        return SessionRole.OWNER
    return SessionRole(row.role) if row.role else None


def refuse(session_id: uuid.UUID, role: SessionRole | None, need: Need) -> NoReturn:
    """The error for a caller whose `role` does not grant `need`: 404 to a stranger, 403 to a
    member."""
    if role is None:
        raise not_found(session_id)
    if need is Need.OWN:
        raise Forbidden("only the session's owner can do this", code="OWNER_ONLY", details={"your_role": role.value})
    verb = "edit" if need is Need.EDIT else "run"
    raise Forbidden(
        f"you are a {role.value} of this session: you can read it and follow its runs, not {verb} it",
        code="READ_ONLY_MEMBER",
        details={"your_role": role.value},
    )


def require(db: Database, session_id: uuid.UUID, user_id: uuid.UUID | None, need: Need) -> SessionRole:
    """The caller's role if it grants `need`; otherwise 404 or 403 (refuse())."""
    role = role_of(db, session_id, user_id)
    if role is None or not grants(role, need):
        refuse(session_id, role, need)
    return role


def grants(role: SessionRole, need: Need) -> bool:
    return role is SessionRole.OWNER or role.value in _GRANTING[need]


def shown_to_member(url: str | None) -> str | None:
    """A callback URL as a session's members (not its owner) see it: the origin only. Its path,
    query and user-info can be a credential of the owner's (a webhook URL with a token in it)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"

