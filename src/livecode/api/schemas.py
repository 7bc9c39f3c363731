"""Flask-RESTX models: the OpenAPI description of every request, response and error."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask_restx import Namespace, fields

from ..models import ExecutionStatus
from ..services.cancel import DEFAULT_SIGNAL, SIGNALS
from ..services.compare import COMPARE_MODES, DEFAULT_COMPARE
from ..services.testcases import VERDICTS

# Models live on this namespace-less registry and are attached to each namespace that uses them.
shared = Namespace("shared", description="shared models")

F = TypeVar("F", bound=fields.Raw)


def nullable(field: F) -> F:
    """Mark a field that may be null. Swagger 2.0 has no `nullable`; its `x-nullable` extension
    says it to validators and client generators."""
    plain = field.schema
    field.schema = lambda: {**plain(), "x-nullable": True}  # type: ignore[method-assign]
    return field

error_detail = shared.model(
    "ErrorDetail",
    {
        "code": fields.String(required=True, example="SESSION_NOT_FOUND"),
        "message": fields.String(required=True),
        "details": fields.Raw(description="extra machine-readable context"),
    },
)
error = shared.model("Error", {"error": fields.Nested(error_detail, required=True)})

program_file = shared.model(
    "ProgramFile",
    {
        "path": fields.String(required=True, example="util/helpers.py",
                              description="relative; no '..', no leading '/', no backslash, no NUL"),
        "content": fields.String(required=True, example="def twice(x):\n    return 2 * x\n"),
    },
)
_FILES_DOC = ("a multi-file program: every file (at most LIVECODE_MAX_FILES files and LIVECODE_MAX_FILES_BYTES "
              "bytes in all); beside source_code, the files other than the entry")
_ENTRY_DOC = "the file that runs (default: the language's default file, e.g. main.py, or the only file)"
session_create = shared.model(
    "CodeSessionCreate",
    {
        "language": fields.String(required=True, example="python"),
        "source_code": fields.String(example="print('Hello World')",
                                     description="the program as one file (or the entry's content, beside files)"),
        "files": fields.List(fields.Nested(program_file), description=_FILES_DOC),
        "entry": fields.String(example="main.py", description=_ENTRY_DOC),
    },
)
session_patch = shared.model(
    "CodeSessionAutosave",
    {
        "source_code": fields.String(example="print('Hello World!')", description="the entry's new content"),
        "files": fields.List(fields.Nested(program_file), description="the whole new set of files"),
        "file": fields.Nested(program_file, description="one file to add or replace"),
        "entry": fields.String(description=_ENTRY_DOC),
        "version": fields.Integer(
            description="the version this edit was based on; applied only if still current"
        ),
    },
)
session = shared.model(
    "CodeSession",
    {
        "session_id": fields.String(required=True),
        "id": fields.String(required=True),
        "language": fields.String(required=True),
        "source_code": fields.String(required=True, description="the entry's content"),
        "files": fields.List(fields.Nested(program_file), required=True,
                             description="every file of the program, the entry's included"),
        "entry": fields.String(required=True, example="main.py"),
        "status": fields.String(required=True, example="ACTIVE"),
        "version": fields.Integer(required=True),
        "created_at": fields.String(required=True),
        "updated_at": fields.String(required=True),
    },
)
autosaved = shared.model(
    "CodeSessionSaved",
    {
        "session_id": fields.String(required=True),
        "status": fields.String(required=True),
        "version": fields.Integer(required=True),
        "updated_at": fields.String(required=True),
    },
)
TESTS_DOC = (
    "test cases: the program runs once per test (a compiled language compiles once), each run in a fresh "
    "sandbox with the request's limits and its share of the output limit; at most LIVECODE_MAX_TESTS (100). "
    "Leave out `stdin`, `args` and `interactive` then: each test brings its own."
)
MERGE_STDERR_DOC = (
    "the program's stderr goes into its stdout, as `2>&1`: one stream (`stdout`, and `stdout` output events), "
    "in the order written, under the stdout output limit; `stderr` stays empty. The compiler's output is "
    "still `compile_output`"
)
COMPARE_DOC = (
    f"how each test's stdout is compared with its expected_output: one of {', '.join(COMPARE_MODES)} "
    f"(default {DEFAULT_COMPARE}: trailing whitespace of each line and trailing newlines ignored; tokens: "
    "whitespace-separated tokens equal; float:EPS: tokens equal, numbers within an absolute or relative EPS)"
)
test_case = shared.model(
    "TestCase",
    {
        "name": fields.String(description="a label shown with the result"),
        "stdin": fields.String(required=True, description="standard input of this test's run"),
        "args": fields.List(fields.String, description="command-line arguments of this test's run"),
        "expected_output": fields.String(
            description="what stdout must be (see `compare`); without it a clean run is ACCEPTED"),
    },
)
test_result = shared.model(
    "TestResult",
    {
        "index": fields.Integer(required=True, description="the test's position in `tests`, from 0"),
        "name": nullable(fields.String()),
        "verdict": nullable(fields.String(
            enum=list(VERDICTS),
            description="null until the test has run (or when the execution ended before it: INTERNAL_ERROR). "
            "WRONG_ANSWER only when expected_output was given; COMPILE_ERROR for every test when the program "
            "did not compile",
        )),
        "stdout": nullable(fields.String(description="in the execution's `encoding`")),
        "stderr": nullable(fields.String(description="in the execution's `encoding`")),
        "exit_code": nullable(fields.Integer()),
        "signal": nullable(fields.Integer()),
        "execution_time_ms": nullable(fields.Integer()),
        "cpu_time_ms": nullable(fields.Integer()),
        "memory_kb": nullable(fields.Integer()),
        "truncated": nullable(fields.Boolean(description="stdout or stderr was cut at the test's output share")),
    },
)
test_summary = shared.model(
    "TestSummary",
    {
        "passed": fields.Integer(required=True),
        "total": fields.Integer(required=True),
        "verdict": nullable(fields.String(
            enum=list(VERDICTS),
            description="the first verdict that is not ACCEPTED, in index order, or ACCEPTED; null until every "
            "test has a verdict",
        )),
    },
)
execute_request = shared.model(
    "ExecuteRequest",
    {
        "stdin": fields.String(description="standard input for the program"),
        "args": fields.List(fields.String, description="command-line arguments"),
        "priority": fields.String(enum=["interactive", "batch"], default="interactive"),
        "interactive": fields.Boolean(
            default=False,
            description="keep stdin open for input sent over the WebSocket "
            "(/api/v1/executions/{id}/ws) until EOF or the time limit; `stdin` is fed first",
        ),
        "merge_stderr": fields.Boolean(default=False, description=MERGE_STDERR_DOC),
        "callback_url": fields.String(
            description="called when the run ends: a signed POST of the finished execution (see "
            "/api/v1/webhooks/secret); default: the API key's callback_url"),
        "time_limit_ms": fields.Integer(),
        "cpu_time_ms": fields.Integer(description="CPU time of the whole process tree; more is TIME_LIMIT"),
        "cpu_extra_ms": fields.Integer(
            description="the program is killed only at cpu_time_ms + this (a run that ends in the extra "
            "time is still TIME_LIMIT, with its output); default 0"),
        "memory_limit_mb": fields.Integer(),
        "max_processes": fields.Integer(),
        "max_output_bytes": fields.Integer(),
        "max_file_size_kb": fields.Integer(description="largest file the program may write (RLIMIT_FSIZE)"),
        "stack_kb": fields.Integer(description="the program's stack (RLIMIT_STACK)"),
        "tests": fields.List(fields.Nested(test_case), description=TESTS_DOC),
        "compare": fields.String(description=COMPARE_DOC, default=DEFAULT_COMPARE),
    },
)
execution_queued = shared.model(
    "ExecutionQueued",
    {
        "execution_id": fields.String(required=True),
        "status": fields.String(required=True, example="QUEUED"),
        "session_id": fields.String(required=True),
        "queued_at": fields.String(required=True),
    },
)
cancel_request = shared.model(
    "CancelRequest",
    {
        "signal": fields.String(
            enum=list(SIGNALS), default=DEFAULT_SIGNAL,
            description="the signal the running program gets (SIGINT: as Ctrl-C; a program may handle "
            "every one but SIGKILL). A QUEUED execution is cancelled whatever the signal."),
    },
)
cancel_sent = shared.model(
    "CancelSent",
    {
        "execution_id": fields.String(required=True),
        "session_id": fields.String(required=True),
        "status": fields.String(required=True, example="RUNNING"),
        "signal": fields.String(required=True, example="SIGKILL", description="the signal sent to the program"),
    },
)
execution = shared.model(
    "Execution",
    {
        "execution_id": fields.String(required=True),
        "session_id": fields.String(required=True),
        "status": fields.String(
            required=True, enum=[s.value for s in ExecutionStatus]
        ),
        "reason": nullable(fields.String(
            description="why FAILED, TIMEOUT or CANCELLED: COMPILE_ERROR, RUNTIME_ERROR, MEMORY_LIMIT, "
            "OUTPUT_LIMIT, TIME_LIMIT, INTERNAL_ERROR, WORKER_LOST, DEAD_LETTER, CANCELLED (stopped on "
            "request: `signal` says which signal ended it, null if it never ran)"
        )),
        "language": fields.String(),
        "entry": nullable(fields.String(description="the file that ran, for a multi-file program; null for one file")),
        "version": nullable(fields.Integer(
            description="the session's history version it ran (GET /api/v1/code-sessions/{id}/versions/{n}); "
            "null for a run made before history existed")),
        "priority": fields.String(),
        "interactive": fields.Boolean(),
        "merge_stderr": fields.Boolean(description=MERGE_STDERR_DOC),
        "encoding": fields.String(
            enum=["text", "base64"],
            description="how stdout, stderr and compile_output are given: `text` (UTF-8, undecodable "
            "bytes replaced by U+FFFD) or `base64` (the exact bytes; ask with ?encoding=base64)",
        ),
        "stdout": nullable(fields.String(description="what the program wrote to stdout, in `encoding`")),
        "stderr": nullable(fields.String(description="what the program wrote to stderr, in `encoding`")),
        "compile_output": nullable(fields.String(description="the compiler's output, in `encoding`")),
        "stdout_truncated": fields.Boolean(),
        "stderr_truncated": fields.Boolean(),
        "exit_code": nullable(fields.Integer()),
        "signal": nullable(fields.Integer()),
        "execution_time_ms": nullable(fields.Integer()),
        "cpu_time_ms": nullable(fields.Integer()),
        "memory_kb": nullable(fields.Integer()),
        "files_truncated": fields.Boolean(
            description="some of the files the run left in out/ were not kept (over a limit); "
            "GET /api/v1/executions/{id}/files lists those that were"
        ),
        "attempts": fields.Integer(),
        "worker": nullable(fields.String(description="the worker that ran (or is running) it")),
        "queued_at": fields.String(),
        "started_at": nullable(fields.String()),
        "finished_at": nullable(fields.String()),
        "tests": nullable(fields.List(fields.Nested(test_result),
                                      description="per-test results, in index order; null for a run without tests")),
        "summary": nullable(fields.Nested(test_summary, description="null for a run without tests")),
        "compare": nullable(fields.String(description="the tests' compare mode; null for a run without tests")),
    },
)
execution_page = shared.model(
    "ExecutionPage",
    {
        "items": fields.List(fields.Nested(execution), required=True),
        "page": fields.Integer(required=True),
        "per_page": fields.Integer(required=True),
        "total": fields.Integer(required=True),
    },
)
language = shared.model(
    "Language",
    {
        "id": fields.String(required=True),
        "name": fields.String(required=True),
        "version": fields.String(),
        "available": fields.Boolean(required=True),
        "compiled": fields.Boolean(),
        "libraries": fields.List(
            fields.Nested(shared.model("Library", {"name": fields.String(required=True), "version": fields.String()})),
            description="libraries a program can use, as installed on the workers (empty when unavailable)",
        ),
    },
)
health = shared.model(
    "Health",
    {"status": fields.String(required=True, example="ok"), "details": fields.Raw()},
)


def attach(ns: Namespace) -> None:
    """Register every shared model on a namespace so its Swagger document has them."""
    for model in shared.models.values():
        ns.add_model(model.name, model)


# Answers any operation can give whatever its handler does: bad ids, headers or bodies (400),
# credentials (401), size and media type of a body (413, 415), rate limits (429), and a dependency
# that is down (503). Added to every operation of the Swagger document so it states them all.
COMMON_RESPONSES = {
    "400": "Invalid input: a malformed id, query parameter, header or body",
    "401": "Missing, invalid or expired credentials",
    "413": "The request body is too large",
    "415": "The request body is not JSON",
    "429": "Rate limit exceeded; see Retry-After",
    "503": "A dependency (the database or Redis) is unavailable; see Retry-After",
}


def add_common_responses(spec: dict[str, Any], is_public: Callable[[str, str], bool]) -> dict[str, Any]:
    """Document COMMON_RESPONSES on every operation of `spec` (in place; idempotent)."""
    for path, item in spec.get("paths", {}).items():
        url = re.sub(r"{[^}]+}", "x", path)
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            codes = ["400", "429", "503"]
            if not is_public(url, method.upper()):
                codes.append("401")
            if method in {"post", "put", "patch"}:
                codes += ["413", "415"]
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(code, {"description": COMMON_RESPONSES[code],
                                            "schema": {"$ref": "#/definitions/Error"}})
    return spec
