"""Sharing a session: the members an owner adds, and share links. No Flask here.

The rule itself is services/access.py.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from ..db import Database
from ..errors import ApiError, NotFound, ValidationError
from ..models import CodeSession, SessionMember, SessionRole, ShareLink, User, utcnow
from .access import MEMBER_ROLES, Need, refuse, require
from .accounts import normalize_username
from .sessions import iso

SHARE_LINK_DEFAULT_S = 7 * 24 * 3600
SHARE_LINK_MAX_S = 30 * 24 * 3600
MAX_MEMBERS = 100  # per session: a classroom, not a broadcast


# ---- members ---------------------------------------------------------------------------------


def check_role(value: Any) -> str:
    if value not in MEMBER_ROLES:
        raise ValidationError(
            "role must be 'editor' or 'viewer'", code="INVALID_ROLE", details={"allowed": list(MEMBER_ROLES)}
        )
    return str(value)


def _serialize_member(user_id: uuid.UUID, username: str, role: str, added_at: Any) -> dict[str, Any]:
    return {"user_id": str(user_id), "username": username, "role": role, "added_at": iso(added_at)}


def add_member(
    db: Database, session_id: uuid.UUID, owner: uuid.UUID | None, username: str, role: str
) -> tuple[dict[str, Any], bool]:
    """Share with a user by username, or change their role. Returns the member and whether it
    is new. Owner only."""
    role = check_role(role)
    require(db, session_id, owner, Need.OWN)
    with db.read(fresh=True) as s:
        user = s.execute(select(User.id, User.username).where(User.username == normalize_username(username))).first()
        count = s.execute(select(SessionMember.user_id).where(SessionMember.session_id == session_id)).all()
    if user is None:
        raise NotFound(f"no user named {username[:64]!r}", code="USER_NOT_FOUND")
    if user.id == owner:
        raise ValidationError("the owner is already in the session", code="ALREADY_OWNER")
    now = utcnow()
    with db.write() as s:
        changed = s.execute(
            update(SessionMember)
            .where(SessionMember.session_id == session_id, SessionMember.user_id == user.id)
            .values(role=role)
        ).rowcount  # type: ignore[attr-defined]
        if changed:
            added = s.execute(
                select(SessionMember.added_at).where(
                    SessionMember.session_id == session_id, SessionMember.user_id == user.id
                )
            ).scalar()
            return _serialize_member(user.id, user.username, role, added), False
    if len(count) >= MAX_MEMBERS:
        raise ApiError(f"a session has at most {MAX_MEMBERS} members", code="TOO_MANY_MEMBERS", status=409)
    try:
        with db.write() as s:
            s.add(SessionMember(session_id=session_id, user_id=user.id, role=role, added_at=now, added_by=owner))
    except IntegrityError as exc:  # added concurrently, or the session went away in between
        raise ApiError("the member list changed meanwhile; try again", code="MEMBERS_CHANGED", status=409) from exc
    return _serialize_member(user.id, user.username, role, now), True


def list_members(db: Database, session_id: uuid.UUID, caller: uuid.UUID | None) -> dict[str, Any]:
    """The owner and the members, for anyone who may see the session."""
    require(db, session_id, caller, Need.VIEW)
    with db.read(fresh=True) as s:
        owner = s.execute(
            select(CodeSession.user_id, CodeSession.created_at, User.username)
            .select_from(CodeSession)
            .outerjoin(User, User.id == CodeSession.user_id)
            .where(CodeSession.id == session_id)
        ).first()
        rows = s.execute(
            select(SessionMember.user_id, User.username, SessionMember.role, SessionMember.added_at)
            .join(User, User.id == SessionMember.user_id)
            .where(SessionMember.session_id == session_id)
            .order_by(SessionMember.added_at, User.username)
        ).all()
    items = []
    if owner is not None and owner.user_id is not None:
        items.append(_serialize_member(owner.user_id, owner.username, SessionRole.OWNER.value, owner.created_at))
    items += [_serialize_member(r.user_id, r.username, r.role, r.added_at) for r in rows]
    return {"items": items}


def remove_member(db: Database, session_id: uuid.UUID, caller: uuid.UUID | None, user_id: uuid.UUID) -> None:
    """The owner removes anyone; a member may remove themselves (leave)."""
    role = require(db, session_id, caller, Need.VIEW)
    if role is not SessionRole.OWNER and user_id != caller:
        refuse(session_id, role, Need.OWN)
    with db.write() as s:
        gone = s.execute(
            delete(SessionMember).where(SessionMember.session_id == session_id, SessionMember.user_id == user_id)
        ).rowcount  # type: ignore[attr-defined]
    if not gone:
        raise NotFound(f"user {user_id} is not a member of this session", code="MEMBER_NOT_FOUND")


# ---- share links -----------------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _serialize_link(link: ShareLink | Any) -> dict[str, Any]:
    return {
        "link_id": str(link.id),
        "session_id": str(link.session_id),
        "role": link.role,
        "created_at": iso(link.created_at),
        "expires_at": iso(link.expires_at),
        "revoked": link.revoked_at is not None,
        "redeemed": link.redeemed,
    }


def create_link(
    db: Database, session_id: uuid.UUID, owner: uuid.UUID | None, role: str, expires_in_s: int | None
) -> dict[str, Any]:
    """A new share link; the token is returned this once (only its hash is kept). Owner only."""
    role = check_role(role)
    seconds = SHARE_LINK_DEFAULT_S if expires_in_s is None else expires_in_s
    if not 60 <= seconds <= SHARE_LINK_MAX_S:
        raise ValidationError(f"expires_in_s must be between 60 and {SHARE_LINK_MAX_S}", code="INVALID_EXPIRY")
    require(db, session_id, owner, Need.OWN)
    token = "lcs_" + secrets.token_urlsafe(24)
    now = utcnow()
    link = ShareLink(
        id=uuid.uuid4(),
        session_id=session_id,
        token_hash=_token_hash(token),
        role=role,
        created_at=now,
        expires_at=now + timedelta(seconds=seconds),
        redeemed=0,
    )
    with db.write() as s:
        s.add(link)
    return {**_serialize_link(link), "token": token}


def list_links(db: Database, session_id: uuid.UUID, owner: uuid.UUID | None) -> dict[str, Any]:
    require(db, session_id, owner, Need.OWN)
    with db.read(fresh=True) as s:
        links = s.scalars(
            select(ShareLink).where(ShareLink.session_id == session_id).order_by(ShareLink.created_at.desc())
        ).all()
        return {"items": [_serialize_link(link) for link in links]}


def revoke_link(db: Database, session_id: uuid.UUID, owner: uuid.UUID | None, link_id: uuid.UUID) -> None:
    """Revoke: nobody can redeem it any more. Members who joined through it stay members."""
    require(db, session_id, owner, Need.OWN)
    with db.write() as s:
        done = s.execute(
            update(ShareLink)
            .where(ShareLink.id == link_id, ShareLink.session_id == session_id, ShareLink.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        ).rowcount  # type: ignore[attr-defined]
    if not done:
        raise NotFound(f"share link {link_id} not found or already revoked", code="SHARE_LINK_NOT_FOUND")


def redeem(db: Database, token: str, user_id: uuid.UUID) -> dict[str, Any]:
    """Make the caller a member with the link's role (a member keeps a higher role; the owner
    stays owner). An unknown, revoked or expired link is one 404: which it was is not told."""
    now = utcnow()
    with db.read(fresh=True) as s:
        link = s.execute(
            select(
                ShareLink.id,
                ShareLink.session_id,
                ShareLink.role,
                ShareLink.expires_at,
                ShareLink.revoked_at,
                CodeSession.user_id.label("owner"),
            )
            .join(CodeSession, CodeSession.id == ShareLink.session_id)
            .where(ShareLink.token_hash == _token_hash(token[:200]))
        ).first()
    expired = link is not None and _aware(link.expires_at) <= now
    if link is None or link.revoked_at is not None or expired:
        raise NotFound("this share link is unknown, revoked or expired", code="SHARE_LINK_INVALID")
    result = {"session_id": str(link.session_id), "role": link.role}
    if link.owner == user_id:
        return {**result, "role": SessionRole.OWNER.value}
    def join() -> None:
        with db.write() as s:
            current = s.execute(
                select(SessionMember.role).where(
                    SessionMember.session_id == link.session_id, SessionMember.user_id == user_id
                )
            ).scalar()
            if current is None:
                s.add(
                    SessionMember(
                        session_id=link.session_id, user_id=user_id, role=link.role, added_at=now, added_by=link.owner
                    )
                )
            elif current == SessionRole.VIEWER.value and link.role == SessionRole.EDITOR.value:
                s.execute(
                    update(SessionMember)
                    .where(SessionMember.session_id == link.session_id, SessionMember.user_id == user_id)
                    .values(role=link.role)
                )
            else:
                result["role"] = current
            s.execute(update(ShareLink).where(ShareLink.id == link.id).values(redeemed=ShareLink.redeemed + 1))

    try:
        join()
    except IntegrityError:  # the same user redeeming twice at once: the other insert won
        join()
    return result


def _aware(value: Any) -> Any:
    # SQLite hands back naive datetimes; every timestamp we store is UTC.
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)
