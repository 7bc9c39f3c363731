"""/api/v1/code-sessions: create, read, autosave, delete."""

from __future__ import annotations

import logging
from typing import Any

from flask import request
from flask_restx import Namespace, Resource

from ..errors import ValidationError
from ..services import programs
from ..services import sessions as svc
from . import schemas
from .body import json_body, optional_int, optional_str, parse_uuid, reject_unknown, require_str
from .collab import collab_rooms
from .context import owner_id, rt
from .idempotency import idempotent

log = logging.getLogger(__name__)
ns = Namespace("code-sessions", description="Code sessions with autosave")
schemas.attach(ns)


@ns.route("")
class SessionList(Resource):
    @ns.doc("create_session", params={"Idempotency-Key": {"in": "header", "type": "string"}})
    @ns.expect(schemas.session_create, validate=False)
    @ns.response(201, "Created", schemas.session)
    @ns.response(400, "Invalid input or unknown language", schemas.error)
    @ns.response(413, "Source too large", schemas.error)
    @ns.response(415, "Not JSON", schemas.error)
    @ns.response(422, "Idempotency key reused with a different body", schemas.error)
    @ns.response(429, "At the session quota (SESSION_QUOTA_EXCEEDED); nothing was created", schemas.error)
    def post(self) -> Any:
        """Create a code session (status ACTIVE, version 1) of `source_code` (one file at the
        language's default path) or of `files` ([{path, content}]) with `entry`, the file that
        runs (default: the language's default path, or the only file)."""
        body = json_body()

        def create() -> tuple[dict[str, Any], int]:
            reject_unknown(body, {"language", "source_code", "files", "entry"})
            language = require_str(body, "language", max_len=50)
            source = optional_str(body, "source_code")
            files = programs.parse_files(body["files"]) if body.get("files") is not None else None
            s = rt().settings
            created = svc.create_session(
                rt().db,
                language=language,
                source_code=source,
                owner_id=owner_id(),
                max_bytes=s.max_source_bytes,
                settings=s,
                languages=rt().languages,
                files=files,
                entry=optional_str(body, "entry", max_len=1024),
            )
            return created, 201

        result, status = idempotent("create_session", body, create)
        headers = (
            {"ETag": svc.session_etag(parse_uuid(result["session_id"], "id"), result["version"])}
            if status == 201
            else {}
        )
        return result, status, headers


@ns.route("/<string:session_id>")
@ns.param("session_id", "the session's UUID")
class SessionItem(Resource):
    @ns.doc("get_session")
    @ns.response(200, "The session", schemas.session, headers={"ETag": "the session's version"})
    @ns.response(400, "Not a UUID", schemas.error)
    @ns.response(404, "No such session", schemas.error)
    def get(self, session_id: str) -> Any:
        """Get a session with its current source and version."""
        sid = parse_uuid(session_id, "session_id")
        data = svc.get_session(rt().db, sid, owner_id(), fresh=True)
        return data, 200, {"ETag": svc.session_etag(sid, data["version"])}

    @ns.doc("autosave_session", params={"If-Match": {"in": "header", "type": "string"}})
    @ns.expect(schemas.session_patch, validate=False)
    @ns.response(200, "Saved", schemas.autosaved)
    @ns.response(400, "Invalid input", schemas.error)
    @ns.response(404, "No such session", schemas.error)
    @ns.response(409, "The version moved on; nothing was overwritten", schemas.error)
    @ns.response(413, "Source too large", schemas.error)
    def patch(self, session_id: str) -> Any:
        """Autosave: replace the source (`source_code`: the entry's content), the whole set of
        files (`files`), one file (`file`: {path, content}, added or replaced) and/or the entry
        (`entry`). Name the version you edited (body `version` or `If-Match: <ETag>`) to apply it
        only if nobody saved in between."""
        sid = parse_uuid(session_id, "session_id")
        body = json_body()
        reject_unknown(body, {"source_code", "files", "file", "entry", "version"})
        version = optional_int(body, "version", minimum=1)
        if version is None and request.headers.get("If-Match"):
            version = _version_from_etag(sid, request.headers["If-Match"])
        s = rt().settings
        if any(body.get(k) is not None for k in ("files", "file", "entry")):
            if body.get("files") is not None and body.get("file") is not None:
                raise ValidationError(
                    "give files (the whole set) or file (one of them), not both", code="INVALID_FILES"
                )
            saved = svc.autosave_files(
                rt().db,
                sid,
                settings=s,
                expected_version=version,
                owner_id=owner_id(),
                files=programs.parse_files(body["files"]) if body.get("files") is not None else None,
                file=programs.parse_file(body["file"]) if body.get("file") is not None else None,
                entry=optional_str(body, "entry", max_len=1024),
                source_code=optional_str(body, "source_code"),
            )
            merge_into_document(sid, saved)
            return saved, 200, {"ETag": svc.session_etag(sid, saved["version"])}
        source = require_str(body, "source_code")
        saved = svc.autosave(
            rt().db,
            sid,
            source_code=source,
            expected_version=version,
            owner_id=owner_id(),
            max_bytes=s.max_source_bytes,
            history_interval_s=s.history_autosave_interval_s,
        )
        merge_into_document(sid, saved)
        return saved, 200, {"ETag": svc.session_etag(sid, saved["version"])}

    @ns.doc("delete_session")
    @ns.response(204, "Deleted, with its executions")
    @ns.response(404, "No such session", schemas.error)
    def delete(self, session_id: str) -> Any:
        """Delete a session and all its executions."""
        sid = parse_uuid(session_id, "session_id")
        svc.delete_session(rt().db, sid, owner_id())
        return "", 204


def merge_into_document(sid: Any, saved: dict[str, Any]) -> None:
    """A co-edited session takes the save into its live document (services/collab.py), so the
    editors see it and their next write keeps it. The save is committed already, and a room
    merges it from the row before it writes (services/collab_store.py): a failure here (Redis
    away) delays the merge, it loses nothing, so it is logged, never the caller's. Takes the
    service's `co_edited` out of the answer."""
    co_edited = saved.pop("co_edited", None)
    try:
        collab_rooms().merge_saved(sid, saved["version"], co_edited)
    except Exception:  # noqa: BLE001
        log.warning(
            "merging a save into the co-edited document failed", extra={"session_id": str(sid)}, exc_info=True
        )


def _version_from_etag(sid: Any, header: str) -> int:
    tag = header.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    prefix = f'"{sid}-v'
    if tag.startswith(prefix) and tag.endswith('"'):
        try:
            return int(tag[len(prefix) : -1])
        except ValueError:
            pass
    raise ValidationError("If-Match must be an ETag this API returned for this session", code="INVALID_ETAG")
