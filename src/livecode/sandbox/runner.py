"""The run flow shared by every runner: look up the language, compile (or take the compiled
program from the cache), run, and turn what happened into a RunResult."""

from __future__ import annotations

import logging
import posixpath
import signal as signals
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .cache import ArtifactCache, ArtifactTooLarge, cache_key, close_files, pages
from .files import FileSpec
from .fontcache import font_cache_files
from .languages import Language, all_languages, get_language, toolchain_version
from .outputs import Collected, OutputLimits
from .program import InvalidProgram, SourceFile, expand, resolve
from .types import (
    Outcome,
    OutputCallback,
    RunRequest,
    RunResult,
    SandboxLimits,
    SignalSource,
    StdinSource,
    text_view,
)

log = logging.getLogger(__name__)

ARTIFACT_CAP = 128 * 1024 * 1024  # largest compiled program we accept from a compile stage
TAR_SLACK = 1024 * 1024  # tar headers and padding on top of the files while streaming
MB = 1024 * 1024
COMPILE_OUTPUT_CAP = 256 * 1024
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TMPDIR": "/tmp",
}


@dataclass
class Stage:
    kind: str  # "compile" | "run"
    argv: list[str]
    env: dict[str, str]
    files: list[FileSpec]
    wall_ms: int
    cpu_ms: int
    memory_mb: int
    max_processes: int
    max_file_kb: int
    max_disk_kb: int
    max_open_files: int
    stdout_cap: int
    stderr_cap: int
    stack_kb: int | None = None  # None: the worker's own RLIMIT_STACK
    stdin: bytes = b""
    stdin_source: StdinSource | None = None
    signal_source: SignalSource | None = None  # signals a user sends to the stage's program
    collect: tuple[str, ...] = ()  # artifact globs to bring back (compile stage)
    stdout_file: int | None = None  # compile stage: the artifacts' tar goes to this file, not memory
    outputs: OutputLimits | None = None  # run stage: bring back what it leaves in out/
    merge_stderr: bool = False  # run stage: fds 1 and 2 are one pipe, read as stdout (2>&1)
    ahead: int = 0  # run stage: runs with the same limits that follow this one at once (pool.py)
    warm_entry: str | None = None  # run stage: the entry file, when the program may start before it (warm.py)


@dataclass(frozen=True)
class Program:
    """A run's program: its language, files and entry (checked by program.resolve)."""

    lang: Language
    files: list[SourceFile]
    entry: str

    def specs(self) -> list[FileSpec]:
        """The source files as a stage receives them."""
        return [FileSpec(f.path, 0o644, data=f.data) for f in self.files]

    def argv(self, command: tuple[str, ...]) -> list[str]:
        return expand(command, self.entry, [f.path for f in self.files], self.lang.sources)


@dataclass
class Prepared:
    """A program ready to run: the program and the files a run starts with (its source files, and
    a compiled program's files as open descriptors from the cache; close() releases them)."""

    program: Program
    files: list[FileSpec]
    compile_output: bytes = b""
    cached: bool = False  # the compiled program came from the cache

    @property
    def lang(self) -> Language:
        return self.program.lang

    def close(self) -> None:
        close_files(self.files)


@dataclass
class StageResult:
    exit_code: int | None = None
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_ms: int = 0
    cpu_ms: int | None = None
    memory_kb: int | None = None
    killed_for: str | None = None  # "wall" | "cpu" | "output" | "signal"
    sent_signals: frozenset[int] = frozenset()  # delivered to the program on request
    oom: bool = False
    internal_error: str | None = None
    outputs: Collected | None = None  # the files of out/, when the stage asked for them


class Runner(ABC):
    """Runs one request at a time per calling thread; safe to call from several threads."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache = ArtifactCache(cache_dir)

    @abstractmethod
    def check(self) -> None:
        """Raise SandboxUnavailable saying what is missing and how to fix it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the runner holds between runs (pre-built sandboxes)."""

    def expect(self, limits: SandboxLimits, count: int) -> None:  # noqa: B027 - optional hook
        """`count` runs with these limits follow soon (a program's test cases, once it is
        compiled): a runner that builds sandboxes ahead may start on theirs now."""

    @abstractmethod
    def _execute(self, stage: Stage, on_output: OutputCallback | None) -> StageResult:
        """Run one stage in a fresh work directory."""

    def run(
        self,
        req: RunRequest,
        on_output: OutputCallback | None = None,
        stdin_source: StdinSource | None = None,
        signal_source: SignalSource | None = None,
        on_run_stage: Callable[[], object] | None = None,
    ) -> RunResult:
        """Compile (if need be) and run `req`. `stdin_source`: input that arrives while it runs
        (interactive); `signal_source`: signals a user sends to it, in either stage (a Stop);
        `on_run_stage`: called when a compiled program's run stage starts (the compiler is done)."""
        try:
            return self._run(req, on_output, stdin_source, signal_source, on_run_stage)
        except Exception as e:  # the sandbox failed, not the user's program
            log.exception("sandbox run failed")
            return RunResult(Outcome.INTERNAL_ERROR, message=f"sandbox failure: {e}")

    def _run(
        self, req: RunRequest, on_output: OutputCallback | None, stdin_source: StdinSource | None,
        signal_source: SignalSource | None, on_run_stage: Callable[[], object] | None = None,
    ) -> RunResult:
        prepared = self.prepare(req, on_output, signal_source)
        if isinstance(prepared, RunResult):
            return prepared
        if on_run_stage is not None and prepared.program.lang.compiled:
            on_run_stage()
        try:
            result = self._run_stage(req, prepared.program, prepared.files, on_output, stdin_source, signal_source)
        finally:
            prepared.close()
        result.compile_output_bytes = prepared.compile_output
        result.cached = prepared.cached
        return result

    def prepare(
        self, req: RunRequest, on_output: OutputCallback | None = None, signal_source: SignalSource | None = None
    ) -> Prepared | RunResult:
        """The files a run of `req` starts with: its source and, for a compiled language, the
        compiled program (from the cache, or compiled now in the sandbox). A RunResult when
        there is nothing to run (COMPILE_ERROR, INTERNAL_ERROR). The caller closes a Prepared;
        each run_prepared of it gets a fresh sandbox with copies of its files."""
        lang = get_language(req.language)
        if lang is None or not lang.available:
            names = ", ".join(lg.id for lg in all_languages() if lg.available)
            return RunResult(
                Outcome.INTERNAL_ERROR,
                message=f"language '{req.language}' is not available; available: {names}",
            )
        try:
            program = Program(lang, *resolve(req.source, req.files, req.entry, lang.source_file))
        except InvalidProgram as e:  # the API refuses these first; this is the sandbox's own guard
            return RunResult(Outcome.INTERNAL_ERROR, message=f"invalid program files: {e}")
        files = program.specs()
        if not lang.compiled:
            return Prepared(program, files)
        got = self._compiled(program, req, on_output, signal_source)
        if isinstance(got, RunResult):
            return got
        artifacts, compile_output, cached = got
        # A compiled file takes the place of a source file of the same name.
        built = {a.name for a in artifacts}
        return Prepared(program, [f for f in files if f.name not in built] + artifacts, compile_output, cached)

    def run_prepared(
        self, prepared: Prepared, req: RunRequest, on_output: OutputCallback | None = None,
        signal_source: SignalSource | None = None, *, ahead: int = 0,
    ) -> RunResult:
        """One run of a prepared program with `req`'s stdin, args and limits (its language and
        files are the prepared ones), in a fresh sandbox. A sandbox failure is INTERNAL_ERROR.
        `ahead`: how many runs with the same limits the caller makes right after this one (its
        other test cases), so that their sandboxes can be set up while this one runs."""
        try:
            return self._run_stage(req, prepared.program, prepared.files, on_output, None, signal_source, ahead)
        except Exception as e:  # the sandbox failed, not the user's program
            log.exception("sandbox run failed")
            return RunResult(Outcome.INTERNAL_ERROR, message=f"sandbox failure: {e}")

    def _run_stage(
        self,
        req: RunRequest,
        program: Program,
        files: list[FileSpec],
        on_output: OutputCallback | None,
        stdin_source: StdinSource | None,
        signal_source: SignalSource | None = None,
        ahead: int = 0,
    ) -> RunResult:
        lang = program.lang
        limits = req.limits
        # "{memory_mb}" in a language's env is the run's memory limit: Node sizes its heap from
        # /proc/meminfo, which shows that limit, to a quarter of it; the flag lets it use it all.
        env = {**BASE_ENV, **{k: v.replace("{memory_mb}", str(limits.memory_mb)) for k, v in lang.env.items()}}
        stage = Stage(
            kind="run",
            argv=[*program.argv(lang.run), *req.args],
            env=env,
            files=[*files, *font_cache_files(lang)],
            wall_ms=limits.time_limit_ms,
            cpu_ms=limits.cpu_time_ms + limits.cpu_extra_ms,  # killed here; judged by cpu_time_ms
            memory_mb=limits.memory_mb,
            max_processes=limits.max_processes,
            max_file_kb=limits.max_file_size_kb,
            max_disk_kb=limits.max_disk_kb,
            max_open_files=limits.max_open_files,
            stdout_cap=limits.max_output_bytes,
            stderr_cap=limits.max_output_bytes,
            stack_kb=limits.stack_kb,
            stdin=req.stdin.encode("utf-8"),
            stdin_source=stdin_source,
            signal_source=signal_source,
            outputs=req.outputs,
            merge_stderr=req.merge_stderr,
            ahead=ahead,
            warm_entry=program.entry if _warm_startable(lang, program, req) else None,
        )
        sr = self._execute(stage, on_output)
        return self._to_result(sr, limits)

    def _compiled(
        self, program: Program, req: RunRequest, on_output: OutputCallback | None,
        signal_source: SignalSource | None = None,
    ) -> tuple[list[FileSpec], bytes, bool] | RunResult:
        """The compiled program's files, from the cache or by compiling in the sandbox."""
        lang = program.lang
        assert lang.compile is not None
        key = cache_key(lang, toolchain_version(lang), program.argv(lang.compile), program.files)
        limits: SandboxLimits = req.limits
        # The program must fit the run's disk (a tmpfs of max_disk_kb) beside its source files.
        source_pages = sum(pages(len(f.data)) for f in program.files)
        room = limits.max_disk_kb * 1024 - source_pages
        hit = self.cache.get(key)
        if hit is not None:
            files, output = hit
            used = sum(pages(f.size()) for f in files)
            if used > room:  # compiled earlier for a run with more disk
                close_files(files)
                problem = _too_large(used + source_pages, limits)
                return RunResult(
                    Outcome.COMPILE_ERROR, compile_output_bytes=_with(output, problem), cached=True, message=problem
                )
            if output and on_output:
                on_output("compile", text_view(output))
            return files, output, True
        with self.cache.incoming() as tar_file:
            return self._compile(program, req, on_output, key, room, tar_file, signal_source)

    def _compile(
        self, program: Program, req: RunRequest, on_output: OutputCallback | None, key: str, room: int, tar_file: int,
        signal_source: SignalSource | None = None,
    ) -> tuple[list[FileSpec], bytes, bool] | RunResult:
        lang = program.lang
        assert lang.compile is not None
        limits = req.limits
        stage = Stage(
            kind="compile",
            argv=program.argv(lang.compile),
            env={**BASE_ENV, "HOME": "/tmp", **lang.env, **lang.compile_env},
            files=program.specs(),
            wall_ms=limits.compile_time_limit_ms,
            cpu_ms=limits.compile_time_limit_ms * 4,  # parallel compilers; wall time bounds it
            memory_mb=limits.compile_memory_mb,
            max_processes=limits.compile_max_processes,
            max_file_kb=max(limits.max_file_size_kb, ARTIFACT_CAP // 1024),
            max_disk_kb=limits.compile_max_disk_kb,
            max_open_files=max(limits.max_open_files, 1024),
            stdout_cap=max(0, min(ARTIFACT_CAP, room + TAR_SLACK)),  # the tar: killed past this
            stderr_cap=COMPILE_OUTPUT_CAP,
            collect=lang.artifacts,
            stdout_file=tar_file,
            signal_source=signal_source,
        )
        sr = self._execute(stage, on_output)
        output = sr.stderr  # the compiler's diagnostics, exactly as written
        if sr.internal_error:
            return RunResult(Outcome.INTERNAL_ERROR, compile_output_bytes=output, message=sr.internal_error)
        problem = None
        if _stopped(sr):
            problem = f"compilation stopped by signal {sr.signal} ({_signal_name(sr.signal or 0)}) on request"
            return RunResult(Outcome.CANCELLED, signal=sr.signal, compile_output_bytes=output, wall_time_ms=sr.wall_ms,
                             cpu_time_ms=sr.cpu_ms, memory_kb=sr.memory_kb, message=problem)
        if sr.killed_for in ("wall", "cpu"):
            problem = f"compilation exceeded its time limit ({limits.compile_time_limit_ms} ms)"
        elif sr.oom:
            problem = f"compilation exceeded its memory limit ({limits.compile_memory_mb} MB)"
        elif sr.killed_for == "output" and sr.stdout_truncated:
            problem = _too_large(limits.max_disk_kb * 1024, limits, over=True)
            output = _with(output, problem)  # the API shows compile_output, not the message
        elif sr.killed_for == "output" or sr.exit_code != 0:
            problem = "compilation failed"
        else:
            try:
                return self.cache.put(key, tar_file, output, room), output, False
            except ArtifactTooLarge as e:
                problem = _too_large(e.size + limits.max_disk_kb * 1024 - room, limits)
                output = _with(output, problem)
            except (tarfile.TarError, ValueError) as e:
                output += f"\ncould not collect the compiled program: {e}\n".encode()
                sr.exit_code = 1
                problem = "compilation failed"
        return RunResult(
            Outcome.COMPILE_ERROR,
            exit_code=sr.exit_code,
            signal=sr.signal,
            compile_output_bytes=output,
            wall_time_ms=sr.wall_ms,
            cpu_time_ms=sr.cpu_ms,
            memory_kb=sr.memory_kb,
            message=problem,
        )

    @staticmethod
    def _to_result(sr: StageResult, limits: SandboxLimits) -> RunResult:
        res = RunResult(
            Outcome.OK,
            exit_code=sr.exit_code,
            signal=sr.signal,
            stdout_bytes=sr.stdout,
            stderr_bytes=sr.stderr,
            stdout_truncated=sr.stdout_truncated,
            stderr_truncated=sr.stderr_truncated,
            wall_time_ms=sr.wall_ms,
            cpu_time_ms=sr.cpu_ms,
            memory_kb=sr.memory_kb,
        )
        if sr.outputs is not None:
            res.files, res.files_truncated = sr.outputs.files, sr.outputs.truncated
        cpu_over = sr.cpu_ms is not None and sr.cpu_ms > limits.cpu_time_ms
        # Precedence: our own kills first, then the OOM killer (a tree that lost a process to
        # it and then hung is reported as MEMORY_LIMIT), then time, then a signal a user sent
        # (a program that handled it and exited on its own reports its own exit), then the
        # program's own exit. A run that used more CPU than cpu_time_ms is over its limit however
        # it ended: with cpu_extra_ms it may end on its own in the extra time, and is still
        # TIME_LIMIT (isolate's and Judge0's rule), with its output and real CPU time.
        if sr.internal_error:
            res.outcome, res.message = Outcome.INTERNAL_ERROR, sr.internal_error
        elif sr.killed_for == "output":
            res.outcome = Outcome.OUTPUT_LIMIT
            res.message = f"output exceeded {limits.max_output_bytes} bytes; program killed"
        elif sr.oom:
            res.outcome = Outcome.MEMORY_LIMIT
            res.message = f"memory over {limits.memory_mb} MB; killed by the OOM killer"
        elif sr.killed_for == "wall":
            res.outcome, res.message = Outcome.TIME_LIMIT, f"wall time over {limits.time_limit_ms} ms"
        elif sr.killed_for == "cpu" or sr.signal == signals.SIGXCPU or cpu_over:
            res.outcome, res.message = Outcome.TIME_LIMIT, f"CPU time over {limits.cpu_time_ms} ms"
        elif _stopped(sr):
            res.outcome = Outcome.CANCELLED
            res.message = f"stopped by signal {sr.signal} ({_signal_name(sr.signal or 0)}) on request"
        elif sr.exit_code != 0 or sr.signal:
            res.outcome = Outcome.RUNTIME_ERROR
            if sr.signal:
                res.message = f"killed by signal {sr.signal} ({_signal_name(sr.signal)})"
        return res


def _warm_startable(lang: Language, program: Program, req: RunRequest) -> bool:
    """Whether the run's program may be started before it comes (warm.py): its language allows it;
    its command line holds nothing of the user's (no arguments, the language's own entry name),
    which a spare's program would carry into the next runs; and it has no file the program reads
    during its start-up (`warm_start_unless`), which a spare's program started without."""
    if not lang.warm_start or req.args or program.entry != lang.source_file:
        return False
    return not any(posixpath.basename(f.path) in lang.warm_start_unless for f in program.files)


def _stopped(sr: StageResult) -> bool:
    """The stage ended by a signal a user sent it (not by a limit of ours, nor the OOM killer)."""
    if sr.killed_for == "signal":
        return True
    return bool(sr.signal) and sr.signal in sr.sent_signals and sr.killed_for is None and not sr.oom


def _with(output: bytes, problem: str) -> bytes:
    note = f"{problem}\n".encode()
    return output + b"\n" + note if output else note


def _too_large(needed: int, limits: SandboxLimits, over: bool = False) -> str:
    """Why a compiled program is refused; `needed`: bytes of the run's tmpfs it and the source take."""
    kb = -(-needed // 1024)
    return (
        f"the compiled program needs {'over ' if over else ''}{needed / MB:.1f} MB ({kb} KB) of disk with its "
        f"source file, more than the run's disk limit of {limits.max_disk_kb / 1024:.1f} MB "
        f"(limit max_disk_kb = {limits.max_disk_kb})"
    )


def _signal_name(num: int) -> str:
    try:
        return signals.Signals(num).name
    except ValueError:
        return "unknown"
