"""Running a claimed execution that carries test cases: compile once, run once per test, a
verdict for each, events as they go, and the columns of the final write.

The execution is COMPLETED once every test ran, whatever the verdicts; FAILED with COMPILE_ERROR
(every test COMPILE_ERROR) or INTERNAL_ERROR (the tests that ran keep their verdicts, the others
have none); CANCELLED when a signal a user sent (services/cancel.py) ended the compiler or a
test's run (the tests that ran before keep their verdicts, the others have none). All the tests
together get at most LIVECODE_MAX_TIME_LIMIT_MS of wall time (so the reconciler, which takes a
run far past that for lost, never does); tests left when it is spent do not run and are
TIME_LIMIT.
"""

from __future__ import annotations

import logging
from typing import Any

from ..models import ExecutionStatus
from ..runtime import Runtime
from ..sandbox import Outcome, RunInput, RunResult, SandboxLimits, run_many
from ..services import testcases
from ..services.executions import ClaimedRun
from ..streaming.publisher import OutputPublisher, event_test_finished, event_test_started, publish_test_events
from .cache_use import compile_cached
from .internal_error import internal_error_stderr
from .sandbox_runner import get_process_runner

log = logging.getLogger(__name__)


def run_tests_claimed(
    rt: Runtime,
    claimed: ClaimedRun,
    limits: SandboxLimits,
    extra: dict[str, Any],
    on_output: OutputPublisher | None = None,
) -> tuple[ExecutionStatus, dict[str, Any]]:
    """Run every test of `claimed` (its compiler's output to `on_output`, which this closes: the
    test events follow it); the execution's final status and its result columns."""
    eid = str(claimed.execution_id)
    on_output = on_output or OutputPublisher(rt.events, eid)
    tests = [testcases.TestCase.from_json(doc) for doc in claimed.tests or []]
    docs = [t.as_json() for t in tests]
    compare = testcases.comparator(claimed.compare)  # checked when it was submitted
    entries: list[dict[str, Any]] = []
    channel = rt.stdin.run_input(eid, interactive=False)  # the signals a user sends (a Stop)
    # A test's test_finished waits for the next test's test_started (nothing happens between
    # them) and goes out with it: one round trip to the bus per test, not two.
    events: list[tuple[str, dict[str, Any]]] = []

    def started(index: int) -> None:
        if index == 0:
            on_output.close()  # the compiler's output goes out before the first test's events
        events.append(event_test_started(index, tests[index].name))
        flush()

    def finished(index: int, result: RunResult) -> None:
        if result.outcome in (Outcome.INTERNAL_ERROR, Outcome.CANCELLED):
            return  # not the program's doing, or stopped: no verdict
        verdict = testcases.verdict(result.outcome.value, result.stdout_bytes, tests[index].expected_output, compare)
        entries.append(_entry(verdict, result))
        events.append(event_test_finished(testcases.case_view(index, docs[index], entries[-1])))

    def flush() -> None:
        publish_test_events(rt.events, eid, events[:])
        events.clear()

    request = claimed.run_request(limits)
    inputs = [RunInput(t.stdin, tuple(t.args)) for t in tests]
    try:
        many = run_many(
            get_process_runner(rt.settings),
            request,
            inputs,
            budget_ms=rt.settings.max_time_limit_ms,
            on_output=on_output,
            on_start=started,
            on_finish=finished,
            signal_source=channel.signals,
        )
    finally:
        on_output.close()
        flush()  # the last test_finished (or one still waiting when the budget ran out)
        if channel.received_signal:
            rt.stdin.discard(eid)

    runs = many.runs
    cols: dict[str, Any] = {
        "reason": None,
        "stdout": b"",
        "stderr": b"",
        "compile_output": many.compile_output,
        "execution_time_ms": many.wall_time_ms,
        "cpu_time_ms": _total([r.cpu_time_ms for r in runs]),
        "memory_kb": max((r.memory_kb for r in runs if r.memory_kb is not None), default=None),
    }
    status = ExecutionStatus.COMPLETED
    failed = many.prepared
    if failed is not None and failed.outcome == Outcome.COMPILE_ERROR:
        status, cols["reason"] = ExecutionStatus.FAILED, "COMPILE_ERROR"
        cols.update(
            exit_code=failed.exit_code, signal=failed.signal, cpu_time_ms=failed.cpu_time_ms, memory_kb=failed.memory_kb
        )
        entries = [_entry(testcases.COMPILE_ERROR) for _ in tests]
        events.extend(event_test_finished(testcases.case_view(i, docs[i], entries[i])) for i in range(len(tests)))
    elif many.cancelled:
        status, cols["reason"] = ExecutionStatus.CANCELLED, "CANCELLED"
        cols["signal"] = (failed or runs[-1]).signal
    elif many.internal_error:
        status, cols["reason"] = ExecutionStatus.FAILED, "INTERNAL_ERROR"
        cols["stderr"] = internal_error_stderr(failed or runs[-1], extra)
    elif many.out_of_budget:
        skipped = range(len(entries), len(tests))
        entries += [_entry("TIME_LIMIT") for _ in skipped]
        log.info("tests' time budget spent; %d tests not run", len(skipped), extra=extra)
        events.extend(event_test_finished(testcases.case_view(i, docs[i], entries[i])) for i in skipped)
    flush()
    cols["test_results"] = entries
    cached = failed.cached if failed is not None else many.cached
    cols["compile_cached"] = compile_cached(claimed.language, cached, many.internal_error)
    return status, cols


def _entry(verdict: str, result: RunResult | None = None) -> dict[str, Any]:
    r = result or RunResult(Outcome.OK)
    return testcases.result_entry(
        verdict,
        r.stdout_bytes,
        r.stderr_bytes,
        exit_code=r.exit_code,
        signal=r.signal,
        execution_time_ms=r.wall_time_ms if result else None,
        cpu_time_ms=r.cpu_time_ms,
        memory_kb=r.memory_kb,
        truncated=r.stdout_truncated or r.stderr_truncated,
    )


def _total(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None
