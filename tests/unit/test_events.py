from __future__ import annotations

import json
import threading
import time

from livecode.streaming.bus import MemoryEventBus


def test_memory_bus_replays_after_an_id_in_order() -> None:
    bus = MemoryEventBus()
    ids = [bus.publish("e1", "output", {"text": str(i)}) for i in range(5)]
    assert [d["text"] for _, _, d in bus.read("e1", None, 0)] == ["0", "1", "2", "3", "4"]
    rest = bus.read("e1", ids[2], 0)
    assert [d["text"] for _, _, d in rest] == ["3", "4"]
    assert bus.read("e1", ids[-1], 0) == []
    assert bus.read("other", None, 0) == []


def test_memory_bus_read_blocks_until_an_event_arrives() -> None:
    bus = MemoryEventBus()
    threading.Timer(0.1, lambda: bus.publish("e", "status", {"status": "RUNNING"})).start()
    t0 = time.monotonic()
    events = bus.read("e", None, 5000)
    assert events and events[0][1] == "status"
    assert time.monotonic() - t0 < 4


def test_memory_bus_is_bounded_in_executions() -> None:
    bus = MemoryEventBus(max_executions=3)
    for i in range(5):
        bus.publish(f"e{i}", "status", {})
    assert bus.read("e0", None, 0) == []
    assert bus.read("e4", None, 0) != []


def test_the_end_event_wakes_only_the_waiters_of_that_execution() -> None:
    bus = MemoryEventBus()
    mine, other = bus.watch_finished("a"), bus.watch_finished("b")
    bus.publish("a", "status", {"status": "RUNNING"})
    assert not mine.is_set()
    bus.publish_many("a", [("status", {"status": "COMPLETED"}), ("result", {}), ("end", {"status": "COMPLETED"})])
    assert mine.is_set() and not other.is_set()
    assert [kind for _, kind, _ in bus.read("a", None, 0)] == ["status", "status", "result", "end"]
    bus.unwatch_finished("a", mine)
    bus.unwatch_finished("b", other)
    assert len(bus.finished) == 0


def test_the_end_carries_the_result_to_the_waiters() -> None:
    bus = MemoryEventBus()
    waiter = bus.watch_finished("e1")
    row = {"execution_id": "e1", "status": "COMPLETED", "stdout": "hi\n"}
    bus.publish_many("e1", [("status", {"status": "COMPLETED"}), ("result", row), ("end", {"status": "COMPLETED"})])
    assert waiter.is_set() and waiter.row == row
    other = bus.watch_finished("e2")  # an end published without a result: the waiter reads the row
    bus.publish("e2", "end", {"status": "FAILED"})
    assert other.is_set() and other.row is None


def test_the_finished_notification_carries_only_a_small_result() -> None:
    from livecode.streaming.bus import FINISHED_ROW_MAX, finished_message, parse_finished

    small = {"execution_id": "e1", "status": "COMPLETED", "stdout": "hi\n"}
    events = [("status", {"status": "COMPLETED"}), ("result", small), ("end", {"status": "COMPLETED"})]
    message = finished_message("e1", events, [json.dumps(d) for _, d in events])
    assert parse_finished(message) == ("e1", small)
    big = {**small, "stdout": "x" * FINISHED_ROW_MAX}
    events = [("result", big), ("end", {"status": "COMPLETED"})]
    message = finished_message("e1", events, [json.dumps(d) for _, d in events])
    assert message == "e1" and parse_finished(message) == ("e1", None)
