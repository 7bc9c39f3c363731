"""/api/v1/admin/dead-letters: tasks that exhausted their retries (design 3.4). Admin role only.

The routes hang off the admin namespace (api/admin.py), so they share its path and its docs.
"""

from __future__ import annotations

from typing import Any

from flask_restx import Resource, fields

from ..errors import NotFound
from ..services import dead_letters as deadletter
from . import schemas
from .admin import ns
from .auth import admin_required
from .body import parse_uuid, query_int
from .context import enqueue, rt

dead_letter = ns.model("DeadLetter", {
    "id": fields.String(required=True),
    "execution_id": fields.String(required=True),
    "execution_status": schemas.nullable(fields.String(
        required=True,
        description="the execution's status now (FAILED until requeued); null if it was deleted",
    )),
    "task_name": fields.String(required=True),
    "error": fields.String(required=True, description="the last error, e.g. OperationalError: ..."),
    "attempts": fields.Integer(required=True, description="how many times the task was tried"),
    "first_failed_at": fields.String(required=True, description="when the first attempt failed"),
    "created_at": fields.String(required=True, description="when the task gave up"),
    "requeued_at": schemas.nullable(fields.String(description="when an operator last requeued it; null if never")),
})
dead_letter_list = ns.model("DeadLetterList", {
    "items": fields.List(fields.Nested(dead_letter), required=True),
    "count": fields.Integer(required=True),
})
purged = ns.model("DeadLettersPurged", {"purged": fields.Integer(required=True)})


def _not_found(dl_id: Any) -> NotFound:
    return NotFound(f"dead letter {dl_id} not found", code="DEAD_LETTER_NOT_FOUND")


@ns.route("/dead-letters")
class DeadLetters(Resource):
    @ns.doc("list_dead_letters", params={"limit": "how many, newest first (1 to 1000, default 100)"})
    @ns.response(200, "Dead letters, newest first", dead_letter_list)
    @ns.response(400, "Invalid limit", schemas.error)
    @ns.response(401, "Not signed in", schemas.error)
    @ns.response(403, "Not an admin", schemas.error)
    @admin_required
    def get(self) -> Any:
        """List tasks that exhausted their retries."""
        items = deadletter.list_dead_letters(rt(), query_int("limit", 100, 1, 1000))
        return {"items": items, "count": len(items)}

    @ns.doc("purge_dead_letters")
    @ns.response(200, "Purged", purged)
    @ns.response(401, "Not signed in", schemas.error)
    @ns.response(403, "Not an admin", schemas.error)
    @admin_required
    def delete(self) -> Any:
        """Delete every dead letter (their executions stay as they are)."""
        return {"purged": deadletter.purge_dead_letters(rt())}


@ns.route("/dead-letters/<string:dead_letter_id>")
@ns.param("dead_letter_id", "the dead letter's UUID")
class DeadLetterItem(Resource):
    @ns.doc("get_dead_letter")
    @ns.response(200, "The dead letter", dead_letter)
    @ns.response(400, "Not a UUID", schemas.error)
    @ns.response(401, "Not signed in", schemas.error)
    @ns.response(403, "Not an admin", schemas.error)
    @ns.response(404, "No such dead letter", schemas.error)
    @admin_required
    def get(self, dead_letter_id: str) -> Any:
        """Inspect one dead letter."""
        dl_id = parse_uuid(dead_letter_id, "dead_letter_id")
        found = deadletter.get_dead_letter(rt(), dl_id)
        if found is None:
            raise _not_found(dl_id)
        return found

    @ns.doc("delete_dead_letter")
    @ns.response(204, "Deleted")
    @ns.response(400, "Not a UUID", schemas.error)
    @ns.response(401, "Not signed in", schemas.error)
    @ns.response(403, "Not an admin", schemas.error)
    @ns.response(404, "No such dead letter", schemas.error)
    @admin_required
    def delete(self, dead_letter_id: str) -> Any:
        """Delete one dead letter (its execution stays as it is)."""
        dl_id = parse_uuid(dead_letter_id, "dead_letter_id")
        if not deadletter.purge_dead_letters(rt(), dl_id):
            raise _not_found(dl_id)
        return "", 204


@ns.route("/dead-letters/<string:dead_letter_id>/requeue")
@ns.param("dead_letter_id", "the dead letter's UUID")
class DeadLetterRequeue(Resource):
    @ns.doc("requeue_dead_letter")
    @ns.response(202, "The execution is QUEUED again", dead_letter)
    @ns.response(400, "Not a UUID", schemas.error)
    @ns.response(401, "Not signed in", schemas.error)
    @ns.response(403, "Not an admin", schemas.error)
    @ns.response(404, "No such dead letter", schemas.error)
    @ns.response(409, "Requeued already, execution deleted, or its session has a run in progress",
                 schemas.error)
    @admin_required
    def post(self, dead_letter_id: str) -> Any:
        """Run the dead letter's execution again: it goes back to QUEUED and onto the queue."""
        dl_id = parse_uuid(dead_letter_id, "dead_letter_id")
        found = deadletter.requeue_dead_letter(rt(), dl_id, enqueue())
        if found is None:
            raise _not_found(dl_id)
        return found, 202
