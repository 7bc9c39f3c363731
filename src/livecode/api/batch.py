"""POST /api/v1/executions/batch: submit many batch (low-priority) executions at once."""

from __future__ import annotations

from typing import Any

from flask_restx import Resource, fields

from ..errors import ValidationError
from ..services import executions as svc
from ..services.batch import MAX_BATCH, BatchItem, submit_batch
from . import schemas
from .body import json_body, parse_uuid, reject_unknown
from .callbacks import callback_for, schedule_batch_hook
from .context import enqueue, owner_id, request_id, rt
from .executions import ns, parse_execute_options
from .ratelimit import charge_executions

ITEM_FIELDS = {"session_id", "stdin", "args", "merge_stderr", "tests", "compare", *svc.LIMIT_FIELDS}

batch_item = ns.model("BatchItem", {
    "session_id": fields.String(required=True),
    "stdin": fields.String(),
    "args": fields.List(fields.String),
    "merge_stderr": fields.Boolean(default=False, description=schemas.MERGE_STDERR_DOC),
    "tests": fields.List(fields.Nested(schemas.test_case), description=schemas.TESTS_DOC),
    "compare": fields.String(description=schemas.COMPARE_DOC),
    **{name: fields.Integer() for name in svc.LIMIT_FIELDS},
})
batch_request = ns.model("BatchRequest", {
    "executions": fields.List(fields.Nested(batch_item), required=True,
                              description=f"1 to {MAX_BATCH} runs; a session may appear many times"),
    "callback_url": fields.String(description="called (signed POST) as each run ends"),
})
batch_response = ns.model("BatchQueued", {
    "count": fields.Integer(required=True),
    "executions": fields.List(fields.Nested(schemas.execution_queued), required=True),
})


def parse_items(body: dict[str, Any]) -> list[BatchItem]:
    reject_unknown(body, {"executions", "callback_url"})
    raw = body.get("executions")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_BATCH:
        raise ValidationError(f"field 'executions' must be a list of 1 to {MAX_BATCH} items", code="INVALID_FIELD")
    items = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("session_id"), str):
            raise ValidationError(f"executions[{index}] must be an object with a string 'session_id'",
                                  code="INVALID_FIELD", details={"index": index})
        reject_unknown(item, ITEM_FIELDS)
        options = parse_execute_options({k: v for k, v in item.items() if k != "session_id"})
        items.append(BatchItem(parse_uuid(item["session_id"], f"executions[{index}].session_id"), options))
    return items


@ns.route("/batch")
class Batch(Resource):
    # Each queued run counts against the caller's executions-per-minute limit: charged by the
    # service with the number of rows it inserts, after parsing and checking, before inserting.

    @ns.doc("execute_batch")
    @ns.expect(batch_request, validate=False)
    @ns.response(202, "All queued (low priority)", batch_response)
    @ns.response(400, "Invalid item; nothing was queued", schemas.error)
    @ns.response(404, "A session does not exist; nothing was queued", schemas.error)
    @ns.response(429, "The items exceed your executions-per-minute limit, or would take you over the storage "
                 "quota (EXECUTION_QUOTA_EXCEEDED); nothing was queued", schemas.error)
    def post(self) -> Any:
        """Queue many runs on the low-priority queue in one request: all or nothing. Interactive
        runs overtake them. Poll each execution as usual."""
        body = json_body()
        items = parse_items(body)
        hook = schedule_batch_hook(callback_for(body))
        r = rt()
        return submit_batch(r.db, enqueue(), r.settings, items, owner_id=owner_id(), events=r.events,
                            request_id=request_id(), charge=charge_executions, languages=r.languages,
                            after_insert=hook), 202
