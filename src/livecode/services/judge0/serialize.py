"""A Judge0 submission as Judge0 CE 1.13.1 shows it: its fields, statuses, units and encodings.

Statuses follow isolate_job.rb: a time limit is 5; a compile error 6; a program killed by a
signal is 7-10 by signal (SIGSEGV, SIGXFSZ, SIGFPE, SIGABRT; LiveCode's output cap is Judge0's
file-size limit, SIGXFSZ) or 12; a non-zero exit is 11 (NZEC); a run that ended normally is 3, or
4 when `expected_output` was given and does not match (the `trim` compare mode, which is
Judge0's: trailing whitespace of each line and trailing newlines ignored); LiveCode's own
failures are 13."""

from __future__ import annotations

import base64
import signal as signals
from datetime import datetime
from typing import Any

from ..compare import parse_compare
from .catalog import STATUSES

DEFAULT_FIELDS = ("token", "time", "memory", "stdout", "stderr", "compile_output", "message", "status")
ALL_FIELDS = (
    "source_code",
    "language_id",
    "stdin",
    "expected_output",
    "stdout",
    "status_id",
    "created_at",
    "finished_at",
    "time",
    "memory",
    "stderr",
    "token",
    "number_of_runs",
    "cpu_time_limit",
    "cpu_extra_time",
    "wall_time_limit",
    "memory_limit",
    "stack_limit",
    "max_processes_and_or_threads",
    "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit",
    "max_file_size",
    "compile_output",
    "exit_code",
    "exit_signal",
    "message",
    "wall_time",
    "compiler_options",
    "command_line_arguments",
    "redirect_stderr_to_stdout",
    "callback_url",
    "additional_files",
    "enable_network",
    "status",
    "language",
)
ENCODED = frozenset({"source_code", "stdin", "expected_output", "stdout", "stderr", "compile_output", "message"})
DECIMALS = frozenset({"cpu_time_limit", "cpu_extra_time", "wall_time_limit"})
CONVERSION_ERROR = (
    "some attributes for this submission cannot be converted to UTF-8, use base64_encoded=true query parameter"
)
BATCH_CONVERSION_ERROR = (
    "some attributes for one or more submissions cannot be converted to UTF-8, use base64_encoded=true query parameter"
)

_TRIM = parse_compare("trim")
_SIGNAL_STATUS = {signals.SIGSEGV: 7, signals.SIGXFSZ: 8, signals.SIGFPE: 9, signals.SIGABRT: 10}


class FieldsError(ValueError):
    """`fields=` names fields a submission does not have: Judge0's 400."""


class NotUtf8(ValueError):
    """An attribute is not UTF-8 and base64 was not asked for: Judge0's conversion error."""


def requested_fields(raw: str | None) -> tuple[str, ...]:
    """fields= as Judge0 reads it: absent or empty -> the defaults, `*` -> all, else the list."""
    if raw is None or raw.strip() == "":
        return DEFAULT_FIELDS
    if raw.strip() == "*":
        return ALL_FIELDS
    names = [f.strip() for f in raw.split(",") if f.strip()]
    invalid = [f for f in names if f not in ALL_FIELDS]
    if invalid:
        raise FieldsError(f"invalid fields: [{', '.join(f[:40] for f in invalid[:20])}]")
    return tuple(dict.fromkeys(names)) or DEFAULT_FIELDS


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def status_id(row: Any) -> int:
    """The Judge0 status of an execution row (with the submission's expected_output)."""
    status, reason = row.status, row.reason
    if status == "QUEUED":
        return 1
    if status == "RUNNING":
        return 2
    if status == "TIMEOUT" or reason == "TIME_LIMIT":
        return 5
    if reason == "COMPILE_ERROR":
        return 6
    if reason == "OUTPUT_LIMIT":
        return 8
    if reason in ("RUNTIME_ERROR", "MEMORY_LIMIT", "CANCELLED"):  # CANCELLED: stopped by a user's signal
        if row.signal:
            return _SIGNAL_STATUS.get(row.signal, 12)
        return 11 if (row.exit_code or 0) != 0 else 12
    if status == "COMPLETED":
        if row.expected_output is None:
            return 3
        return 3 if _TRIM(_text(row.stdout), _text(row.expected_output)) else 4
    return 13  # INTERNAL_ERROR, WORKER_LOST, DEAD_LETTER: LiveCode's own failure


def _message(row: Any, sid: int) -> bytes | None:
    """isolate's one-line message, as Judge0 passes it on."""
    if sid == 5:
        return b"Time limit exceeded"
    if sid in (7, 8, 9, 10, 12) and row.signal:
        return f"Caught fatal signal {row.signal}".encode()
    if sid == 11:
        return f"Exited with error status {row.exit_code}".encode()
    if sid == 12 and row.reason == "MEMORY_LIMIT":
        return b"Memory limit exceeded"
    if sid == 13:
        return b"Internal Error"
    return None


def _seconds(ms: int | None) -> str | None:
    return None if ms is None else f"{ms / 1000:.3f}"


def _timestamp(value: datetime | None) -> str | None:
    # Rails' format, which the Judge0 SDK parses with "%Y-%m-%dT%H:%M:%S.%fZ".
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _encode(data: bytes | None, base64_encoded: bool) -> str | None:
    if data is None:
        return None
    if base64_encoded:
        return base64.b64encode(data).decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotUtf8(CONVERSION_ERROR) from None


def values(row: Any) -> dict[str, Any]:
    """Every field of a submission row (an executions row joined with judge0_submissions and the
    source), before encoding."""
    opts = dict(row.options or {})
    sid = status_id(row)
    out: dict[str, Any] = {
        "source_code": (row.source_code or "").encode(),
        "language_id": row.language_id,
        "stdin": (row.stdin or "").encode() if row.stdin else None,
        "expected_output": row.expected_output,
        "stdout": row.stdout,
        "status_id": sid,
        "created_at": _timestamp(row.queued_at),
        "finished_at": _timestamp(row.finished_at),
        "time": _seconds(row.cpu_time_ms),
        "memory": row.memory_kb,
        "stderr": row.stderr,
        "token": str(row.id),
        "compile_output": row.compile_output,
        "exit_code": row.exit_code,
        "exit_signal": row.signal,
        "message": _message(row, sid),
        "wall_time": _seconds(row.execution_time_ms),
        "status": {"id": sid, "description": STATUSES[sid]},
        "language": {"id": row.language_id, "name": opts.get("language_name", "")},
        "additional_files": None,
    }
    for name, value in opts.items():
        if name in ALL_FIELDS and name not in out:
            out[name] = f"{float(value)}" if name in DECIMALS and value is not None else value
    for name in ALL_FIELDS:
        out.setdefault(name, None)
    return out


def serialize(row: Any, fields: tuple[str, ...] = DEFAULT_FIELDS, base64_encoded: bool = False) -> dict[str, Any]:
    """The submission's `fields`, encoded as asked; NotUtf8 when an attribute is not UTF-8 text
    and base64 was not asked for (Judge0's conversion error)."""
    all_values = values(row)
    return {name: _encode(all_values[name], base64_encoded) if name in ENCODED else all_values[name] for name in fields}
