"""/judge0/submissions: create (one, or a batch of up to 20 with per-item errors), read (one, a
batch, the caller's pages), delete; as Judge0 CE 1.13.1 answers them (docs/compat.md)."""

from __future__ import annotations

import uuid
from typing import Any

from flask import request
from flask_restx import Resource

from ...errors import ApiError
from ...models import utcnow
from ...services.judge0 import submissions as svc
from ...services.judge0.catalog import CALLBACK_MAX_TRIES, MAX_BATCH, STATUSES
from ...services.judge0.params import Errors, Parsed, parse_submission
from ...services.judge0.serialize import (
    BATCH_CONVERSION_ERROR,
    CONVERSION_ERROR,
    FieldsError,
    NotUtf8,
    requested_fields,
    serialize,
)
from ...services.waiting import EndWait, wait_for
from ...services.webhooks.signing import owner_key
from ...services.webhooks.store import Callback, schedule
from ...services.webhooks.urls import RefusedUrl, check_url
from ...web import parking
from ..body import json_body
from ..context import enqueue, owner_id, request_id, rt
from ..ratelimit import charge_executions, execution_charge
from ..waiting import ParkedWait, wait_slots
from . import Judge0Error
from .docs import (
    BASE64_PARAM,
    FIELDS_PARAM,
    anything,
    batch_errors,
    batch_request,
    batch_result,
    errors,
    ns,
    submission,
    submission_page,
)
from .docs import submission_request as request_model

NOT_FOUND = {"error": "not found"}
# A program's refusals (services/programs.py) that are about the archive's files.
ARCHIVE_CODES = frozenset({"INVALID_FILE_PATH", "TOO_MANY_FILES", "FILES_TOO_LARGE", "INVALID_SOURCE", "INVALID_FILES"})


def base64_encoded() -> bool:
    return request.args.get("base64_encoded") == "true"


def fields() -> tuple[str, ...]:
    try:
        return requested_fields(request.args.get("fields"))
    except FieldsError as exc:
        raise Judge0Error(400, {"error": str(exc)}) from None


def _callback_hook(parsed: Parsed) -> Any:
    """The Judge0 callback (a PUT of the default fields, base64, 3 tries), scheduled in the
    submission's transaction; a URL that may not be called is refused now (422)."""
    if not parsed.callback_url:
        return None
    try:
        url = check_url(parsed.callback_url, rt().settings.webhook_allow).url
    except RefusedUrl as exc:
        raise Judge0Error(422, {"callback_url": [str(exc)]}) from None
    callback = Callback(url, "judge0", CALLBACK_MAX_TRIES)

    def hook(conn: Any, execution_id: uuid.UUID, owner: uuid.UUID | None) -> None:
        schedule(conn, [execution_id], owner_key(owner), callback, utcnow())

    return hook


def _parse(body: Any) -> Parsed:
    parsed = parse_submission(body, rt().settings, base64_encoded())
    if isinstance(parsed, Errors):
        raise Judge0Error(422, dict(parsed))
    return parsed


def _create(parsed: Parsed, on_queued: Any = None) -> str:
    r = rt()
    hook = _callback_hook(parsed)
    try:
        return svc.create(
            r.db,
            enqueue(),
            r.settings,
            parsed,
            owner_id=owner_id(),
            events=r.events,
            request_id=request_id(),
            catalog=r.languages,
            on_queued=on_queued,
            after_insert=hook,
        )
    except ApiError as exc:
        if exc.code in ("UNSUPPORTED_LANGUAGE", "LANGUAGE_UNAVAILABLE"):
            raise Judge0Error(422, {"language_id": [exc.message]}) from None
        if parsed.additional_files and exc.code in ARCHIVE_CODES:
            raise Judge0Error(422, {"additional_files": [exc.message]}) from None
        raise


@ns.route("/submissions")
class Submissions(Resource):
    @ns.doc(
        "judge0_create_submission",
        params={
            "base64_encoded": BASE64_PARAM,
            "fields": FIELDS_PARAM,
            "wait": {
                "in": "query",
                "type": "string",
                "enum": ["true", "false"],
                "default": "false",
                "description": "true: answer with the finished submission (or its token if it takes longer "
                "than LIVECODE_MAX_WAIT_MS)",
            },
        },
    )
    @ns.expect(request_model, validate=False)
    @ns.response(201, "Created: {token}, or with wait=true the submission", submission)
    @errors
    @execution_charge
    def post(self) -> Any:
        """Create a submission (Judge0's POST /submissions)."""
        wanted = fields()
        b64 = base64_encoded()
        parsed = _parse(json_body())
        r = rt()
        parks = parking.can_park(request.environ)
        waiting = request.args.get("wait") == "true" and wait_slots(r.settings).try_acquire(parks)
        watch: dict[str, Any] = {}

        def listen(eid: Any) -> None:
            watch["eid"] = str(eid)
            watch["event"] = r.events.watch_finished(str(eid))  # before it is queued: the end is heard

        try:
            token = _create(parsed, listen if waiting else None)
            if not waiting:
                return {"token": token}, 201
            owner = owner_id()

            def answer(final: dict[str, Any] | None) -> Any:
                if final is None:  # it outlived the wait: the token, as without wait
                    return {"token": token}
                try:
                    return serialize(svc.get(r.db, token, owner), wanted, b64)
                except NotUtf8:
                    return {"error": CONVERSION_ERROR, "token": token}

            wait = EndWait(r.db, r.events, uuid.UUID(token), owner, r.settings.max_wait_ms / 1000,
                           watch=watch.pop("event", None))
            if parks:  # the server answers when the wait ends, holding no thread meanwhile (web/parking.py)
                parking.park(request.environ, ParkedWait(wait, wait_slots(r.settings), 201,
                                                         lambda final: (answer(final), 201)))
                waiting = False  # the parked wait gives the slot back
                return {"token": token}, 201
            return answer(wait_for(wait)), 201
        finally:
            if "event" in watch:
                r.events.unwatch_finished(watch["eid"], watch["event"])
            if waiting:
                wait_slots(r.settings).release(parks)

    @ns.doc(
        "judge0_list_submissions",
        params={
            "base64_encoded": BASE64_PARAM,
            "fields": FIELDS_PARAM,
            "page": {"in": "query", "type": "integer"},
            "per_page": {"in": "query", "type": "integer"},
        },
    )
    @ns.response(200, "The caller's submissions, newest first", submission_page)
    @errors
    def get(self) -> Any:
        """The caller's submissions, a page at a time (Judge0's GET /submissions)."""
        wanted = fields()
        page, per_page = _int_arg("page", 1), _int_arg("per_page", 20)
        if page <= 0:
            raise Judge0Error(400, {"error": f"invalid page: {page}"})
        if per_page < 0:
            raise Judge0Error(400, {"error": f"invalid per_page: {per_page}"})
        per_page = min(per_page or 20, 100)
        page = min(page, 2**31)  # Rails pages any number; the database's OFFSET has a ceiling
        rows, total = svc.page(rt().db, owner_id(), page, per_page)
        try:
            items = [serialize(row, wanted, base64_encoded()) for row in rows]
        except NotUtf8:
            raise Judge0Error(400, {"error": BATCH_CONVERSION_ERROR}) from None
        pages = max(1, -(-total // per_page))
        return {
            "submissions": items,
            "meta": {
                "current_page": page,
                "next_page": page + 1 if page < pages else None,
                "prev_page": page - 1 if page > 1 else None,
                "total_pages": pages,
                "total_count": total,
            },
        }


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw.strip())
    except ValueError:
        return 0 if name == "page" else default  # Rails' "x".to_i is 0


@ns.route("/submissions/batch")
class Batch(Resource):
    @ns.doc("judge0_create_batch", params={"base64_encoded": BASE64_PARAM})
    @ns.expect(batch_request, validate=False)
    @ns.response(201, "[{token} or errors of that item, ...] in order", [anything])
    @batch_errors
    def post(self) -> Any:
        """Create up to 20 submissions; each item gets a token or its own errors (Judge0's POST
        /submissions/batch; 422 when none is valid)."""
        body = json_body()
        items = body.get("submissions")
        count = len(items) if isinstance(items, list) else 0
        if count > MAX_BATCH:
            raise Judge0Error(
                400, {"error": f"number of submissions in a batch should be less than or equal to {MAX_BATCH}"}
            )
        if count == 0:
            raise Judge0Error(400, {"error": "there should be at least one submission in a batch"})
        assert isinstance(items, list)
        parsed: list[Parsed | dict[str, Any]] = []
        for item in items:
            try:
                parsed.append(_parse(item))
            except Judge0Error as exc:
                parsed.append(exc.judge0_body)
        valid = sum(isinstance(p, Parsed) for p in parsed)
        charge_executions(valid)  # what is queued is what is charged; 429 refuses the whole batch
        out: list[Any] = []
        for p in parsed:
            if not isinstance(p, Parsed):
                out.append(p)
                continue
            try:
                out.append({"token": _create(p)})
            except Judge0Error as exc:
                out.append(exc.judge0_body)
            except ApiError as exc:
                if exc.status >= 500:
                    raise
                out.append({"base": [exc.message]})
        created = any(isinstance(o, dict) and "token" in o for o in out)
        return out, 201 if created else 422

    @ns.doc(
        "judge0_get_batch",
        params={
            "base64_encoded": BASE64_PARAM,
            "fields": FIELDS_PARAM,
            "tokens": {
                "in": "query",
                "type": "string",
                "required": True,
                "description": "comma-separated tokens (up to 20)",
            },
        },
    )
    @ns.response(200, "{submissions: [submission or null, ...]} in the order asked", batch_result)
    @errors
    def get(self) -> Any:
        """Read up to 20 submissions at once (Judge0's GET /submissions/batch)."""
        wanted = fields()
        raw = request.headers.get("tokens") or request.args.get("tokens") or ""
        tokens = [t.strip() for t in raw.strip().split(",") if t.strip()]
        if len(tokens) > MAX_BATCH:
            raise Judge0Error(
                400, {"error": f"number of submissions in a batch should be less than or equal to {MAX_BATCH}"}
            )
        if not tokens:
            raise Judge0Error(400, {"error": "there should be at least one submission in a batch"})
        found = svc.find(rt().db, tokens, owner_id())
        try:
            return {
                "submissions": [
                    serialize(row, wanted, base64_encoded()) if (row := found.get(_canonical(t))) is not None else None
                    for t in tokens
                ]
            }
        except NotUtf8:
            raise Judge0Error(400, {"error": BATCH_CONVERSION_ERROR}) from None


def _canonical(token: str) -> str:
    try:
        return str(uuid.UUID(token))
    except ValueError:
        return token


@ns.route("/submissions/<string:token>")
@ns.param("token", "the submission's token (its execution id)")
class SubmissionItem(Resource):
    @ns.doc("judge0_get_submission", params={"base64_encoded": BASE64_PARAM, "fields": FIELDS_PARAM})
    @ns.response(200, "The submission", submission)
    @errors
    def get(self, token: str) -> Any:
        """A submission (Judge0's GET /submissions/{token})."""
        wanted = fields()
        try:
            row = svc.get(rt().db, token, owner_id())
        except svc.NotFoundToken:
            raise Judge0Error(404, NOT_FOUND) from None
        try:
            return serialize(row, wanted, base64_encoded())
        except NotUtf8:
            raise Judge0Error(400, {"error": CONVERSION_ERROR}) from None

    @ns.doc("judge0_delete_submission", params={"fields": FIELDS_PARAM})
    @ns.response(200, "Deleted; the submission as it was (base64)", submission)
    @errors
    def delete(self, token: str) -> Any:
        """Delete a finished submission (Judge0's DELETE /submissions/{token}); the answer is
        always base64-encoded, as Judge0's is."""
        wanted = fields()
        try:
            row = svc.delete(rt().db, token, owner_id())
        except svc.NotFoundToken:
            raise Judge0Error(404, NOT_FOUND) from None
        except svc.StillRunning:
            row = svc.get(rt().db, token, owner_id())
            sid = 1 if row.status == "QUEUED" else 2
            raise Judge0Error(
                400, {"error": f"submission cannot be deleted because its status is {sid} ({STATUSES[sid]})"}
            ) from None
        return serialize(row, wanted, True)
