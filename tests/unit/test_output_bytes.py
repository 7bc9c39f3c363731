"""Output is bytes (issue 9, item 9), without servers: the migration converts existing rows on
SQLite, the sandbox's result carries the exact bytes, and a sandbox failure shows the user a
generic message and an error id while its details go to the operator's log."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from livecode.sandbox import Outcome, RunResult, SandboxLimits
from livecode.sandbox.runner import Runner, StageResult
from livecode.worker.internal_error import internal_error_stderr
from tests.support.migrations import ANY_BYTES, check_migration_round_trip


def test_migration_converts_existing_rows_on_sqlite(tmp_path: Path) -> None:
    check_migration_round_trip(f"sqlite:///{tmp_path / 'db.sqlite'}")


class _Canned(Runner):
    """A runner whose one stage 'wrote' fixed bytes: checks the mapping to a RunResult only."""

    def __init__(self, tmp: Path, sr: StageResult) -> None:
        super().__init__(tmp / "cache")
        self.sr = sr

    def check(self) -> None:
        pass

    def _execute(self, stage, on_output):  # type: ignore[no-untyped-def]
        return self.sr


def test_the_run_result_carries_the_exact_bytes(tmp_path: Path) -> None:
    from livecode.sandbox import RunRequest

    runner = _Canned(tmp_path, StageResult(exit_code=0, stdout=ANY_BYTES, stderr=ANY_BYTES[::-1]))
    res = runner.run(RunRequest("python", "pass", limits=SandboxLimits()))
    assert res.outcome is Outcome.OK, res
    assert res.stdout_bytes == ANY_BYTES and res.stderr_bytes == ANY_BYTES[::-1]
    assert res.stdout == ANY_BYTES.decode("utf-8", "replace")  # the text view


def test_a_sandbox_failure_shows_a_generic_message_and_an_error_id(caplog: pytest.LogCaptureFixture) -> None:
    detail = "sandbox failure: [Errno 13] Permission denied: '/var/lib/livecode/cache/ab/cd'"
    result = RunResult(Outcome.INTERNAL_ERROR, stderr_bytes=b"the program's own stderr", message=detail)
    with caplog.at_level(logging.ERROR):
        stderr = internal_error_stderr(result, {"execution_id": "x"}).decode()
    assert stderr.startswith("the program's own stderr\n")
    assert "/var" not in stderr and "Errno" not in stderr and "sandbox failure" not in stderr
    found = re.search(r"error id ([0-9a-f]{32})", stderr)
    assert found, stderr
    record = next(r for r in caplog.records if getattr(r, "error_id", None) == found.group(1))
    assert detail in record.getMessage()
