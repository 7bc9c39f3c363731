"""Test cases of an execution (issue 13, part 1): what a request may carry, how each test's
verdict is decided, and how the tests and their results are stored and returned. No Flask.

An execution with `tests` runs its program once per test (a compiled language compiles once).
Stored on the execution row itself, so that the worker's one final UPDATE ... RETURNING writes
the status and every test's result together:
- `tests`: the definitions as submitted, `[{name, stdin, args, expected_output}]`;
- `compare_mode`: the request's `compare` (services/compare.py; null: the default);
- `test_results`: once finished, one entry per test that ran, in index order; the output is
  base64-encoded there, since JSON holds no bytes (output is bytes: nothing is lost).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from ..errors import ValidationError
from ..sandbox.types import text_view
from .compare import DEFAULT_COMPARE, Comparator, CompareModeError, parse_compare
from .validation import check_text

ACCEPTED = "ACCEPTED"
WRONG_ANSWER = "WRONG_ANSWER"
COMPILE_ERROR = "COMPILE_ERROR"
# Every verdict a test can get; the sandbox's outcomes of the same name map onto them as is.
VERDICTS = (ACCEPTED, WRONG_ANSWER, "TIME_LIMIT", "MEMORY_LIMIT", "RUNTIME_ERROR", "OUTPUT_LIMIT", COMPILE_ERROR)
TEST_FIELDS = {"name", "stdin", "args", "expected_output"}
MAX_NAME_CHARS = 200
MAX_COMPARE_CHARS = 64
MAX_ARGS = 64
MAX_ARG_BYTES = 4096


@dataclass(frozen=True)
class TestCase:
    """One test: the program's stdin and arguments, and optionally the output it must print."""

    __test__ = False  # not a pytest test class

    stdin: str = ""
    args: list[str] = field(default_factory=list)
    name: str | None = None
    expected_output: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stdin": self.stdin,
            "args": list(self.args),
            "expected_output": self.expected_output,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TestCase:
        return cls(doc.get("stdin") or "", list(doc.get("args") or []), doc.get("name"), doc.get("expected_output"))


def _invalid(message: str, where: str) -> ValidationError:
    return ValidationError(message, code="INVALID_FIELD", details={"field": where})


def _string(doc: dict[str, Any], key: str, where: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise _invalid(f"field '{where}.{key}' must be a string", f"{where}.{key}")
    return value


def parse_tests(raw: Any) -> list[TestCase] | None:
    """The `tests` field of a request as TestCases (None when absent). Types only: a 400 naming
    the item and field for anything that is not the documented shape; sizes and counts are
    checked by check_tests."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _invalid("field 'tests' must be a list of objects {name?, stdin, args?, expected_output?}", "tests")
    tests = []
    for i, doc in enumerate(raw):
        where = f"tests[{i}]"
        if not isinstance(doc, dict):
            raise _invalid(f"{where} must be an object {{name?, stdin, args?, expected_output?}}", where)
        unknown = sorted(set(doc) - TEST_FIELDS)
        if unknown:
            raise ValidationError(
                f"unknown field(s) in {where}: {', '.join(unknown)}; allowed: {', '.join(sorted(TEST_FIELDS))}",
                code="UNKNOWN_FIELD",
                details={"field": where},
            )
        args = doc.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise _invalid(f"field '{where}.args' must be a list of strings", f"{where}.args")
        tests.append(
            TestCase(
                _string(doc, "stdin", where) or "",
                list(args),
                _string(doc, "name", where),
                _string(doc, "expected_output", where),
            )
        )
    return tests


def check_tests(
    tests: list[TestCase] | None,
    compare: str | None,
    settings: Settings,
    *,
    stdin: str = "",
    args: list[str] | None = None,
    interactive: bool = False,
) -> None:
    """Counts, sizes and the compare mode; a 4xx in the one error shape for anything wrong.
    `stdin`, `args` and `interactive` are the request's own: each test brings its stdin and args,
    and a run with tests reads no live input."""
    if tests is None:
        if compare is not None:
            raise _invalid("field 'compare' applies to test cases: give 'tests' too", "compare")
        return
    if not 1 <= len(tests) <= settings.max_tests:
        raise ValidationError(
            f"field 'tests' must hold 1 to {settings.max_tests} test cases, got {len(tests)}",
            code="TOO_MANY_TESTS" if tests else "INVALID_FIELD",
            details={"field": "tests", "maximum": settings.max_tests, "count": len(tests)},
        )
    if stdin or args or interactive:
        raise ValidationError(
            "a run with 'tests' takes its stdin and args from each test: leave out the request's own "
            "'stdin', 'args' and 'interactive'",
            code="TESTS_CONFLICT",
        )
    comparator(compare)
    for i, test in enumerate(tests):
        where = f"tests[{i}]"
        check_text(test.stdin, f"{where}.stdin", settings.max_stdin_bytes)
        if test.expected_output is not None:
            check_text(test.expected_output, f"{where}.expected_output", settings.max_output_bytes)
        if test.name is not None:
            check_text(test.name, f"{where}.name", MAX_NAME_CHARS * 4)
            if len(test.name) > MAX_NAME_CHARS:
                raise _invalid(f"field '{where}.name' is longer than {MAX_NAME_CHARS} characters", f"{where}.name")
        if len(test.args) > MAX_ARGS:
            raise ValidationError(f"{where}.args may hold at most {MAX_ARGS} items", code="INVALID_ARGS")
        for arg in test.args:
            check_text(arg, f"{where}.args", MAX_ARG_BYTES)


def comparator(compare: str | None) -> Comparator:
    """The request's compare mode (default "trim"); 400 INVALID_COMPARE naming the modes."""
    if compare is not None and len(compare) > MAX_COMPARE_CHARS:
        raise ValidationError(
            f"field 'compare' is longer than {MAX_COMPARE_CHARS} characters",
            code="INVALID_COMPARE",
            details={"field": "compare"},
        )
    try:
        return parse_compare(compare)
    except CompareModeError as exc:
        raise ValidationError(str(exc), code="INVALID_COMPARE", details={"field": "compare"}) from exc


def stored_tests(tests: list[TestCase] | None) -> list[dict[str, Any]] | None:
    """The definitions as the execution row keeps them."""
    return None if tests is None else [t.as_json() for t in tests]


# ---- verdicts -------------------------------------------------------------------------------


def verdict(outcome: str, stdout: bytes, expected: str | None, compare: Comparator) -> str:
    """A test's verdict from how its run ended (the sandbox's outcome) and what it printed."""
    if outcome != "OK":
        return outcome  # TIME_LIMIT, MEMORY_LIMIT, RUNTIME_ERROR, OUTPUT_LIMIT, COMPILE_ERROR
    if expected is None:
        return ACCEPTED
    return ACCEPTED if compare(text_view(stdout), expected) else WRONG_ANSWER


def summary(verdicts: list[str | None]) -> dict[str, Any]:
    """{passed, total, verdict}: the first verdict that is not ACCEPTED, in index order, or
    ACCEPTED; null while a test has none (not run yet, or the run ended early)."""
    first = next((v for v in verdicts if v != ACCEPTED), ACCEPTED)
    return {"passed": sum(v == ACCEPTED for v in verdicts), "total": len(verdicts), "verdict": first}


def result_entry(
    verdict_: str,
    stdout: bytes,
    stderr: bytes,
    *,
    exit_code: int | None,
    signal: int | None,
    execution_time_ms: int | None,
    cpu_time_ms: int | None,
    memory_kb: int | None,
    truncated: bool,
) -> dict[str, Any]:
    """One test's result as the row keeps it (output base64-encoded)."""
    return {
        "verdict": verdict_,
        "stdout": base64.b64encode(stdout).decode("ascii"),
        "stderr": base64.b64encode(stderr).decode("ascii"),
        "exit_code": exit_code,
        "signal": signal,
        "execution_time_ms": execution_time_ms,
        "cpu_time_ms": cpu_time_ms,
        "memory_kb": memory_kb,
        "truncated": truncated,
    }


def _output(stored: str | None, encoding: str) -> str | None:
    if stored is None:
        return None
    return stored if encoding == "base64" else text_view(base64.b64decode(stored))


def case_view(
    index: int, test: dict[str, Any], result: dict[str, Any] | None, encoding: str = "text"
) -> dict[str, Any]:
    """One test as the API returns it: its index and name, and its result (nulls until it ran)."""
    r = result or {}
    return {
        "index": index,
        "name": test.get("name"),
        "verdict": r.get("verdict"),
        "stdout": _output(r.get("stdout"), encoding),
        "stderr": _output(r.get("stderr"), encoding),
        "exit_code": r.get("exit_code"),
        "signal": r.get("signal"),
        "execution_time_ms": r.get("execution_time_ms"),
        "cpu_time_ms": r.get("cpu_time_ms"),
        "memory_kb": r.get("memory_kb"),
        "truncated": r.get("truncated"),
    }


def serialize_tests(
    tests: list[dict[str, Any]] | None,
    results: list[dict[str, Any]] | None,
    encoding: str = "text",
    compare: str | None = None,
) -> dict[str, Any]:
    """The execution's `tests`, `summary` and `compare` fields (all null for a run without tests)."""
    if tests is None:
        return {"tests": None, "summary": None, "compare": None}
    done = results or []
    views = [case_view(i, t, done[i] if i < len(done) else None, encoding) for i, t in enumerate(tests)]
    verdicts = [v["verdict"] for v in views]
    total = summary(verdicts)
    if None in verdicts:
        total["verdict"] = None
    return {"tests": views, "summary": total, "compare": compare or DEFAULT_COMPARE}
