"""LIVECODE_SANDBOX=none: a plain child process with rlimits, an empty environment and capped
output. NO isolation: the program can read and write anything the worker can. Local
development only; every run logs a warning."""

from __future__ import annotations

import contextlib
import glob
import logging
import math
import os
import resource
import shutil
import signal
import subprocess
import tarfile
import tempfile
from pathlib import Path

from .outputs import OUT_DIR, collect
from .runner import Runner, Stage, StageResult
from .supervise import StreamSpec, Watch, supervise
from .types import OutputCallback

log = logging.getLogger(__name__)


class UnsandboxedRunner(Runner):
    def __init__(self, work_root: Path, cache_dir: Path) -> None:
        super().__init__(cache_dir)
        self.work_root = work_root

    def check(self) -> None:
        self.work_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.cache.ensure()
        log.warning("sandbox disabled (LIVECODE_SANDBOX=none): user code runs unisolated")

    def _execute(self, stage: Stage, on_output: OutputCallback | None) -> StageResult:
        log.warning("running user code WITHOUT a sandbox (LIVECODE_SANDBOX=none)")
        self.work_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="run-", dir=self.work_root))
        try:
            return self._in_dir(stage, on_output, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _in_dir(self, stage: Stage, on_output: OutputCallback | None, workdir: Path) -> StageResult:
        for spec in stage.files:  # paths checked by program.resolve: relative, no ".."
            if spec.name.startswith("/"):
                continue  # a cache for the sandbox's own /tmp (fontcache.py): only a speed-up
            target = workdir / spec.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if spec.data is not None:
                target.write_bytes(spec.data)
            else:
                with open(spec.open(), "rb") as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            target.chmod(spec.mode)
        (workdir / "tmp").mkdir(exist_ok=True)
        (workdir / OUT_DIR).mkdir(exist_ok=True)
        env = {**stage.env, "HOME": str(workdir), "TMPDIR": str(workdir / "tmp")}
        for key in ("GOCACHE", "GOPATH", "MPLCONFIGDIR"):
            if key in env:
                env[key] = str(workdir / "tmp" / key.lower())
        limits = [
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_FSIZE, stage.max_file_kb * 1024),
            (resource.RLIMIT_NOFILE, stage.max_open_files),
            (resource.RLIMIT_CPU, math.ceil(stage.cpu_ms / 1000)),
        ]
        if stage.stack_kb is not None:
            limits.append((resource.RLIMIT_STACK, stage.stack_kb * 1024))

        def child_setup() -> None:
            for res, value in limits:
                hard = value + 1 if res == resource.RLIMIT_CPU else value
                resource.setrlimit(res, (value, hard))

        proc = subprocess.Popen(
            stage.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if stage.merge_stderr else subprocess.PIPE,  # 2>&1: one pipe
            env=env,
            cwd=workdir,
            preexec_fn=child_setup,
            start_new_session=True,
        )
        assert proc.stdin and proc.stdout

        def kill_tree() -> None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

        streams = [
            StreamSpec(os.dup(proc.stdout.fileno()), stage.stdout_cap,
                       "stdout" if stage.kind == "run" else "compile"),
        ]  # fmt: skip
        if proc.stderr is not None:  # None when merged into stdout
            streams.append(StreamSpec(os.dup(proc.stderr.fileno()), stage.stderr_cap,
                                      "stderr" if stage.kind == "run" else "compile"))  # fmt: skip
        stdin_fd = os.dup(proc.stdin.fileno())
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()

        def signal_program(sig: int) -> bool:
            try:  # not reaped before supervise() returns: the pid is still the program's
                os.kill(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                return False
            return True

        watch = Watch(proc.pid, kill_tree, stage.wall_ms / 1000, signal_program=signal_program)
        sup = supervise(watch, streams, stdin_fd, stage.stdin, stage.stdin_source, on_output, stage.signal_source)
        proc.returncode = sup.status
        sr = StageResult(
            stdout=bytes(sup.data[0]),
            stderr=bytes(sup.data.get(1, b"")),
            stdout_truncated=sup.truncated[0],
            stderr_truncated=sup.truncated.get(1, False),
            wall_ms=sup.wall_ms,
            cpu_ms=sup.rusage_cpu_ms,
            memory_kb=sup.rusage_maxrss_kb,
            killed_for=sup.killed_for,
            sent_signals=frozenset(sup.sent_signals),
        )
        raw = sup.status or 0
        if os.WIFSIGNALED(raw):
            sr.signal = os.WTERMSIG(raw)
        else:
            sr.exit_code = os.WEXITSTATUS(raw)
        if stage.outputs is not None:  # the process group was killed when the program ended
            work_fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                sr.outputs = collect(work_fd, stage.outputs)
            finally:
                os.close(work_fd)
        if stage.kind == "compile":
            sr.stderr = sr.stdout + sr.stderr
            sr.stdout = b""
            if sr.exit_code == 0 and stage.stdout_file is not None:
                # The same tar stream the sandbox sends back; the runner checks and unpacks it.
                with os.fdopen(os.dup(stage.stdout_file), "wb") as out, tarfile.open(fileobj=out, mode="w") as tf:
                    for pattern in stage.collect:
                        for path in glob.glob(str(workdir / pattern)):
                            p = Path(path)
                            if p.is_file() and not p.is_symlink():
                                tf.add(p, arcname=p.name)
        return sr
