"""Flask-RESTX models of the history API (api/history.py)."""

from __future__ import annotations

from flask_restx import fields

from ..services.history import REASONS
from .schemas import nullable, program_file, shared

version_summary = shared.model(
    "SessionVersion",
    {
        "version": fields.Integer(required=True, description="1, 2, … per session, in the order they were made"),
        "created_at": fields.String(required=True),
        "author": nullable(fields.String(description="the user who made it; null when anonymous")),
        "reason": fields.String(required=True, enum=list(REASONS)),
        "label": nullable(fields.String(description="a checkpoint's label")),
        "execution_id": nullable(fields.String(description="the execution that made it (reason execution)")),
    },
)
version_page = shared.model(
    "SessionVersionPage",
    {
        "items": fields.List(fields.Nested(version_summary), required=True),
        "page": fields.Integer(required=True),
        "per_page": fields.Integer(required=True),
        "total": fields.Integer(required=True),
    },
)
version_content = shared.inherit(
    "SessionVersionContent",
    version_summary,
    {
        "session_id": fields.String(required=True),
        "language": fields.String(required=True),
        "entry": fields.String(required=True),
        "source_code": fields.String(required=True, description="the entry's content"),
        "files": fields.List(fields.Nested(program_file), required=True),
    },
)
file_diff = shared.model(
    "FileDiff",
    {
        "path": fields.String(required=True),
        "change": fields.String(required=True, enum=["added", "removed", "modified"]),
        "diff": fields.String(required=True, description="unified diff (/dev/null for an added or removed file)"),
    },
)
version_diff = shared.model(
    "SessionVersionDiff",
    {
        "session_id": fields.String(required=True),
        "from": fields.Integer(required=True),
        "to": fields.Integer(required=True),
        "entry_from": fields.String(required=True),
        "entry_to": fields.String(required=True),
        "files": fields.List(fields.Nested(file_diff), required=True, description="changed files only"),
    },
)
checkpoint_request = shared.model(
    "CheckpointRequest",
    {
        "label": fields.String(
            description="optional; a labelled checkpoint is never dropped by retention", max_length=200
        )
    },
)
restore_request = shared.model(
    "RestoreRequest",
    {
        "version": fields.Integer(
            required=True,
            description="the session's current version (optimistic locking, as autosave); or send If-Match: <ETag>",
        )
    },
)
restored = shared.model(
    "RestoredSession",
    {
        "session_id": fields.String(required=True),
        "status": fields.String(required=True),
        "version": fields.Integer(required=True, description="the session's new version"),
        "updated_at": fields.String(required=True),
        "restored": fields.Integer(required=True, description="the history version now current"),
        "saved_as": nullable(fields.Integer(description="the history version that keeps the replaced code")),
    },
)
