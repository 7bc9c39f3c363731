"""What is published about a run, and when: QUEUED (by the execution service, before the id is
queued), RUNNING with the attempt (the worker, once it claimed the row, as the first event of
the run's OutputPublisher), the output (coalesced, from the sandbox's reader thread) and the
final status, result and end (after the row is saved).

Every publish is best effort: a failure is logged and dropped, the stored row stays the truth
(followers make the final events from it).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..models import ExecutionStatus
from .bus import EventBus

EventSpec = tuple[str, dict[str, Any]]  # (kind, data), as publish_many takes them
log = logging.getLogger(__name__)


def _best_effort(
    publish: Callable[[], object], what: str, execution_id: str | None = None, level: int = logging.DEBUG
) -> None:
    try:
        publish()
    except Exception:  # noqa: BLE001 - streaming is best effort; the row is the truth
        log.log(level, "could not publish %s", what, extra={"execution_id": execution_id}, exc_info=True)


def event_queued() -> EventSpec:
    """QUEUED: a new execution waits for a worker."""
    return "status", {"status": ExecutionStatus.QUEUED.value}


def publish_queued(bus: EventBus, execution_ids: list[str]) -> None:
    """QUEUED for new executions (one, or a batch), in one round trip."""
    _best_effort(
        lambda: bus.publish_each(execution_ids, *event_queued()),
        "QUEUED",
        execution_ids[0] if len(execution_ids) == 1 else None,
        logging.WARNING,
    )


def event_running(attempt: int) -> tuple[str, dict[str, Any]]:
    """RUNNING: a worker claimed the run. attempt > 1: it started over; clients drop the output so
    far. The run's OutputPublisher sends it first (`first=`), so the run does not wait for it."""
    return "status", {"status": ExecutionStatus.RUNNING.value, "attempt": attempt}


def publish_finished(
    bus: EventBus, execution_id: str, status: str, row: dict[str, Any], before: Sequence[EventSpec] = ()
) -> None:
    """The final status, the result (the row as GET returns it) and end, in one round trip, after
    `before` (what the run's OutputPublisher still held: a short run's RUNNING and output)."""
    _best_effort(
        lambda: bus.publish_many(
            execution_id,
            [
                *before,
                ("status", {"status": status}),
                ("result", row),
                ("end", {"status": status}),
            ],
        ),
        "the final events",
        execution_id,
    )


def event_test_started(index: int, name: str | None) -> tuple[str, dict[str, Any]]:
    """test_started {index, name}: test case `index` is about to run."""
    return "test_started", {"index": index, "name": name}


def event_test_finished(result: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """test_finished: a test case's result as GET returns it, verdict included."""
    return "test_finished", result


def publish_test_events(bus: EventBus, execution_id: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Test-case events in order, in one round trip: a test's test_finished goes with the next
    one's test_started (one round trip per test); a compile error's are all sent at once."""
    if events:
        _best_effort(lambda: bus.publish_many(execution_id, events), "test events", execution_id)


_STAGE = "\0stage"  # a marker among the pending output: a "stage" event, in its place in the order
_EVENT = "\0event"  # a whole event among the pending output (the RUNNING status given as `first`)
FIRST_HOLD_S = 0.1  # how long `first` waits for the first output to go with it: less than a person notices
# How long `first` and the first output then wait for the run's end, to go with its final events
# (within FIRST_HOLD_S of the start). A hello world ends 12 ms after its output (median; p90 25 ms,
# at load average 11: bench_worker_sections).
END_HOLD_S = 0.05


class _Threads:
    """Daemon threads that run publishers' loops, each reused for the next run once its loop
    ended: starting a thread per run cost the task ~0.3 ms of CPU, and ~1 ms of its wall time
    on a loaded machine (Thread.start waits until the new thread has run). A loop never waits
    for a thread: with none idle, a new one starts (as many as runs publish at once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = 0
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def run(self, fn: Callable[[], None]) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1  # that thread is this one's: every item queued has a thread
        self._work.put(fn)
        if start:
            threading.Thread(target=self._serve, name="output-publisher", daemon=True).start()

    def _serve(self) -> None:
        while True:
            fn = self._work.get()
            try:
                fn()
            except Exception:  # noqa: BLE001 - a loop's own failure must not take the thread
                log.exception("output publisher failed")
            with self._lock:
                self._idle += 1


_THREADS = _Threads()


class OutputPublisher:
    """The sandbox's on_output callback. It never blocks the sandbox's reader thread on the bus:
    chunks go into a buffer that a background thread publishes. What arrives while a publish is
    in flight or within `interval_s` of the previous one is coalesced into one event, so a
    program writing a byte at a time makes tens of events a second, not thousands, and a run
    stays far below the stream's MAXLEN. The buffer is bounded by the sandbox's output cap.
    Whatever is pending goes out in one round trip (`publish_many`). `first`: events published
    before any output (the run's RUNNING status), from the same thread, so neither the claim
    nor the sandbox's start waits for the bus; they wait up to `first_hold_s` for the first
    output or the run's end to go with them: a short run's RUNNING and output in one round trip,
    not two; and once the first output came, they wait up to `end_hold_s` more for the run's
    end, so that a run that ends at once sends them with its final events (`close(keep=True)`):
    one round trip per run instead of two.
    """

    def __init__(
        self,
        bus: EventBus,
        execution_id: str,
        *,
        interval_s: float = 0.02,
        max_event_chars: int = 16 * 1024,
        event_budget: int = 5000,
        first: Sequence[tuple[str, dict[str, Any]]] = (),
        first_hold_s: float = FIRST_HOLD_S,
        end_hold_s: float = END_HOLD_S,
    ) -> None:
        self.bus = bus
        self.execution_id = execution_id
        self.interval_s = interval_s
        self.max_event_chars = max_event_chars
        self.event_budget = event_budget  # past this many events, coalesce over 0.5 s
        self.first_hold_s = first_hold_s
        self.end_hold_s = end_hold_s
        self.published = 0
        # [stream, text] in arrival order; [_STAGE, "run"] and [_EVENT, (kind, data)] among them
        self._pending: list[list[Any]] = [[_EVENT, event] for event in first]
        self._held = len(self._pending)  # the `first` events (counted now: the loop may start after output)
        self._cond = threading.Condition()
        self._closed = False
        self._closing = threading.Event()  # ends a coalescing pause early: the run is over
        self._done = threading.Event()  # the loop has returned
        _THREADS.run(self._run)

    def __call__(self, stream: str, text: str) -> None:
        with self._cond:
            if self._closed:  # nothing is published after the end (the thread is gone)
                return
            if self._pending and self._pending[-1][0] == stream:
                self._pending[-1][1] += text
            else:
                self._pending.append([stream, text])
            self._cond.notify()

    def run_stage(self) -> None:
        """The compiled program's run stage starts: a "stage" {"stage": "run"} event, after the
        compiler's output and before the program's."""
        with self._cond:
            if self._closed:
                return
            self._pending.append([_STAGE, "run"])
            self._cond.notify()

    def close(self, timeout: float = 10.0, wait: bool = True, keep: bool = False) -> list[EventSpec]:
        """Stop: no more output comes. wait=False only says so (the thread stops without waiting
        for the caller); close() then waits for the thread and publishes what it had not sent
        yet (a short run's held RUNNING and output, the last output), or with `keep` returns it
        for the caller to publish with the run's final events, in one round trip."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._closing.set()
        if not wait:
            return []
        self._done.wait(timeout)
        with self._cond:
            batch, self._pending = self._pending, []
        events = self._events(batch)
        if keep:
            return events
        self._publish(events)
        return []

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._done.set()

    def _loop(self) -> None:
        held = self._held
        if held and self.first_hold_s > 0:
            start = time.monotonic()
            with self._cond:
                self._cond.wait_for(lambda: self._closed or len(self._pending) > held, self.first_hold_s)
                # The first output came: a moment more for the run's end, to go with the final events.
                left = self.first_hold_s - (time.monotonic() - start)
                if not self._closed and left > 0:
                    self._cond.wait_for(lambda: self._closed, min(self.end_hold_s, left))
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return  # what is left goes out with close()
                batch, self._pending = self._pending, []
            self._publish(self._events(batch))
            # Coalescing window: the first line after a pause goes out at once, a flood in slices.
            self._closing.wait(self.interval_s if self.published < self.event_budget else 0.5)

    def _events(self, batch: list[list[Any]]) -> list[EventSpec]:
        events: list[EventSpec] = []
        for stream, payload in batch:
            if stream == _EVENT:
                events.append(payload)
            elif stream == _STAGE:
                events.append(("stage", {"stage": payload}))
            else:
                events.extend(
                    ("output", {"stream": stream, "text": payload[i : i + self.max_event_chars]})
                    for i in range(0, len(payload), self.max_event_chars)
                )
        return events

    def _publish(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        if not events:
            return
        try:
            self.bus.publish_many(self.execution_id, events)
            self.published += len(events)
        except Exception:  # noqa: BLE001 - streaming is best effort; the stored result is the truth
            log.debug("output publish failed", exc_info=True)
