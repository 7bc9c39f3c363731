"""Piston v2 compatibility (`/piston/api/v2/...`), the parts with no Flask: the runtimes list,
a request checked as Piston's `get_job()` checks it (api/src/api/v2.js) with its messages, the
limits converted from Piston's units to LiveCode's, and a finished execution as Piston's
`{language, version, run, compile?}` (api/src/job.js).

A Piston request is one run of one program: it gets a code session of its own, owned by the
caller, which is deleted (with its execution) once the answer is made. Piston keeps nothing
either: these runs never count against the caller's session cap, and against the
stored-executions cap only while they run.
"""

from __future__ import annotations

import logging
import math
import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import semantic_version

from ..config import Settings
from ..db import Database
from ..errors import ApiError, NotFound
from ..infra.languages import LanguageCatalog
from ..models import ExecutionStatus
from ..streaming.bus import EventBus
from .executions import Enqueue, ExecuteOptions, submit_execution
from .programs import default_path
from .sessions import create_session, delete_session
from .validation import lenient_b64decode

log = logging.getLogger(__name__)

# Piston's names and aliases of LiveCode's languages (as Piston's packages declare them), and
# the `runtime` it reports for a language provided by a multi-language package.
PISTON_LANGUAGES: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    "python": ("python", ("py", "py3", "python3"), None),
    "javascript": ("javascript", ("node-javascript", "node-js", "js", "node"), "node"),
    "c": ("c", ("gcc",), "gcc"),
    "cpp": ("c++", ("cpp", "g++"), "gcc"),
    "java": ("java", (), None),
    "go": ("go", ("golang",), None),
    "rust": ("rust", ("rs",), None),
    "bash": ("bash", ("sh",), None),
}

# Linux's signal numbers and names, as Piston names them (api/src/globals.js SIGNALS).
SIGNAL_NAMES = {sig.value: sig.name for sig in signal.Signals if 0 < sig.value < 32}

# The order in which Piston checks the limits, and so which one a message names first.
LIMIT_NAMES = (
    "compile_memory_limit",
    "run_memory_limit",
    "compile_timeout",
    "run_timeout",
    "compile_cpu_time",
    "run_cpu_time",
)
FILE_ENCODINGS = ("base64", "hex", "utf8")
MB = 1024 * 1024


class PistonError(ApiError):
    """Bad input in Piston's words (the /piston API answers every error as `{"message": ...}`)."""

    code = "PISTON_BAD_REQUEST"

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status=status)


@dataclass(frozen=True)
class Runtime:
    lang_id: str  # LiveCode's language id
    language: str  # Piston's name
    version: str  # SemVer
    aliases: tuple[str, ...]
    runtime: str | None
    compiled: bool

    def listing(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"language": self.language, "version": self.version, "aliases": list(self.aliases)}
        if self.runtime:
            entry["runtime"] = self.runtime
        return entry

    def answers_to(self, name: str) -> bool:
        return name == self.language or name == self.lang_id or name in self.aliases


def semver(version: str) -> str:
    """A toolchain's version as SemVer ("1.19" -> "1.19.0"); "0.0.0" when it has none."""
    try:
        return str(semantic_version.Version.coerce(version.strip()))
    except ValueError:
        return "0.0.0"


def runtimes(catalog: LanguageCatalog) -> list[Runtime]:
    """What can run now (the live workers' languages), as Piston lists its installed runtimes."""
    out = []
    for lang in catalog.listing():
        known = PISTON_LANGUAGES.get(str(lang["id"]))
        if known is None or not lang.get("available"):
            continue
        name, aliases, runtime = known
        out.append(
            Runtime(
                str(lang["id"]),
                name,
                semver(str(lang.get("version") or "")),
                aliases,
                runtime,
                bool(lang.get("compiled")),
            )
        )
    return out


def find_runtime(available: list[Runtime], language: str, version: str) -> Runtime | None:
    """The newest runtime named `language` (or an alias) whose version satisfies the npm-style
    range `version` ("*", "3.x", "^3.10", "3.11.2"), as Piston's runtime.js picks one; None when
    none does or the range is not one."""
    try:
        spec = semantic_version.NpmSpec(version)
        matching = [
            rt for rt in available if rt.answers_to(language) and spec.match(semantic_version.Version(rt.version))
        ]
    except Exception:  # noqa: BLE001 - not a range: ValueError, and AttributeError on some malformed ones
        return None
    matching.sort(key=lambda rt: semantic_version.Version(rt.version), reverse=True)
    return matching[0] if matching else None


@dataclass
class Job:
    runtime: Runtime
    # The program: (path, content) pairs and the entry's path; entry None: one file at the
    # language's default path (LiveCode's single-file form).
    files: list[tuple[str, str]]
    entry: str | None
    options: ExecuteOptions


def _decoded(i: int, content: str, encoding: str) -> str:
    """A file's content as text: Piston takes base64 and hex too; LiveCode programs are text."""
    if encoding == "utf8":
        return content
    try:
        # base64 as Node's Buffer.from takes it: whitespace and missing padding allowed
        raw = lenient_b64decode(content) if encoding == "base64" else bytes.fromhex(content)
        return raw.decode("utf-8")
    except ValueError:  # binascii.Error is one
        message = f"files[{i}].content is not {encoding} of UTF-8 text (binary files are not supported)"
        raise PistonError(message) from None


def program_files(body_files: list[dict[str, Any]], lang_id: str) -> tuple[list[tuple[str, str]], str | None]:
    """Piston's files as a LiveCode program: every file at its name (Piston's default name
    `file<i>.code` for one without), the first utf8 file the entry. A single unnamed file is
    the language's default file (`main.c`, `Main.java`), as LiveCode's own single-file runs.
    The paths and sizes are checked by the session's program rules (services/programs.py)."""
    encodings = [str(f["encoding"]) if f.get("encoding") in FILE_ENCODINGS else "utf8" for f in body_files]
    entry_index = encodings.index("utf8")
    names = [f.get("name") or None for f in body_files]
    if len(body_files) == 1 and names[0] is None:
        return [(default_path(lang_id), body_files[0]["content"])], None
    files = []
    for i, (f, enc, name) in enumerate(zip(body_files, encodings, names, strict=True)):
        path = name or (default_path(lang_id) if i == entry_index else f"file{i}.code")
        files.append((path, _decoded(i, f["content"], enc)))
    return files, files[entry_index][0]


def _number(body: dict[str, Any], name: str) -> float | None:
    """A limit as Piston reads it: absent, null, 0, false or "" mean "the default". A number too
    large for a float (10**400) is infinite, as in JavaScript; NaN is not a number."""
    value = body.get(name)
    if not value:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise PistonError(f"If specified, {name} must be a number")
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _limits(body: dict[str, Any], settings: Settings) -> dict[str, int]:
    """Piston's limits (ms, ms, bytes) as LiveCode's run limits, clamped to LiveCode's maxima.
    The compile stage's are checked but LiveCode's own compile limits apply."""
    values = {name: _number(body, name) for name in LIMIT_NAMES}
    limits: dict[str, int] = {}
    for name, value in values.items():
        if value is None or value >= 0:
            continue
        if name.endswith("memory_limit"):  # -1: "no limit" in Piston; here the default limit
            continue
        raise PistonError(f"{name} must be non-negative")

    def clamp(value: float, top: int) -> int:
        return top if value >= top else max(1, math.ceil(value))

    if values["run_timeout"] is not None:
        limits["time_limit_ms"] = clamp(values["run_timeout"], settings.max_time_limit_ms)
    if values["run_cpu_time"] is not None:
        limits["cpu_time_ms"] = clamp(values["run_cpu_time"], settings.max_time_limit_ms)
    memory = values["run_memory_limit"]
    if memory is not None and memory > 0:
        limits["memory_limit_mb"] = clamp(memory / MB, settings.max_memory_limit_mb)
    return limits


def parse_job(body: Any, available: list[Runtime], settings: Settings) -> Job:
    """Piston's checks, in Piston's order and words; PistonError for the first that fails."""
    if not isinstance(body, dict):
        raise PistonError("the request body must be a JSON object")
    language, version, files = body.get("language"), body.get("version"), body.get("files")
    if not language or not isinstance(language, str):
        raise PistonError("language is required as a string")
    if not version or not isinstance(version, str):
        raise PistonError("version is required as a string")
    if not isinstance(files, list):
        raise PistonError("files is required as an array")
    for i, file in enumerate(files):
        if not isinstance(file, dict) or not isinstance(file.get("content"), str):
            raise PistonError(f"files[{i}].content is required as a string")
        if file.get("name") is not None and not isinstance(file.get("name"), str):
            raise PistonError(f"files[{i}].name must be a string")
    rt = find_runtime(available, language, version)
    if rt is None:
        raise PistonError(f"{language[:100]}-{version[:100]} runtime is unknown")
    # Piston runs the utf8 files (an unknown encoding counts as utf8); the first is the entry.
    if all(f.get("encoding") in ("base64", "hex") for f in files):
        raise PistonError("files must include at least one utf8 encoded file")
    limits = _limits(body, settings)
    stdin = body.get("stdin")
    if stdin is None:
        stdin = ""
    if not isinstance(stdin, str):
        raise PistonError("stdin must be a string")
    if not stdin.endswith("\n"):
        stdin += "\n"  # as Piston does
    args = body.get("args")
    if args is None:
        args = []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise PistonError("args must be an array of strings")
    program, entry = program_files(files, rt.lang_id)
    return Job(rt, program, entry, ExecuteOptions(stdin=stdin, args=list(args), limits=limits))


# ---- a finished execution as Piston's result ---------------------------------------------------


def _stage(
    stdout: str,
    stderr: str,
    output: str,
    code: int | None,
    signal: str | None,
    message: str | None,
    status: str | None,
    cpu_ms: Any,
    wall_ms: Any,
    memory_kb: Any,
) -> dict[str, Any]:
    return {
        "stdout": stdout,
        "stderr": stderr,
        "output": output,
        "code": code,
        "signal": signal,
        "message": message,
        "status": status,
        "cpu_time": cpu_ms,
        "wall_time": wall_ms,
        "memory": memory_kb * 1024 if memory_kb is not None else None,
    }


def ending(row: dict[str, Any]) -> tuple[int | None, str | None, str | None, str | None]:
    """(code, signal, message, status) of the stage that ended the run, as isolate reports them
    to Piston: RE (non-zero exit), SG (a fatal signal), TO (time), OL/EL (stdout/stderr over the
    limit), XX (the sandbox's own failure); status and message null for a clean exit."""
    reason, code, signum = row.get("reason"), row.get("exit_code"), row.get("signal")
    if row["status"] == ExecutionStatus.COMPLETED:
        return code, None, None, None
    if row["status"] == ExecutionStatus.TIMEOUT:
        return None, "SIGKILL", "Time limit exceeded", "TO"
    if row["status"] == ExecutionStatus.CANCELLED and not signum:
        return None, "SIGKILL", "Cancelled before it ran", "SG"  # a signal before the program started
    if reason in ("RUNTIME_ERROR", "COMPILE_ERROR", "CANCELLED"):
        if signum:
            return None, SIGNAL_NAMES.get(signum, str(signum)), f"Caught fatal signal {signum}", "SG"
        return code, None, f"Exited with error status {code}", "RE"
    if reason == "MEMORY_LIMIT":
        return None, "SIGKILL", "Memory limit exceeded", "SG"
    if reason == "OUTPUT_LIMIT":
        which = "stdout" if row.get("stdout_truncated") else "stderr"
        return None, "SIGKILL", f"{which} length exceeded", "OL" if which == "stdout" else "EL"
    return None, None, "internal error: the run could not be completed", "XX"


def piston_result(row: dict[str, Any], rt: Runtime, output: str | None = None) -> dict[str, Any]:
    """The execution (as GET /api/v1/executions/{id} returns it, text encoding) as Piston's
    answer. `output`: stdout and stderr interleaved in the order written (None: stdout then
    stderr). A compiled language gets a compile stage; when it failed, run is the compile stage,
    as Piston answers for backward compatibility."""
    stdout, stderr = row.get("stdout") or "", row.get("stderr") or ""
    compile_output = row.get("compile_output") or ""
    code, signal, message, status = ending(row)
    times = (row.get("cpu_time_ms"), row.get("execution_time_ms"), row.get("memory_kb"))
    result: dict[str, Any] = {"language": rt.language, "version": rt.version}
    if rt.compiled and row.get("reason") == "COMPILE_ERROR":
        stage = _stage("", compile_output, compile_output, code, signal, message, status, *times)
        result["compile"] = stage
        result["run"] = dict(stage)
        return result
    if rt.compiled:  # the compiler's diagnostics are its stderr; its figures are not kept
        result["compile"] = _stage("", compile_output, compile_output, 0, None, None, None, None, None, None)
    result["run"] = _stage(
        stdout, stderr, output if output is not None else stdout + stderr, code, signal, message, status, *times
    )
    return result


# ---- stdout and stderr in the order written ------------------------------------------------------


def _all_events(bus: EventBus, execution_id: str, page: int = 1000) -> Iterator[tuple[str, str, dict[str, Any]]]:
    after = None
    while True:
        events = bus.read(execution_id, after, 0, count=page)
        if not events:
            return
        yield from events
        after = events[-1][0]


def interleaved_output(bus: EventBus, execution_id: str, stdout: str, stderr: str) -> str | None:
    """stdout and stderr as one text in the order the program wrote them, from the run's output
    events (the sandbox reads both pipes in one loop and publishes each chunk in the order read);
    None when the events do not add up to the stored output (an event was lost, the stream
    expired, a publish failed): the caller then falls back to stdout followed by stderr."""
    parts: list[tuple[str, str]] = []
    try:
        for _id, kind, data in _all_events(bus, execution_id):
            if kind == "status" and data.get("status") == ExecutionStatus.RUNNING:
                parts = []  # a new attempt starts over
            elif kind == "output" and data.get("stream") in ("stdout", "stderr"):
                parts.append((str(data["stream"]), str(data.get("text", ""))))
    except Exception:  # noqa: BLE001 - the events are a convenience; the row is the truth
        return None
    if "".join(t for s, t in parts if s == "stdout") != stdout:
        return None
    if "".join(t for s, t in parts if s == "stderr") != stderr:
        return None
    return "".join(t for _s, t in parts)


# ---- one run: a session of its own, deleted once answered ----------------------------------------


def start_run(
    db: Database,
    enqueue: Enqueue,
    settings: Settings,
    events: EventBus,
    job: Job,
    *,
    owner_id: uuid.UUID | None,
    request_id: str | None,
    languages: LanguageCatalog,
    interactive: bool = False,
    on_queued: Callable[[uuid.UUID], object] | None = None,
) -> tuple[uuid.UUID, uuid.UUID]:
    """Create the run's own session and queue its execution; (session id, execution id). The
    session is not counted against the caller's session cap (it lives as long as the request);
    the execution is, as every run is, against the stored-executions cap."""
    if job.entry is None:  # one file: LiveCode's single-file form and limit (LIVECODE_MAX_SOURCE_BYTES)
        session = create_session(
            db,
            language=job.runtime.lang_id,
            source_code=job.files[0][1],
            owner_id=owner_id,
            max_bytes=settings.max_source_bytes,
            languages=languages,
        )
    else:  # the program rules and limits (LIVECODE_MAX_FILES, _MAX_FILES_BYTES), not the session cap
        session = create_session(
            db,
            language=job.runtime.lang_id,
            source_code=None,
            owner_id=owner_id,
            max_bytes=settings.max_source_bytes,
            settings=replace(settings, max_sessions=0),
            languages=languages,
            files=job.files,
            entry=job.entry,
        )
    session_id = uuid.UUID(session["session_id"])
    job.options.interactive = interactive
    if interactive:
        job.options.stdin = ""  # as Piston: an interactive run reads only what the client sends
    try:
        queued = submit_execution(
            db,
            enqueue,
            settings,
            session_id,
            owner_id=owner_id,
            options=job.options,
            events=events,
            request_id=request_id,
            on_queued=on_queued,
            languages=languages,
        )
    except BaseException:
        forget_run(db, session_id, owner_id)
        raise
    return session_id, uuid.UUID(queued["execution_id"])


def forget_run(db: Database, session_id: uuid.UUID, owner_id: uuid.UUID | None) -> None:
    """Delete the run's session and, with it, its execution (a run still going is not stopped:
    its result is simply not kept). A failure (the database down) is logged, never the caller's:
    the answer is already made; the session is left behind."""
    try:
        delete_session(db, session_id, owner_id)
    except NotFound:
        pass
    except Exception:  # noqa: BLE001 - a clean-up; the answer must not be lost to it
        log.warning("could not delete a Piston run's session", extra={"session_id": str(session_id)}, exc_info=True)
