"""The Judge0 API's OpenAPI description: its namespace and models, and the error answers every
operation may give (in Judge0's shape, which is not LiveCode's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask_restx import Namespace, fields

from ..schemas import nullable

ns = Namespace("judge0", description="Judge0 CE 1.13.1-compatible API (docs/compat.md); errors in Judge0's shape")

F = TypeVar("F", bound=Callable[..., Any])

error = ns.model(
    "Judge0Error",
    {
        "error": fields.String(
            description="what went wrong; a refused submission (422) names each field instead: "
            '{"source_code": ["can\'t be blank"]}'
        ),
    },
)
submission = ns.model(
    "Judge0Submission",
    {
        "token": fields.String(description="the execution id"),
        "status": fields.Raw(description="{id, description}"),
    },
)
submission_request = ns.model(
    "Judge0SubmissionRequest",
    {
        "source_code": fields.String(required=True),
        "language_id": fields.Integer(required=True, example=71),
        "stdin": fields.String(),
        "expected_output": fields.String(),
        "cpu_time_limit": fields.Float(),
        "wall_time_limit": fields.Float(),
        "memory_limit": fields.Integer(description="KB"),
        "max_processes_and_or_threads": fields.Integer(),
        "command_line_arguments": fields.String(description="split like a shell would (shlex), never run by one"),
        "redirect_stderr_to_stdout": fields.Boolean(
            default=False, description="the program's stderr goes into its stdout (2>&1), in the order written"),
        "callback_url": fields.String(description="PUT the finished submission here (default fields, base64)"),
    },
)
batch_request = ns.model(
    "Judge0BatchRequest",
    {
        "submissions": fields.List(fields.Nested(submission_request), required=True),
    },
)
submission_page = ns.model(
    "Judge0SubmissionPage",
    {
        "submissions": fields.List(fields.Nested(submission)),
        "meta": fields.Raw(),
    },
)
batch_result = ns.model(
    "Judge0BatchResult",
    {"submissions": fields.List(nullable(fields.Raw(description="null for a token that is not yours or not known")))},
)
language = ns.model("Judge0Language", {"id": fields.Integer(required=True), "name": fields.String(required=True)})
status = ns.model("Judge0Status", {"id": fields.Integer(required=True), "description": fields.String(required=True)})
anything = ns.model("Judge0Info", {})

ERRORS = {
    400: "Bad request (Judge0's {error})",
    401: "Missing or invalid X-Auth-Token",
    403: "Needs the admin role",
    404: "Not found",
    413: "The request body is too large",
    415: "The request body is not JSON",
    422: "A submission was refused: errors per field",
    429: "Rate limit exceeded; see Retry-After",
    503: "A dependency (the database or Redis) is unavailable",
}

FIELDS_PARAM = {
    "in": "query",
    "type": "string",
    "description": "comma-separated attributes, or * for all (default: Judge0's defaults)",
}
BASE64_PARAM = {"in": "query", "type": "string", "enum": ["true", "false"], "default": "false"}


def errors(fn: F) -> F:
    """Document Judge0's error answers on an operation."""
    for code, text in ERRORS.items():
        fn = ns.response(code, text, error)(fn)
    return fn


def batch_errors(fn: F) -> F:
    """errors() of a batch creation, whose 422 (no item valid) is the list of each item's errors."""
    for code, text in ERRORS.items():
        if code == 422:
            fn = ns.response(422, "No submission was valid: each item's errors, in order", [anything])(fn)
        else:
            fn = ns.response(code, text, error)(fn)
    return fn
