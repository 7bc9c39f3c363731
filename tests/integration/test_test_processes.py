"""The suite's own way of starting `livecode` processes (tests/support/forkserver.py): a forked
process must be the console script run with the arguments, environment and output it was given,
as a fresh interpreter would run it, or every integration test would be testing something else."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import base_env
from tests.support.forkserver import ForkedProcess
from tests.support.procs import Process, livecode, run_livecode, start_embedded

FORKED = os.environ.get("LIVECODE_TEST_FORKSERVER", "1") != "0"


def _forked(proc: Process) -> Process:
    """The process, checked to come from the fork server (not a fallback to a fresh interpreter),
    so that these tests compare a forked process with a fresh one."""
    assert isinstance(proc.proc, ForkedProcess) == FORKED, proc.proc
    return proc


def _finished(proc: Process, timeout: float = 30) -> tuple[int, str]:
    code = proc.proc.wait(timeout)
    return code, proc.output()


def _fresh(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(livecode(*args), env=env, capture_output=True, text=True, timeout=60)


def test_a_forked_livecode_process_runs_the_console_script_with_its_own_arguments_and_environment() -> None:
    env = base_env(LIVECODE_WORKER_CONCURRENCY="7")
    proc = _forked(Process(livecode("config", "env-example"), env, "forked"))
    code, out = _finished(proc)
    fresh = _fresh("config", "env-example", env=env)
    assert (code, out) == (fresh.returncode, fresh.stdout + fresh.stderr)
    assert code == 0 and "LIVECODE_WORKER_CONCURRENCY" in out


def test_a_forked_process_exits_with_the_status_a_fresh_one_would() -> None:
    env = base_env(LIVECODE_WORKER_CONCURRENCY="not-a-number")
    bad_setting = _forked(Process(livecode("worker"), env, "forked"))
    code, out = _finished(bad_setting)
    fresh = _fresh("worker", env=env)
    assert code == fresh.returncode != 0
    assert "LIVECODE_WORKER_CONCURRENCY" in out and "LIVECODE_WORKER_CONCURRENCY" in fresh.stderr
    code, out = _finished(_forked(Process(livecode("no-such-command"), env, "forked")))
    assert code == 2 and "invalid choice" in out


def test_a_forked_command_keeps_its_output_and_its_errors_apart_as_subprocess_run_does() -> None:
    env = base_env()
    for args in (("config", "env-example"), ("no-such-command",), ("dlq", "show", "x")):
        forked, fresh = run_livecode(*args, env=env), _fresh(*args, env=env)
        assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert run_livecode("config", "env-example", env=env).stdout.startswith("#")
    with pytest.raises(subprocess.CalledProcessError):
        run_livecode("no-such-command", env=env, check=True)


def test_a_forked_process_is_signalled_and_waited_for_as_a_popen_one(tmp_path: Path) -> None:
    env = base_env(LIVECODE_DATA_DIR=str(tmp_path))
    env.pop("SECRET_KEY")
    proc, _base = start_embedded(env)
    _forked(proc)
    assert proc.alive()
    with pytest.raises(subprocess.TimeoutExpired):
        proc.proc.wait(0.1)
    proc.signal(signal.SIGKILL)
    assert proc.proc.wait(10) == -signal.SIGKILL
    assert proc.proc.poll() == -signal.SIGKILL and not proc.alive()
    proc.signal(signal.SIGTERM)  # an ended process: nothing to signal, nothing raised
