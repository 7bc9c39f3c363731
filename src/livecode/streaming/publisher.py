"""What is published about a run, and when: QUEUED (by the execution service, before the id is
queued), RUNNING with the attempt (the worker, once it claimed the row, as the first event of
the run's OutputPublisher), the output (coalesced, from the sandbox's reader thread) and the
final status, result and end (after the row is saved).

Every publish is best effort: a failure is logged and dropped, the stored row stays the truth
(followers make the final events from it).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
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
        """Run `fn` on an idle thread, or on a new one. When no thread can be started (the host's
        limit), it raises and nothing is queued: no item waits without a thread for it."""
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1  # that thread is this one's: every item queued has a thread
        if start:  # started before the item is queued: a failed start leaves nothing behind
            threading.Thread(target=self._serve, name="output-publisher", daemon=True).start()
        self._work.put(fn)

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


class _Holds:
    """One daemon thread that hands a publisher's loop to `_THREADS` when its hold ran out (its
    held RUNNING must go out on its own: the run is still going). A run that ends within its hold
    (most short runs) never wakes a thread of its own: its RUNNING and output go with the final
    events, and before this, its publisher's thread was woken three times per run (its start, the
    first output, the end) to decide nothing. The thread only starts loops (a queue put): a
    publish that hangs on the bus holds up no other run's hold. It is woken for a deadline earlier
    than the one it sleeps until; a hold that ended early is dropped when its time comes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, OutputPublisher]] = []
        self._order = itertools.count()
        self._until: float | None = None  # when the sleeping thread wakes (None: not asleep on a deadline)
        self._asleep = False
        self._thread: threading.Thread | None = None

    def hold(self, publisher: OutputPublisher, deadline: float) -> None:
        with self._cond:
            if self._thread is None:
                thread = threading.Thread(target=self._serve, name="output-holds", daemon=True)
                thread.start()  # a failed start (the host's limit) raises, holding nothing; the next hold tries again
                self._thread = thread
            heapq.heappush(self._heap, (deadline, next(self._order), publisher))
            if self._asleep and (self._until is None or deadline < self._until):
                self._cond.notify()

    def _serve(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due: list[OutputPublisher] = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
                if not due:
                    self._until = self._heap[0][0] if self._heap else None
                    self._asleep = True
                    self._cond.wait(None if self._until is None else self._until - now)
                    self._asleep = False
                    continue
            for publisher in due:
                try:
                    publisher._hold_over()
                except Exception:  # noqa: BLE001 - one publisher's failure must not stop the others'
                    log.exception("output publisher failed")


_HOLDS = _Holds()


def _after_fork_in_child() -> None:
    # A forked child has none of the parent's threads: fresh pools, or loops would wait forever.
    global _THREADS, _HOLDS
    _THREADS, _HOLDS = _Threads(), _Holds()


os.register_at_fork(after_in_child=_after_fork_in_child)


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
    one round trip per run instead of two. While they are held, no thread runs for this
    publisher (`_HOLDS` starts its loop if the hold runs out before the run ends).
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
        # While `first` is held no loop runs: `_HOLDS` starts it when the hold runs out (then
        # `_started`); a run that ends before never had one.
        self._started = not (self._held and first_hold_s > 0)
        self._start = time.monotonic()
        self._deadline = self._start + first_hold_s  # when the hold runs out (earlier once output came)
        self._output_came = False
        if self._started:
            _THREADS.run(self._run)
        else:
            _HOLDS.hold(self, self._deadline)

    def __call__(self, stream: str, text: str) -> None:
        with self._cond:
            if self._closed:  # nothing is published after the end (the thread is gone)
                return
            if self._pending and self._pending[-1][0] == stream:
                self._pending[-1][1] += text
            else:
                self._pending.append([stream, text])
            sooner = self._came()
        if sooner is not None:
            _HOLDS.hold(self, sooner)

    def _came(self) -> float | None:
        """Something to publish came (with self._cond held): the running loop is told; a held
        publisher's first output (or stage) makes the held events wait only a moment more for
        the run's end (to go with the final events), within first_hold_s of the start: the new
        deadline, for `_HOLDS`."""
        if self._started:
            self._cond.notify()
            return None
        if self._output_came:
            return None
        self._output_came = True
        self._deadline = min(self._deadline, time.monotonic() + self.end_hold_s)
        return self._deadline

    def _hold_over(self) -> None:
        """From `_HOLDS`: the hold ran out (its latest deadline) while the run goes on; the loop
        starts and sends what was held."""
        with self._cond:
            if self._started or self._closed or time.monotonic() < self._deadline:
                return  # the run ended first, or an earlier deadline already started it
            self._started = True
        try:
            _THREADS.run(self._run)
        except BaseException:  # no thread for it (the host's limit): close() sends what is held
            with self._cond:
                self._started = False
            raise

    def run_stage(self) -> None:
        """The compiled program's run stage starts: a "stage" {"stage": "run"} event, after the
        compiler's output and before the program's."""
        with self._cond:
            if self._closed:
                return
            self._pending.append([_STAGE, "run"])
            sooner = self._came()
        if sooner is not None:
            _HOLDS.hold(self, sooner)

    def close(self, timeout: float = 10.0, wait: bool = True, keep: bool = False) -> list[EventSpec]:
        """Stop: no more output comes. wait=False only says so (the thread stops without waiting
        for the caller); close() then waits for the thread and publishes what it had not sent
        yet (a short run's held RUNNING and output, the last output), or with `keep` returns it
        for the caller to publish with the run's final events, in one round trip."""
        with self._cond:
            self._closed = True
            started = self._started  # no loop starts once closed (_hold_over)
            if started:
                self._cond.notify()
        self._closing.set()
        if not wait:
            return []
        if started:
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
        # Started at once (nothing held, or an interactive run's RUNNING) or once the hold ran out.
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
