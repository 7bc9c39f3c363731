"""kombu's in-memory transport (the embedded mode's broker), woken by a message instead of
polling for one.

The stock transport's consumer looks at its queues, and finding them empty sleeps for the
polling interval and looks again: every 10 ms (the embedded mode's interval, so that a run starts
soon after it is queued), an idle `livecode serve` spent ~0.75 s of CPU a minute on it. Here a
message put on any queue of this process, or an acknowledgement that frees a consumer's prefetch
slot, wakes the waiting consumer at once, and an idle one
sleeps until a message comes or its timeout (Celery's loop asks for 2 s at a time) runs out. The
queues, the messages and their acknowledgement are the stock transport's.
"""

from __future__ import annotations

import threading
from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import memory

_arrived = threading.Condition()
_generation = 0  # messages put so far (in this process): a consumer waits only if none came since it looked
IDLE_WAIT_S = 1.0  # the longest a consumer asked to wait for ever sleeps before looking again anyway


def _notify() -> None:
    global _generation
    with _arrived:
        _generation += 1
        _arrived.notify_all()


class Channel(memory.Channel):  # type: ignore[misc]
    # A consumer may also wait because it may take no more (acks_late with its prefetch limit
    # reached, every run slot busy): the acknowledgement or rejection that frees a slot wakes it.
    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        _notify()

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue)
        _notify()

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        super()._put(queue, message, **kwargs)
        _notify()

    def _put_fanout(self, exchange: str, message: Any, routing_key: str | None = None, **kwargs: Any) -> None:
        super()._put_fanout(exchange, message, routing_key, **kwargs)
        _notify()


class Transport(memory.Transport):  # type: ignore[misc]
    Channel = Channel

    def drain_events(self, connection: Any, timeout: Any = None, **kwargs: Any) -> Any:
        deadline = None if timeout is None else monotonic() + timeout
        cycle: Any = self.cycle
        while True:
            with _arrived:
                seen = _generation
            try:
                cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            wait = IDLE_WAIT_S if deadline is None else min(IDLE_WAIT_S, deadline - monotonic())
            if wait <= 0:
                raise TimeoutError()  # socket.timeout, which Celery's loop expects
            with _arrived:
                if _generation == seen:
                    _arrived.wait(wait)


TRANSPORT = f"{__name__}:Transport"
