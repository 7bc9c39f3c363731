"""The worker's side of a run's stream: the sandbox's output, coalesced into bus events."""

from __future__ import annotations

import logging
import threading

from .bus import EventBus

log = logging.getLogger(__name__)


class OutputPublisher:
    """The sandbox's on_output callback. It never blocks the sandbox's reader thread on the bus:
    chunks go into a buffer that a background thread publishes. What arrives while a publish is
    in flight or within `interval_s` of the previous one is coalesced into one event, so a
    program writing a byte at a time makes tens of events a second, not thousands, and a run
    stays far below the stream's MAXLEN. The buffer is bounded by the sandbox's output cap.
    """

    def __init__(self, bus: EventBus, execution_id: str, *, interval_s: float = 0.02,
                 max_event_chars: int = 16 * 1024, event_budget: int = 5000) -> None:
        self.bus = bus
        self.execution_id = execution_id
        self.interval_s = interval_s
        self.max_event_chars = max_event_chars
        self.event_budget = event_budget  # past this many events, coalesce over 0.5 s
        self.published = 0
        self._pending: list[list[str]] = []  # [stream, text] in arrival order
        self._cond = threading.Condition()
        self._closed = False
        self._closing = threading.Event()  # ends a coalescing pause early: the run is over
        self._thread = threading.Thread(target=self._loop, name=f"output-{execution_id[:8]}", daemon=True)
        self._thread.start()

    def __call__(self, stream: str, text: str) -> None:
        with self._cond:
            if self._pending and self._pending[-1][0] == stream:
                self._pending[-1][1] += text
            else:
                self._pending.append([stream, text])
            self._cond.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Publish what is buffered and stop; called before the run's final events."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._closing.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                batch, self._pending = self._pending, []
                closed = self._closed
            for stream, text in batch:
                for i in range(0, len(text), self.max_event_chars):
                    self._publish(stream, text[i : i + self.max_event_chars])
            if closed:
                with self._cond:
                    if not self._pending:
                        return
                continue
            # Coalescing window: the first line after a pause goes out at once, a flood in slices.
            self._closing.wait(self.interval_s if self.published < self.event_budget else 0.5)

    def _publish(self, stream: str, text: str) -> None:
        try:
            self.bus.publish(self.execution_id, "output", {"stream": stream, "text": text})
            self.published += 1
        except Exception:  # noqa: BLE001 - streaming is best effort; the stored result is the truth
            log.debug("output publish failed", exc_info=True)
