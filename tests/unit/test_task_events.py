"""The execution task's events when a run or its save does not end normally, in process (the
embedded runtime on SQLite, its in-process bus; the sandbox replaced by a stand-in): a run that
raises still publishes what its output publisher held (RUNNING, the output so far); an attempt
whose row turned out to be another's publishes nothing after that attempt's end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import livecode.runtime as runtime_module
from livecode.models import ExecutionStatus
from livecode.runtime import Runtime
from livecode.sandbox import Outcome, RunResult, SandboxUnavailable
from livecode.services import executions as ex
from livecode.services import sessions as ss
from livecode.worker import tasks
from tests.support.embedded import embedded_runtime
from tests.support.inprocess import RecordingEnqueue


@pytest.fixture
def rt(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    with embedded_runtime(tmp_path, monkeypatch) as r:
        monkeypatch.setattr(runtime_module, "_current", r)
        yield r


def queued(rt: Runtime) -> str:
    sid = ss.create_session(rt.db, language="python", source_code="print('hi')", owner_id=None, max_bytes=1000)
    out = ex.submit_execution(rt.db, RecordingEnqueue(), rt.settings, uuid.UUID(sid["session_id"]), owner_id=None,
                              events=rt.events, options=ex.ExecuteOptions())
    return str(out["execution_id"])


def kinds(rt: Runtime, eid: str) -> list[str]:
    return [f"{kind}:{data.get('status', data.get('text', ''))}" for _, kind, data in rt.events.read(eid, None, 0, 100)]


class Runner:
    """Writes a line of output, then raises or returns an ordinary result."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def run(self, request: Any, on_output: Any, **_: Any) -> RunResult:
        on_output("stdout", "hi\n")
        if self.fail:
            raise SandboxUnavailable("the sandbox broke")
        return RunResult(Outcome.OK, exit_code=0, stdout_bytes=b"hi\n")


def test_a_run_that_raises_still_publishes_running_and_its_output(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "get_process_runner", lambda settings: Runner(fail=True))
    eid = queued(rt)
    with pytest.raises(SandboxUnavailable):
        tasks.execute_code_task(eid)
    assert kinds(rt, eid) == ["status:QUEUED", "status:RUNNING", "output:hi\n"]


def test_an_attempt_whose_row_is_another_s_publishes_nothing_after_its_end(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks, "get_process_runner", lambda settings: Runner(fail=False))
    # The final write finds the row no longer this attempt's (another attempt finished it, or it
    # was failed meanwhile): that party published the end.
    monkeypatch.setattr(tasks, "_save", lambda rt, claimed, status, *a: (None, status))
    eid = queued(rt)
    assert tasks.execute_code_task(eid) == ExecutionStatus.COMPLETED.value
    assert kinds(rt, eid) == ["status:QUEUED"]


def test_a_run_that_ends_normally_publishes_everything_in_order(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "get_process_runner", lambda settings: Runner(fail=False))
    eid = queued(rt)
    assert tasks.execute_code_task(eid) == ExecutionStatus.COMPLETED.value
    events = kinds(rt, eid)
    assert events[:3] == ["status:QUEUED", "status:RUNNING", "output:hi\n"]
    assert events[3] == "status:COMPLETED" and events[-1].startswith("end"), events
