"""The worker's OutputPublisher: output in order, and the run stage's start in its place among it
(after the compiler's output, before the program's), on the in-process bus."""

from __future__ import annotations

from livecode.streaming.bus import MemoryEventBus
from livecode.streaming.publisher import OutputPublisher


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
