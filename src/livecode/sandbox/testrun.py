"""Compile once, run many: one program run once per input (an execution's test cases).

The program is prepared once (a compiled language is compiled, or taken from the compile
cache), then each input runs in a fresh sandbox of its own with the request's limits, so that
nothing one run does (a fork left behind, a flood, a full /tmp) reaches the next. Each run's
stdout and stderr are capped at its share of the request's output limit, so the whole stays
within what one run may write. `budget_ms` bounds the wall time of all the runs together: each
run's time limit is cut to what is left of it, and inputs left when it is spent do not run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from .runner import Runner
from .types import Outcome, OutputCallback, RunRequest, RunResult, SignalSource

log = logging.getLogger(__name__)

MIN_RUN_MS = 50  # below this much budget, a run would only measure the sandbox's own start-up


@dataclass(frozen=True)
class RunInput:
    """What differs between the runs: stdin and arguments."""

    stdin: str = ""
    args: tuple[str, ...] = ()


@dataclass
class ManyResult:
    """`prepared` is None when nothing could run: COMPILE_ERROR or INTERNAL_ERROR, with the
    compiler's output, limits and times. `runs` holds one result per input that ran, in order;
    it stops short after a run that ended INTERNAL_ERROR (`internal_error`) or by a signal a user
    sent (`cancelled`), or when the budget was spent (`out_of_budget`)."""

    prepared: RunResult | None = None
    compile_output: bytes = b""
    cached: bool = False
    runs: list[RunResult] = field(default_factory=list)
    internal_error: bool = False
    cancelled: bool = False
    out_of_budget: bool = False
    wall_time_ms: int = 0  # the whole: compile and every run, sandbox set-up included


def output_share(max_output_bytes: int, count: int) -> int:
    """Each run's cap on each of stdout and stderr: its share of the output limit."""
    return max(1, max_output_bytes // max(1, count))


def run_many(
    runner: Runner,
    req: RunRequest,
    inputs: Sequence[RunInput],
    *,
    budget_ms: int | None = None,
    on_output: OutputCallback | None = None,
    on_start: Callable[[int], None] | None = None,
    on_finish: Callable[[int, RunResult], None] | None = None,
    signal_source: SignalSource | None = None,
) -> ManyResult:
    """Prepare `req`'s program once and run it once per input. `on_output` gets the compiler's
    output as it comes (the runs' own output is in their results); `on_start(i)` and
    `on_finish(i, result)` are called around run i, from this thread. `signal_source`: signals a
    user sends, to the compiler or the run in progress (one that ends a run stops them all)."""
    started = time.monotonic()
    out = ManyResult()
    runner.expect(req.limits, len(inputs))  # their sandboxes are built while it compiles (pool.py)
    try:
        prepared = runner.prepare(req, on_output, signal_source)
    except Exception as e:  # the sandbox failed, not the user's program
        log.exception("sandbox prepare failed")
        prepared = RunResult(Outcome.INTERNAL_ERROR, message=f"sandbox failure: {e}")
    if isinstance(prepared, RunResult):
        out.prepared = prepared
        out.compile_output = prepared.compile_output_bytes
        out.internal_error = prepared.outcome == Outcome.INTERNAL_ERROR
        out.cancelled = prepared.outcome == Outcome.CANCELLED
        out.wall_time_ms = _ms_since(started)
        runner.expect(req.limits, 0)  # no run follows: the sandboxes announced are not built
        return out
    out.compile_output, out.cached = prepared.compile_output, prepared.cached
    limits = replace(req.limits, max_output_bytes=output_share(req.limits.max_output_bytes, len(inputs)))
    runs_started = time.monotonic()
    try:
        for index, given in enumerate(inputs):
            time_ms = limits.time_limit_ms
            if budget_ms is not None:
                left = budget_ms - _ms_since(runs_started)
                if left < MIN_RUN_MS:
                    out.out_of_budget = True
                    break
                time_ms = min(time_ms, left)
            if on_start is not None:
                on_start(index)
            one = replace(req, stdin=given.stdin, args=tuple(given.args), limits=replace(limits, time_limit_ms=time_ms))
            # The runs that follow at once, with the same limits: their sandboxes are set up
            # while this one runs.
            result = runner.run_prepared(prepared, one, signal_source=signal_source, ahead=len(inputs) - index - 1)
            out.runs.append(result)
            if on_finish is not None:
                on_finish(index, result)
            if result.outcome == Outcome.INTERNAL_ERROR:
                out.internal_error = True
                break
            if result.outcome == Outcome.CANCELLED:
                out.cancelled = True
                break
    finally:
        prepared.close()
        runner.expect(req.limits, 0)  # stopped short (budget, error, cancel): the sandboxes built ahead go
    out.wall_time_ms = _ms_since(started)
    return out


def _ms_since(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
