"""The sandbox's narrow interface: a request and limits in, a result out.

Nothing here knows about Flask, Celery or SQL; the worker maps these to rows.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from .outputs import OutputFile, OutputLimits
from .program import SourceFile


class Outcome(str, enum.Enum):
    """How a run ended; the worker maps it to an execution status and reason."""

    OK = "OK"  # exit code 0
    RUNTIME_ERROR = "RUNTIME_ERROR"  # non-zero exit or killed by a signal of its own
    COMPILE_ERROR = "COMPILE_ERROR"
    TIME_LIMIT = "TIME_LIMIT"  # wall or CPU time exceeded
    MEMORY_LIMIT = "MEMORY_LIMIT"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"  # killed for flooding stdout/stderr
    INTERNAL_ERROR = "INTERNAL_ERROR"  # the sandbox itself failed; not the user's fault
    CANCELLED = "CANCELLED"  # ended by a signal the host sent on request (a user's Stop)


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run resource limits. Defaults are the service defaults."""

    time_limit_ms: int = 30_000  # wall clock
    cpu_time_ms: int = 30_000  # whole tree; a run that used more is TIME_LIMIT, even if it ended
    cpu_extra_ms: int = 0  # killed only at cpu_time_ms + this (isolate's --extra-time)
    memory_mb: int = 256  # whole process tree
    max_processes: int = 64  # processes + threads
    max_file_size_kb: int = 10_240  # any single file written (RLIMIT_FSIZE: SIGXFSZ past it)
    stack_kb: int | None = None  # RLIMIT_STACK, soft and hard; None: the worker's own
    max_disk_kb: int = 65_536  # total size of work dir + /tmp
    max_open_files: int = 256
    max_output_bytes: int = 1_048_576  # each of stdout and stderr
    compile_time_limit_ms: int = 60_000
    compile_memory_mb: int = 1024
    compile_max_processes: int = 256  # compilers (go, rustc, javac) are multi-threaded
    compile_max_disk_kb: int = 524_288  # work dir + /tmp while compiling (Go's build cache)


@dataclass(frozen=True)
class RunRequest:
    """One run. The program is either `source` (one file, written to the language's default
    path) or `files` with `entry`, the file that runs (None: the language's default path, or the
    only file); see program.py for the rules on paths."""

    language: str
    source: str = ""
    stdin: str = ""
    args: tuple[str, ...] = ()
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    outputs: OutputLimits | None = None  # keep the files the run leaves in out/ (outputs.py)
    files: tuple[SourceFile, ...] = ()
    entry: str | None = None
    # The program's stderr is its stdout (`2>&1`): one pipe, so one stream in the order written,
    # capped and streamed as stdout; stderr stays empty. The compile stage is not affected.
    merge_stderr: bool = False


def text_view(data: bytes) -> str:
    """Output as text: UTF-8 with every undecodable sequence replaced by U+FFFD (the same text
    an incremental decoder with errors="replace" produces chunk by chunk)."""
    return data.decode("utf-8", errors="replace")


@dataclass
class RunResult:
    """What a run produced. Output is kept as the exact bytes the program wrote (`*_bytes`);
    `stdout`, `stderr` and `compile_output` are text views of them."""

    outcome: Outcome
    exit_code: int | None = None
    signal: int | None = None
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""
    compile_output_bytes: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_time_ms: int = 0
    cpu_time_ms: int | None = None
    memory_kb: int | None = None
    message: str = ""  # human-readable detail for INTERNAL_ERROR and limits
    cached: bool = False  # compiled artifact came from the cache; the compiler did not run
    files: list[OutputFile] = field(default_factory=list)  # what the run left in out/
    files_truncated: bool = False  # some of out/ was left out for a limit

    @property
    def stdout(self) -> str:
        return text_view(self.stdout_bytes)

    @property
    def stderr(self) -> str:
        return text_view(self.stderr_bytes)

    @property
    def compile_output(self) -> str:
        return text_view(self.compile_output_bytes)


# Called from the runner thread for each chunk of output as it is produced:
# on_output(stream, text) with stream "stdout" | "stderr" | "compile".
OutputCallback = Callable[[str, str], None]

# Returns the next chunk of stdin to feed the program, None when there is none
# right now, or b"" at end of input. Used for interactive runs (WebSocket).
StdinSource = Callable[[], bytes | None]

# Returns the next signal (its number) a user asked to send to the running program, or None
# when there is none right now. Polled like StdinSource; the signal goes to the program's own
# process (the one the stage started), as a terminal's Ctrl-C would.
SignalSource = Callable[[], int | None]


class SandboxUnavailable(RuntimeError):
    """The host cannot provide a protection the configuration requires."""


class NoFreeSlot(SandboxUnavailable):
    """Every slot uid of the host is taken (SlotPool.acquire's wait ran out)."""
