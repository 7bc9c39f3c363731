"""A submission's body, read and checked as Judge0 CE 1.13.1's submission.rb checks it: unknown
keys are ignored (Rails' `permit`), and every problem is reported per field in Judge0's 422
shape, `{"field": ["message", ...]}`. Options LiveCode does not support are refused the way a
Judge0 with them disabled refuses them; `redirect_stderr_to_stdout` becomes the run's
merge_stderr (isolate's --stderr-to-stdout). Limits in Judge0's units (seconds, KB) become
LiveCode's (ms, MB), cut to LiveCode's maxima."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from typing import Any

from ...config import Settings
from ..executions import ExecuteOptions
from ..validation import lenient_b64decode
from .archive import ArchiveError, unzip
from .catalog import LANGUAGE_IDS, MAX_ARGUMENTS_LENGTH, defaults, maxima

NUMBERS = {
    # name: (minimum, strictly greater than the minimum?)
    "number_of_runs": (0, True),
    "cpu_time_limit": (0, False),
    "cpu_extra_time": (0, False),
    "wall_time_limit": (1, False),
    "memory_limit": (2048, False),
    "stack_limit": (0, False),
    "max_processes_and_or_threads": (0, True),
    "max_file_size": (0, False),
}
INTEGERS = frozenset({"number_of_runs", "memory_limit", "stack_limit", "max_processes_and_or_threads", "max_file_size"})
FLAGS = (
    "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit",
    "redirect_stderr_to_stdout",
    "enable_network",
)
REFUSED_FLAGS = {
    "enable_per_process_and_thread_time_limit": "this option cannot be enabled",
    "enable_per_process_and_thread_memory_limit": "this option cannot be enabled",
    "enable_network": "enabling network is not allowed",
}


@dataclass
class Parsed:
    """A valid submission: what to run, and what to keep for `fields=*`."""

    language: str
    language_id: int
    source_code: str
    options: ExecuteOptions
    expected_output: bytes | None
    shown: dict[str, Any] = field(default_factory=dict)  # the options in Judge0's units
    callback_url: str | None = None
    additional_files: list[tuple[str, str]] | None = None  # (path, text) beside the source


class Errors(dict[str, list[str]]):
    def add(self, name: str, message: str) -> None:
        self.setdefault(name, []).append(message)


def _decode(body: dict[str, Any], name: str, base64_encoded: bool, errors: Errors) -> bytes | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        errors.add(name, "must be a string")
        return None
    if not base64_encoded:
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            errors.add(name, "is not valid Unicode")
            return None
    try:
        return lenient_b64decode(value)
    except ValueError:
        errors.add(name, "is not valid base64")
        return None


def _utf8(data: bytes | None, name: str, errors: Errors) -> str | None:
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        errors.add(name, "must be UTF-8 text (LiveCode runs source and stdin as text)")
        return None
    if "\x00" in text:
        errors.add(name, "must not contain NUL characters")
        return None
    return text


def _number(body: dict[str, Any], name: str, errors: Errors) -> float | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        errors.add(name, "is not a number")
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            errors.add(name, "is not a number")
            return None
    try:
        finite = isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:  # an integer of hundreds of digits
        finite = False
    if not finite:
        errors.add(name, "is not a number")
        return None
    minimum, strict = NUMBERS[name]
    if strict and value <= minimum:
        errors.add(name, f"must be greater than {minimum}")
        return None
    if not strict and value < minimum:
        errors.add(name, f"must be greater than or equal to {minimum}")
        return None
    if name in INTEGERS and value != int(value):
        errors.add(name, "must be an integer")
        return None
    return float(value)


def _flag(body: dict[str, Any], name: str, errors: Errors) -> bool | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "t", "false", "0", "f"):
        return value.lower() in ("true", "1", "t")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    errors.add(name, "is not a boolean")
    return None


def _short_text(body: dict[str, Any], name: str, errors: Errors) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        errors.add(name, "must be a string")
        return None
    if len(value) > MAX_ARGUMENTS_LENGTH:
        errors.add(name, f"is too long (maximum is {MAX_ARGUMENTS_LENGTH} characters)")
        return None
    return value


def _limits(asked: dict[str, Any], settings: Settings) -> tuple[dict[str, Any], dict[str, int]]:
    """The limits a submission runs with, in Judge0's units (what `fields=*` shows: each one cut
    to LiveCode's maximum) and as LiveCode's limits. As isolate does, a stack or file size of 0
    is no limit of its own: LiveCode's maximum."""
    top = maxima(settings)
    eff = {name: min(float(asked[name]), top[name]) for name in top}
    for name in ("stack_limit", "max_file_size"):
        eff[name] = eff[name] or top[name]
    limits = {
        # Judge0 has no "no CPU limit": 0 s would stop the program at once; 1 ms is LiveCode's least.
        "cpu_time_ms": max(1, math.ceil(eff["cpu_time_limit"] * 1000)),
        "time_limit_ms": max(1, math.ceil(eff["wall_time_limit"] * 1000)),
        "memory_limit_mb": max(1, math.ceil(eff["memory_limit"] / 1024)),
        "max_processes": max(1, int(eff["max_processes_and_or_threads"])),
        "stack_kb": int(eff["stack_limit"]),
        "max_file_size_kb": int(eff["max_file_size"]),
    }
    # Killed at cpu + extra: the extra time is cut so that the two stay within LiveCode's maximum.
    extra_ms = min(math.ceil(eff["cpu_extra_time"] * 1000), settings.max_time_limit_ms - limits["cpu_time_ms"])
    eff["cpu_extra_time"] = max(0, extra_ms) / 1000
    if extra_ms > 0:
        limits["cpu_extra_ms"] = extra_ms
    # isolate writes stdout and stderr to files: max_file_size bounds them too (SIGXFSZ, status 8,
    # which LiveCode's output cap gives).
    if limits["max_file_size_kb"] * 1024 < settings.max_output_bytes:
        limits["max_output_bytes"] = limits["max_file_size_kb"] * 1024
    shown = {**asked, **{k: (int(v) if k in INTEGERS else v) for k, v in eff.items()}}
    return shown, limits


def parse_submission(body: Any, settings: Settings, base64_encoded: bool) -> Parsed | Errors:
    """A Parsed submission, or the Errors Judge0 would answer 422 with."""
    errors = Errors()
    if not isinstance(body, dict):
        errors.add("submission", "must be a JSON object")
        return errors
    source = _utf8(_decode(body, "source_code", base64_encoded, errors), "source_code", errors)
    if not source and "source_code" not in errors:
        errors.add("source_code", "can't be blank")
    stdin = _utf8(_decode(body, "stdin", base64_encoded, errors), "stdin", errors)
    expected = _decode(body, "expected_output", base64_encoded, errors)

    language = None
    raw_id = body.get("language_id")
    language_id = -1
    if raw_id is None or raw_id == "":
        errors.add("language_id", "can't be blank")
    else:
        try:
            language_id = int(raw_id) if not isinstance(raw_id, bool) and str(raw_id).strip().isdigit() else -1
        except ValueError:
            language_id = -1
        language = LANGUAGE_IDS.get(language_id)
        if language is None:
            errors.add("language_id", f"language with id {str(raw_id)[:40]} doesn't exist")

    given = {name: _number(body, name, errors) for name in NUMBERS}
    flags = {name: _flag(body, name, errors) for name in FLAGS}
    for name, message in REFUSED_FLAGS.items():
        if flags[name]:
            errors.add(name, message)
    if given["number_of_runs"] not in (None, 1.0) and "number_of_runs" not in errors:
        errors.add("number_of_runs", "must be less than or equal to 1 (LiveCode runs a submission once)")

    compiler_options = _short_text(body, "compiler_options", errors)
    if compiler_options and compiler_options.strip():
        errors.add("compiler_options", "setting compiler options is not allowed")
    arguments = _short_text(body, "command_line_arguments", errors)
    args: list[str] = []
    if arguments:
        try:
            args = shlex.split(arguments)  # an argv list: never given to a shell
        except ValueError as exc:
            errors.add("command_line_arguments", f"cannot be split into arguments: {exc}")
    files = body.get("additional_files")
    extra: list[tuple[str, str]] | None = None
    if files not in (None, ""):
        if not isinstance(files, str):
            errors.add("additional_files", "must be a base64-encoded zip archive")
        else:
            try:
                extra = unzip(files, settings) or None
            except ArchiveError as exc:
                errors.add("additional_files", str(exc))
    callback = body.get("callback_url")
    if callback not in (None, "") and not isinstance(callback, str):
        errors.add("callback_url", "must be a string")
    if errors or language is None or source is None:
        return errors

    asked = defaults(settings)
    asked.update({k: v for k, v in given.items() if v is not None})
    shown, limits = _limits(asked, settings)
    shown.update({k: v for k, v in flags.items() if v is not None})
    shown["compiler_options"] = compiler_options
    shown["command_line_arguments"] = arguments
    shown["callback_url"] = callback or None
    # As isolate's --stderr-to-stdout: the program's stderr goes into its stdout, in the order written.
    merge = bool(flags["redirect_stderr_to_stdout"])
    options = ExecuteOptions(stdin=stdin or "", args=args, limits=limits, merge_stderr=merge)
    return Parsed(language, language_id, source, options, expected, shown, callback or None, extra)
