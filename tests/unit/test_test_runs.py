"""The worker's side of test cases (worker/test_runs.py), in-process on the embedded runtime with
the development runner (LIVECODE_SANDBOX=none; the real sandbox's side is
tests/sandbox/test_testcases.py): verdicts, the final status and columns, the events in order, the
time budget, a compile error and a sandbox failure."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from livecode.models import ExecutionStatus
from livecode.runtime import Runtime
from livecode.sandbox import Runner, SandboxLimits, get_runner
from livecode.services.executions import ClaimedRun
from livecode.worker import test_runs
from tests.support.embedded import embedded_runtime

LIMITS = SandboxLimits(time_limit_ms=5000, cpu_time_ms=5000)
SUM = "import sys\na, b = map(int, input().split())\nif a < 0: sys.exit(4)\nprint(a + b)\n"


@pytest.fixture(scope="module")
def dev_runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    base = tmp_path_factory.mktemp("dev")
    r = get_runner("none", work_root=str(base / "work"), cache_dir=str(base / "cache"))
    r.check()
    return r


@pytest.fixture
def rt(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dev_runner: Runner
) -> Iterator[Runtime]:
    """The time budget of all the tests of one run (LIVECODE_MAX_TIME_LIMIT_MS): roomy, so that a
    loaded machine does not turn verdicts into TIME_LIMIT, unless a test asks for a tight one."""
    monkeypatch.setattr(test_runs, "get_process_runner", lambda _settings: dev_runner)
    with embedded_runtime(tmp_path, monkeypatch, max_time_limit_ms=getattr(request, "param", 20000)) as r:
        yield r


def claimed(source: str, tests: list[dict[str, Any]], language: str = "python", compare: str | None = None) -> Any:
    docs = [{"name": None, "args": [], "expected_output": None, **t} for t in tests]
    return ClaimedRun(uuid.uuid4(), 1, language, source, "", [], {}, None, False, docs, compare)


def events(rt: Runtime, run: ClaimedRun) -> list[tuple[str, dict[str, Any]]]:
    return [(kind, data) for _, kind, data in rt.events.read(str(run.execution_id), None, 0, count=1000)]


def verdicts(cols: dict[str, Any]) -> list[str]:
    return [r["verdict"] for r in cols["test_results"]]


def test_every_test_gets_a_verdict_and_its_events(rt: Runtime) -> None:
    run = claimed(
        SUM,
        [
            {"stdin": "1 2", "expected_output": "3", "name": "ok"},
            {"stdin": "1 1", "expected_output": "3"},
            {"stdin": "-1 0"},
            {"stdin": "5 5"},
        ],
    )
    status, cols = test_runs.run_tests_claimed(rt, run, LIMITS, {})
    assert status == ExecutionStatus.COMPLETED and cols["reason"] is None
    assert verdicts(cols) == ["ACCEPTED", "WRONG_ANSWER", "RUNTIME_ERROR", "ACCEPTED"]
    assert base64.b64decode(cols["test_results"][1]["stdout"]) == b"2\n"
    assert cols["test_results"][2]["exit_code"] == 4
    assert (cols["stdout"], cols["stderr"]) == (b"", b"")
    assert cols["execution_time_ms"] >= sum(r["execution_time_ms"] for r in cols["test_results"])
    seen = events(rt, run)
    assert [(k, d["index"]) for k, d in seen] == [(k, i) for i in range(4) for k in ("test_started", "test_finished")]
    assert seen[0][1] == {"index": 0, "name": "ok"}
    assert seen[1][1]["verdict"] == "ACCEPTED" and seen[1][1]["stdout"] == "3\n"


def test_the_compare_mode_decides(rt: Runtime) -> None:
    run = claimed("print('1.0000001  2')", [{"stdin": "", "expected_output": "1 2"}], compare="float:1e-6")
    assert verdicts(test_runs.run_tests_claimed(rt, run, LIMITS, {})[1]) == ["ACCEPTED"]
    run = claimed("print('1.0000001  2')", [{"stdin": "", "expected_output": "1 2"}], compare="tokens")
    assert verdicts(test_runs.run_tests_claimed(rt, run, LIMITS, {})[1]) == ["WRONG_ANSWER"]


@pytest.mark.parametrize("rt", [2000], indirect=True)
def test_tests_left_when_the_time_budget_is_spent_are_time_limit(rt: Runtime) -> None:
    # LIVECODE_MAX_TIME_LIMIT_MS=2000 here: the first test ends well within it even on a loaded
    # machine (with a 1 s budget and a 0.6 s sleep, its Python start under load spent the rest
    # before the second test could start), and the second's sleep outlasts what is left.
    program = "import time\ntime.sleep(float(input()))\nprint('done')"
    run = claimed(program, [{"stdin": "0"}, {"stdin": "3"}, {"stdin": "0"}])
    status, cols = test_runs.run_tests_claimed(rt, run, LIMITS, {})
    assert status == ExecutionStatus.COMPLETED
    assert verdicts(cols)[1:] == ["TIME_LIMIT", "TIME_LIMIT"]
    assert cols["test_results"][2]["execution_time_ms"] is None  # never started
    finished = [d for k, d in events(rt, run) if k == "test_finished"]
    assert [d["index"] for d in finished] == [0, 1, 2] and finished[2]["verdict"] == "TIME_LIMIT"
    assert len([k for k, _ in events(rt, run) if k == "test_started"]) == 2


def test_a_compile_error_ends_every_test(rt: Runtime) -> None:
    run = claimed("int main(void) { return nope; }\n", [{"stdin": "1"}, {"stdin": "2"}], language="c")
    status, cols = test_runs.run_tests_claimed(rt, run, LIMITS, {})
    assert (status, cols["reason"]) == (ExecutionStatus.FAILED, "COMPILE_ERROR")
    assert b"nope" in cols["compile_output"]
    assert verdicts(cols) == ["COMPILE_ERROR", "COMPILE_ERROR"]
    assert [(k, d["verdict"]) for k, d in events(rt, run) if k == "test_finished"] == [
        ("test_finished", "COMPILE_ERROR")
    ] * 2


def test_a_sandbox_failure_is_an_internal_error_with_an_error_id(rt: Runtime) -> None:
    run = claimed("x", [{"stdin": "1"}], language="no-such-language")
    status, cols = test_runs.run_tests_claimed(rt, run, LIMITS, {})
    assert (status, cols["reason"]) == (ExecutionStatus.FAILED, "INTERNAL_ERROR")
    assert b"error id" in cols["stderr"] and b"no-such-language" not in cols["stderr"]  # details only in the log
    assert cols["test_results"] == []


def test_a_signal_stops_the_test_in_progress_and_the_rest(rt: Runtime) -> None:
    # The second test loops until stopped; the user's SIGTERM is sent once it has started.
    src = "import time\nif input() == 'loop':\n    while True: time.sleep(0.01)\nprint('ok')\n"
    run = claimed(src, [{"stdin": "fast\n"}, {"stdin": "loop\n"}, {"stdin": "fast\n"}])
    eid = str(run.execution_id)

    def stop_the_second() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if ("test_started", {"index": 1, "name": None}) in events(rt, run):
                rt.stdin.signal(eid, 15)
                return
            time.sleep(0.02)

    sender = threading.Thread(target=stop_the_second)
    sender.start()
    status, cols = test_runs.run_tests_claimed(rt, run, LIMITS, {})
    sender.join()
    assert (status, cols["reason"], cols["signal"]) == (ExecutionStatus.CANCELLED, "CANCELLED", 15)
    assert verdicts(cols) == ["ACCEPTED"]  # the stopped test and the one after have none
