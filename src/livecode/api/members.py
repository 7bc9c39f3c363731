"""Sharing a session, added to the code-sessions namespace:

    POST/GET   /api/v1/code-sessions/{id}/members             share with a user / list who is in
    DELETE     /api/v1/code-sessions/{id}/members/{user_id}   remove (owner) or leave (member)
    POST/GET   /api/v1/code-sessions/{id}/share-links         create (token shown once) / list
    DELETE     /api/v1/code-sessions/{id}/share-links/{link}  revoke
    POST       /api/v1/code-sessions/join                     redeem a share link's token

Sharing needs accounts: without sign-in there is one local user who already sees everything.
"""

from __future__ import annotations

from typing import Any

from flask_restx import Resource, fields

from ..services import members as svc
from . import schemas
from .auth import login_required
from .body import json_body, optional_int, parse_uuid, reject_unknown, require_str
from .context import owner_id, rt
from .sessions import ns

member = ns.model(
    "SessionMember",
    {
        "user_id": fields.String(required=True),
        "username": fields.String(required=True),
        "role": fields.String(required=True, enum=["owner", "editor", "viewer"]),
        "added_at": fields.String(),
    },
)
member_add = ns.model(
    "SessionMemberAdd",
    {
        "username": fields.String(required=True),
        "role": fields.String(required=True, enum=["editor", "viewer"]),
    },
)
member_list = ns.model("SessionMembers", {"items": fields.List(fields.Nested(member), required=True)})
link = ns.model(
    "ShareLink",
    {
        "link_id": fields.String(required=True),
        "session_id": fields.String(required=True),
        "role": fields.String(required=True, enum=["editor", "viewer"]),
        "created_at": fields.String(),
        "expires_at": fields.String(),
        "revoked": fields.Boolean(),
        "redeemed": fields.Integer(description="how many times it was redeemed"),
        "token": fields.String(description="only in the answer to POST: redeem it at POST /api/v1/code-sessions/join"),
    },
)
link_create = ns.model(
    "ShareLinkCreate",
    {
        "role": fields.String(required=True, enum=["editor", "viewer"]),
        "expires_in_s": fields.Integer(description=f"60 to {svc.SHARE_LINK_MAX_S}; default {svc.SHARE_LINK_DEFAULT_S}"),
    },
)
link_list = ns.model("ShareLinks", {"items": fields.List(fields.Nested(link), required=True)})
join_request = ns.model("JoinRequest", {"token": fields.String(required=True)})
joined = ns.model("Joined", {"session_id": fields.String(required=True), "role": fields.String(required=True)})


@ns.route("/<string:session_id>/members")
@ns.param("session_id", "the session's UUID")
class Members(Resource):
    method_decorators = [login_required]

    @ns.doc("add_session_member")
    @ns.expect(member_add, validate=False)
    @ns.response(201, "Shared", member)
    @ns.response(200, "Already a member: the role was set", member)
    @ns.response(400, "Invalid role, or the owner named", schemas.error)
    @ns.response(403, "A member, not the owner (OWNER_ONLY)", schemas.error)
    @ns.response(404, "No such session (or not yours to see), or no such user", schemas.error)
    def post(self, session_id: str) -> Any:
        """Share the session with a user as `editor` (read, edit, run) or `viewer` (read, follow
        runs). Owner only. Naming a member again sets their role."""
        sid = parse_uuid(session_id, "session_id")
        body = json_body()
        reject_unknown(body, {"username", "role"})
        username = require_str(body, "username", max_len=200)
        role = require_str(body, "role", max_len=20)
        result, created = svc.add_member(rt().db, sid, owner_id(), username, role)
        return result, 201 if created else 200

    @ns.doc("list_session_members")
    @ns.response(200, "The owner first, then the members", member_list)
    @ns.response(404, "No such session (or not yours to see)", schemas.error)
    def get(self, session_id: str) -> Any:
        """Who is in the session: the owner and the members, with their roles."""
        sid = parse_uuid(session_id, "session_id")
        return svc.list_members(rt().db, sid, owner_id())


@ns.route("/<string:session_id>/members/<string:user_id>")
@ns.param("session_id", "the session's UUID")
@ns.param("user_id", "the member's user id")
class MemberItem(Resource):
    method_decorators = [login_required]

    @ns.doc("remove_session_member")
    @ns.response(204, "Removed")
    @ns.response(403, "A member removing someone else (OWNER_ONLY)", schemas.error)
    @ns.response(404, "No such session (or not yours to see), or not a member", schemas.error)
    def delete(self, session_id: str, user_id: str) -> Any:
        """Remove a member (owner), or leave the session (a member naming themselves)."""
        sid = parse_uuid(session_id, "session_id")
        uid = parse_uuid(user_id, "user_id")
        svc.remove_member(rt().db, sid, owner_id(), uid)
        return "", 204


@ns.route("/<string:session_id>/share-links")
@ns.param("session_id", "the session's UUID")
class ShareLinks(Resource):
    method_decorators = [login_required]

    @ns.doc("create_share_link")
    @ns.expect(link_create, validate=False)
    @ns.response(201, "Created; `token` is shown this once", link)
    @ns.response(400, "Invalid role or expiry", schemas.error)
    @ns.response(403, "A member, not the owner (OWNER_ONLY)", schemas.error)
    @ns.response(404, "No such session (or not yours to see)", schemas.error)
    def post(self, session_id: str) -> Any:
        """Create a share link: whoever redeems its token (signed in) becomes a member with its
        role, until it expires or is revoked. Owner only."""
        sid = parse_uuid(session_id, "session_id")
        body = json_body()
        reject_unknown(body, {"role", "expires_in_s"})
        role = require_str(body, "role", max_len=20)
        expires = optional_int(body, "expires_in_s", minimum=1)
        return svc.create_link(rt().db, sid, owner_id(), role, expires), 201

    @ns.doc("list_share_links")
    @ns.response(200, "The session's links, newest first (without tokens)", link_list)
    @ns.response(403, "A member, not the owner (OWNER_ONLY)", schemas.error)
    @ns.response(404, "No such session (or not yours to see)", schemas.error)
    def get(self, session_id: str) -> Any:
        """The session's share links, revoked and expired ones too. Owner only."""
        sid = parse_uuid(session_id, "session_id")
        return svc.list_links(rt().db, sid, owner_id())


@ns.route("/<string:session_id>/share-links/<string:link_id>")
@ns.param("session_id", "the session's UUID")
@ns.param("link_id", "the link's id")
class ShareLinkItem(Resource):
    method_decorators = [login_required]

    @ns.doc("revoke_share_link")
    @ns.response(204, "Revoked; members who joined through it stay")
    @ns.response(403, "A member, not the owner (OWNER_ONLY)", schemas.error)
    @ns.response(404, "No such session, or no such link (or already revoked)", schemas.error)
    def delete(self, session_id: str, link_id: str) -> Any:
        """Revoke a share link."""
        sid = parse_uuid(session_id, "session_id")
        lid = parse_uuid(link_id, "link_id")
        svc.revoke_link(rt().db, sid, owner_id(), lid)
        return "", 204


@ns.route("/join")
class Join(Resource):
    method_decorators = [login_required]

    @ns.doc("join_session")
    @ns.expect(join_request, validate=False)
    @ns.response(200, "You are a member (or already were, with at least this role)", joined)
    @ns.response(404, "The link is unknown, revoked or expired (SHARE_LINK_INVALID)", schemas.error)
    def post(self) -> Any:
        """Redeem a share link's token: become a member of its session with its role."""
        body = json_body()
        reject_unknown(body, {"token"})
        token = require_str(body, "token", max_len=200)
        user = owner_id()
        assert user is not None  # login_required
        return svc.redeem(rt().db, token, user)
