"""GET /api/v1/executions/{id}/program: the files an execution ran, as they were when it was
submitted (its snapshot; docs/multifile.md)."""

from __future__ import annotations

from typing import Any

from flask_restx import Resource, fields

from ..services.snapshots import execution_program
from . import schemas
from .body import parse_uuid
from .context import owner_id, rt
from .executions import ns

program_model = ns.model(
    "ExecutionProgram",
    {
        "execution_id": fields.String(required=True),
        "language": fields.String(required=True),
        "entry": fields.String(required=True, description="the file that runs"),
        "files": fields.List(fields.Nested(schemas.program_file), required=True),
    },
)


@ns.route("/<string:execution_id>/program")
@ns.param("execution_id", "the execution's UUID")
class ExecutionProgram(Resource):
    @ns.doc("get_execution_program")
    @ns.response(200, "The program", program_model)
    @ns.response(400, "Not a UUID", schemas.error)
    @ns.response(404, "No such execution", schemas.error)
    def get(self, execution_id: str) -> Any:
        """The program an execution runs: every file and the entry, as the session held them when
        the run was submitted (a single-file program is one file at the language's default path)."""
        eid = parse_uuid(execution_id, "execution_id")
        return execution_program(rt().db, eid, owner_id()), 200
