"""The worker's OutputPublisher: output in order, and the run stage's start in its place among it
(after the compiler's output, before the program's), on the in-process bus."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from livecode.streaming import publisher
from livecode.streaming.bus import MemoryEventBus
from livecode.streaming.publisher import OutputPublisher, event_running


def test_the_run_stage_is_an_event_between_the_compilers_output_and_the_programs() -> None:
    bus = MemoryEventBus()
    pub = OutputPublisher(bus, "run-1", interval_s=0.0)
    pub("compile", "warning: x\n")
    pub.run_stage()
    pub("stdout", "hello\n")
    pub.close()
    events = [(kind, data) for _id, kind, data in bus.read("run-1", None, 0)]
    assert events == [
        ("output", {"stream": "compile", "text": "warning: x\n"}),
        ("stage", {"stage": "run"}),
        ("output", {"stream": "stdout", "text": "hello\n"}),
    ]


class GatedBus(MemoryEventBus):
    """Records each round trip (a publish_many call) and holds the first until `gate` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[tuple[str, dict[str, Any]]]] = []
        self.gate = threading.Event()

    def publish_many(self, execution_id: str, events: list[tuple[str, dict[str, Any]]]) -> list[str]:
        if not self.calls:
            self.calls.append(list(events))
            assert self.gate.wait(10)
        else:
            self.calls.append(list(events))
        return super().publish_many(execution_id, events)


def test_running_goes_first_without_the_run_waiting_and_what_piles_up_meanwhile_goes_in_one_round_trip() -> None:
    bus = GatedBus()
    running = event_running(2)
    pub = OutputPublisher(bus, "run-2", interval_s=0.0, first=[running], first_hold_s=0.0)  # returns with the bus stuck
    deadline = time.monotonic() + 10
    while not bus.calls and time.monotonic() < deadline:  # RUNNING is in flight
        time.sleep(0.001)
    pub("stdout", "a\n")
    pub("stderr", "b\n")
    pub("stdout", "c\n")
    pub.close(wait=False)  # the run is over: it does not wait for the bus either
    assert bus.calls == [[running]]
    bus.gate.set()
    pub.close()
    assert bus.calls == [
        [running],
        [
            ("output", {"stream": "stdout", "text": "a\n"}),
            ("output", {"stream": "stderr", "text": "b\n"}),
            ("output", {"stream": "stdout", "text": "c\n"}),
        ],
    ]
    assert [kind for _id, kind, _data in bus.read("run-2", None, 0)] == ["status", "output", "output", "output"]


def test_running_waits_a_moment_for_the_first_output_to_go_with_it_and_no_longer() -> None:
    bus = GatedBus()
    bus.gate.set()
    running = event_running(1)
    pub = OutputPublisher(bus, "run-3", first=[running], first_hold_s=5.0)
    pub("stdout", "hi\n")
    pub.close()
    assert bus.calls == [[running, ("output", {"stream": "stdout", "text": "hi\n"})]]

    quiet = GatedBus()
    quiet.gate.set()
    pub = OutputPublisher(quiet, "run-4", first=[running], first_hold_s=0.05)  # a program silent for long
    deadline = time.monotonic() + 10
    while not quiet.calls and time.monotonic() < deadline:
        time.sleep(0.005)
    assert quiet.calls == [[running]]  # went out alone, without waiting for the run to end
    pub.close()


def test_a_run_that_ends_soon_after_its_first_output_hands_running_and_output_to_the_final_round_trip() -> None:
    bus = GatedBus()
    bus.gate.set()
    running = event_running(1)
    pub = OutputPublisher(bus, "run-5", first=[running], first_hold_s=5.0, end_hold_s=5.0)
    pub("stdout", "hi\n")
    pub.close(wait=False)  # the run ended soon after its first output
    held = pub.close(keep=True)
    assert bus.calls == []  # nothing went out on its own: the caller sends it with the final events
    assert held == [running, ("output", {"stream": "stdout", "text": "hi\n"})]
    pub("stdout", "late\n")  # nothing comes after the end
    assert pub.close(keep=True) == []

    pub = OutputPublisher(bus, "run-6", first=[running], first_hold_s=5.0, end_hold_s=5.0)
    pub("stdout", "hi\n")
    pub.close()  # without keep (the row was not this attempt's to finish): published here, in order
    assert bus.calls == [[running, ("output", {"stream": "stdout", "text": "hi\n"})]]


def test_the_first_output_waits_a_moment_for_the_run_to_end_and_no_longer() -> None:
    bus = GatedBus()
    bus.gate.set()
    running = event_running(1)
    pub = OutputPublisher(bus, "run-7", first=[running], first_hold_s=5.0, end_hold_s=0.05)
    pub("stdout", "hi\n")  # a program that goes on running after its first line
    deadline = time.monotonic() + 10
    while not bus.calls and time.monotonic() < deadline:
        time.sleep(0.005)
    assert bus.calls == [[running, ("output", {"stream": "stdout", "text": "hi\n"})]]
    assert pub.close(keep=True) == []


def _publisher_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "output-publisher")


def test_runs_one_after_another_reuse_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    bus = MemoryEventBus()
    for i in range(3):  # earlier tests' threads, or this one's first, become idle
        OutputPublisher(bus, f"warm-{i}", interval_s=0.0).close()
    started: list[str] = []
    start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self.name)
        start(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    for i in range(20):
        pub = OutputPublisher(bus, f"seq-{i}", interval_s=0.0)
        pub("stdout", f"line {i}\n")
        pub.close()
        assert [d["text"] for _id, _k, d in bus.read(f"seq-{i}", None, 0)] == [f"line {i}\n"]
    assert started == []  # no thread started per run


def test_runs_at_the_same_time_each_have_a_thread() -> None:
    # A publisher holding its first events (a run that is silent for a while) never delays another's
    # output: it holds no thread meanwhile, and each loop has its own thread, started if none is idle.
    bus = MemoryEventBus()
    holders = [OutputPublisher(bus, f"hold-{i}", first=[event_running(1)], first_hold_s=5.0) for i in range(4)]
    pub = OutputPublisher(bus, "live", interval_s=0.0)
    pub("stdout", "now\n")
    deadline = time.monotonic() + 5
    while not bus.read("live", None, 0):
        assert time.monotonic() < deadline, "a publisher waited for another's thread"
        time.sleep(0.01)
    pub.close()
    for h in holders:
        h.close()
    assert [kind for _id, kind, _data in bus.read("hold-0", None, 0)] == ["status"]  # published at close


def test_a_run_that_ends_within_its_hold_wakes_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # The common short run: RUNNING and its output are held, then handed to the final events. No
    # publisher thread is started or woken for it (three wake-ups per run before).
    loops: list[object] = []
    monkeypatch.setattr(publisher._THREADS, "run", lambda fn: loops.append(fn))
    bus = MemoryEventBus()
    running = event_running(1)
    for i in range(5):
        pub = OutputPublisher(bus, f"short-{i}", first=[running], first_hold_s=5.0, end_hold_s=5.0)
        pub("stdout", "hi\n")
        pub.close(wait=False)
        assert pub.close(keep=True) == [running, ("output", {"stream": "stdout", "text": "hi\n"})]
    assert loops == []
    assert bus.read("short-0", None, 0) == []  # nothing went out on its own


def test_holds_that_run_out_start_their_loops_each_in_turn() -> None:
    # Runs that go on past their holds: each one's RUNNING goes out on its own, the earliest first,
    # and their output streams afterwards (a deadline moved earlier by the first output counts).
    bus = GatedBus()
    bus.gate.set()
    running = event_running(1)
    late = OutputPublisher(bus, "late", first=[running], first_hold_s=0.3)
    soon = OutputPublisher(bus, "soon", first=[running], first_hold_s=5.0, end_hold_s=0.05)
    soon("stdout", "a\n")  # its hold now ends 50 ms from here, before `late`'s
    deadline = time.monotonic() + 10
    while len(bus.calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert bus.calls == [[running, ("output", {"stream": "stdout", "text": "a\n"})], [running]]
    soon("stdout", "b\n")
    while len(bus.calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert bus.calls[2] == [("output", {"stream": "stdout", "text": "b\n"})]
    assert soon.close(keep=True) == [] and late.close(keep=True) == []


def test_a_compiled_programs_run_stage_ends_the_hold_as_output_does() -> None:
    # The compiler is done and printed nothing: RUNNING and the stage event go out a moment later,
    # not at the end of the whole hold.
    bus = GatedBus()
    bus.gate.set()
    running = event_running(1)
    pub = OutputPublisher(bus, "compiled", first=[running], first_hold_s=30.0, end_hold_s=0.05)
    pub.run_stage()
    deadline = time.monotonic() + 10
    while not bus.calls and time.monotonic() < deadline:
        time.sleep(0.005)
    assert bus.calls == [[running, ("stage", {"stage": "run"})]]
    assert pub.close(keep=True) == []


def _failing_start_once(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """threading.Thread.start raises once for a thread named `name`, as at the host's thread limit."""
    start = threading.Thread.start
    failed: list[str] = []

    def start_or_fail(self: threading.Thread) -> None:
        if self.name == name and not failed:
            failed.append(name)
            raise RuntimeError("can't start new thread")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", start_or_fail)


def test_a_loop_whose_thread_could_not_start_is_never_run_later(monkeypatch: pytest.MonkeyPatch) -> None:
    # No thread, no loop: nothing is left queued for the next run's thread to pick up (that loop's
    # publisher sends its events at close instead; a second loop for the same run would race it).
    threads = publisher._Threads()
    _failing_start_once(monkeypatch, "output-publisher")
    ran: list[str] = []
    done = threading.Event()
    with pytest.raises(RuntimeError):
        threads.run(lambda: ran.append("orphan"))
    threads.run(lambda: (ran.append("next"), done.set()))
    assert done.wait(5)
    time.sleep(0.05)
    assert ran == ["next"]


def test_holds_go_out_live_after_the_holds_thread_once_failed_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # A failed start of the holds thread is tried again by the next hold: held RUNNING events still
    # go out while their runs go on, not only at their end.
    monkeypatch.setattr(publisher, "_HOLDS", publisher._Holds())
    _failing_start_once(monkeypatch, "output-holds")
    bus = MemoryEventBus()
    running = event_running(1)
    with pytest.raises(RuntimeError):
        OutputPublisher(bus, "unlucky", first=[running], first_hold_s=0.05)
    pub = OutputPublisher(bus, "later", first=[running], first_hold_s=0.05)
    deadline = time.monotonic() + 5
    while not bus.read("later", None, 0):
        assert time.monotonic() < deadline, "the held RUNNING never went out on its own"
        time.sleep(0.01)
    assert [kind for _id, kind, _data in bus.read("later", None, 0)] == ["status"]
    pub.close()
