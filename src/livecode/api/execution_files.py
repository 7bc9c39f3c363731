"""GET /api/v1/executions/{id}/files[/{path}]: the files a run left in out/ (plots, data).

Same ownership rule as the execution itself: another user's execution is a 404, as a missing one.
A file is answered with its stored bytes and a content type from a fixed list (services/
output_files.py), `X-Content-Type-Options: nosniff` and a Content-Security-Policy that sandboxes
it, so a file a program made can never run script in this origin even when opened directly;
anything but a raster image is sent as an attachment.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask import Response
from flask_restx import Resource, fields

from ..sandbox.outputs import MAX_PATH, valid_name
from ..services import output_files as svc
from . import schemas
from .body import parse_uuid
from .context import owner_id, rt
from .executions import ns

# default-src 'none' + sandbox: an SVG or PDF opened from here runs no script and loads nothing.
FILE_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox; frame-ancestors 'none'"

execution_file = ns.model("ExecutionFile", {
    "path": fields.String(required=True, description="relative to the run's out/ directory, e.g. `plot.png`"),
    "size": fields.Integer(required=True, description="bytes"),
    "content_type": fields.String(required=True, description="what GET .../files/{path} answers with"),
    "sha256": fields.String(required=True, description="hex digest of the bytes"),
})  # fmt: skip


@ns.route("/<string:execution_id>/files")
@ns.param("execution_id", "the execution's UUID")
class ExecutionFiles(Resource):
    @ns.doc("list_execution_files")
    @ns.response(200, "The files the run left in out/, by path", [execution_file])
    @ns.response(400, "Not a UUID", schemas.error)
    @ns.response(404, "No such execution", schemas.error)
    def get(self, execution_id: str) -> Any:
        """List the files the run left in `out/` under its working directory (at most
        LIVECODE_OUTPUT_FILES_MAX files and LIVECODE_OUTPUT_FILES_MAX_BYTES in all; the execution's
        `files_truncated` says when some were left out). Only regular files are kept: links,
        FIFOs and devices are not. Empty until the run has finished."""
        eid = parse_uuid(execution_id, "execution_id")
        return svc.list_files(rt().db, eid, owner_id())


@ns.route("/<string:execution_id>/files/<path:path>")
@ns.param("execution_id", "the execution's UUID")
@ns.param("path", "the file's path as listed, e.g. `plot.png` or `data/table.csv`")
class ExecutionFileItem(Resource):
    @ns.doc("get_execution_file")
    @ns.produces(["*/*", "application/json"])  # the file's own type; errors are JSON
    @ns.response(200, "The file's bytes, with its content type")
    @ns.response(400, "Not a UUID", schemas.error)
    @ns.response(404, "No such execution, or no such file (FILE_NOT_FOUND)", schemas.error)
    def get(self, execution_id: str, path: str) -> Any:
        """Download one file the run left in `out/`. Images (PNG, JPEG, GIF, WebP) are served
        inline; every other type as an attachment. `ETag` is the file's sha256."""
        eid = parse_uuid(execution_id, "execution_id")
        if len(path) > MAX_PATH or not all(valid_name(part) for part in path.split("/")):
            # Not a path a file can be kept under: the same answer as a missing file, no query.
            path = ""
        info, data = svc.get_file(rt().db, eid, owner_id(), path)
        resp = Response(data, status=200, content_type=info["content_type"])
        name = info["path"].rsplit("/", 1)[-1]
        disposition = "inline" if info["content_type"] in svc.INLINE_TYPES else "attachment"
        ascii_name = "".join(ch if 0x20 < ord(ch) < 0x7F and ch not in '"%;\\' else "_" for ch in name)
        resp.headers["Content-Disposition"] = (
            f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
        )
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Content-Security-Policy"] = FILE_CSP
        # Another site cannot embed it (an <img> needs no credentials when sign-in is off).
        resp.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        resp.headers["Cache-Control"] = "private, no-cache"
        resp.set_etag(info["sha256"])
        return resp
