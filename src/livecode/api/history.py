"""/api/v1/code-sessions/{id}/versions: a session's history (issue 15, part 1)."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_restx import Resource

from ..errors import ValidationError
from ..services import sessions as sessions_svc
from ..services import versions as svc
from . import history_schemas as hs
from . import schemas
from .body import json_body, optional_int, optional_str, parse_uuid, query_int, reject_unknown
from .context import owner_id, rt
from .sessions import _version_from_etag, merge_into_document, ns

schemas.attach(ns)  # again: the history models were declared after sessions.ns took the others

_MAX_VERSION = 2**31 - 1  # the column's range: a larger number in the URL is a 400, not a database error


def _checked(**numbers: int) -> None:
    for name, value in numbers.items():
        if not 1 <= value <= _MAX_VERSION:
            raise ValidationError(
                f"{name} must be a version number between 1 and {_MAX_VERSION}",
                code="INVALID_VERSION",
                details={"field": name},
            )


@ns.route("/<string:session_id>/versions")
@ns.param("session_id", "the session's UUID")
class Versions(Resource):
    @ns.doc("list_session_versions", params={"page": "1-based page", "per_page": "1 to 100"})
    @ns.response(200, "The session's versions, newest first", hs.version_page)
    @ns.response(400, "Invalid id or paging", schemas.error)
    @ns.response(404, "No such session", schemas.error)
    def get(self, session_id: str) -> Any:
        """List a session's history versions, newest first: made when a run starts, by a
        checkpoint, by autosave (at most one per interval) and before a restore."""
        sid = parse_uuid(session_id, "session_id")
        page = query_int("page", 1, 1, 1_000_000)
        per_page = query_int("per_page", 20, 1, 100)
        return svc.list_versions(rt().db, sid, owner_id(), page, per_page)

    @ns.doc("checkpoint_session")
    @ns.expect(hs.checkpoint_request, validate=False)
    @ns.response(201, "The new version", hs.version_summary)
    @ns.response(400, "Invalid input", schemas.error)
    @ns.response(403, "A viewer of a shared session cannot checkpoint", schemas.error)
    @ns.response(404, "No such session", schemas.error)
    def post(self, session_id: str) -> Any:
        """Checkpoint: keep the session's code as it is now as a version, with an optional
        `label` (a labelled checkpoint is never dropped by retention)."""
        sid = parse_uuid(session_id, "session_id")
        body = json_body(allow_empty=True)
        reject_unknown(body, {"label"})
        label = optional_str(body, "label", max_len=200)
        return svc.checkpoint(rt().db, sid, owner_id(), label or None), 201


@ns.route("/<string:session_id>/versions/<int:number>")
@ns.param("session_id", "the session's UUID")
@ns.param("number", "the version's number")
class VersionItem(Resource):
    @ns.doc("get_session_version")
    @ns.response(200, "The version and its content", hs.version_content)
    @ns.response(400, "Not a UUID, or a version number out of range", schemas.error)
    @ns.response(404, "No such session or version", schemas.error)
    def get(self, session_id: str, number: int) -> Any:
        """A version's content: its files and entry (and source_code, the entry's content)."""
        sid = parse_uuid(session_id, "session_id")
        _checked(number=number)
        return svc.get_version(rt().db, sid, number, owner_id())


@ns.route("/<string:session_id>/versions/<int:a>/diff/<int:b>")
@ns.param("session_id", "the session's UUID")
@ns.param("a", "the version to diff from")
@ns.param("b", "the version to diff to")
class VersionDiff(Resource):
    @ns.doc("diff_session_versions")
    @ns.response(200, "A unified diff per changed file", hs.version_diff)
    @ns.response(400, "Not a UUID, or a version number out of range", schemas.error)
    @ns.response(404, "No such session or version", schemas.error)
    def get(self, session_id: str, a: int, b: int) -> Any:
        """Version a → version b: each added, removed or modified file with its unified diff."""
        sid = parse_uuid(session_id, "session_id")
        _checked(a=a, b=b)
        return svc.diff_versions(rt().db, sid, a, b, owner_id())


@ns.route("/<string:session_id>/versions/<int:number>/restore")
@ns.param("session_id", "the session's UUID")
@ns.param("number", "the version to make current")
class VersionRestore(Resource):
    @ns.doc("restore_session_version", params={"If-Match": {"in": "header", "type": "string"}})
    @ns.expect(hs.restore_request, validate=False)
    @ns.response(200, "Restored", hs.restored)
    @ns.response(400, "Invalid input, or no version named", schemas.error)
    @ns.response(403, "A viewer of a shared session cannot restore", schemas.error)
    @ns.response(404, "No such session or version", schemas.error)
    @ns.response(409, "The session's version moved on; nothing changed", schemas.error)
    def post(self, session_id: str, number: int) -> Any:
        """Make a version the session's code, with the optimistic locking of autosave: name the
        session version you saw (body `version` or `If-Match: <ETag>`). The replaced code is kept
        first as a version (reason `restore`)."""
        sid = parse_uuid(session_id, "session_id")
        _checked(number=number)
        body = json_body(allow_empty=True)
        reject_unknown(body, {"version"})
        version = optional_int(body, "version", minimum=1)
        if version is None and request.headers.get("If-Match"):
            version = _version_from_etag(sid, request.headers["If-Match"])
        if version is None:
            raise ValidationError(
                "name the session version you restore over: body version or If-Match",
                code="MISSING_FIELD",
                details={"field": "version"},
            )
        done = svc.restore(rt().db, sid, number, expected_version=version, owner_id=owner_id(), settings=rt().settings)
        merge_into_document(sid, done)  # a co-edited session's editors see the restored code
        return done, 200, {"ETag": sessions_svc.session_etag(sid, done["version"])}
