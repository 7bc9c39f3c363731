"""The embedded mode's broker (worker/memory_transport.py): a message wakes the waiting consumer
at once, and an idle consumer does not poll."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue

from livecode.worker.memory_transport import TRANSPORT, Transport


@pytest.fixture
def queue() -> Queue:
    name = f"q-{uuid.uuid4().hex}"
    return Queue(name, Exchange(name), routing_key=name)


def _consumer(conn: Connection, queue: Queue, got: list[Any]) -> Any:
    return conn.Consumer(queue, callbacks=[lambda body, message: (got.append(body), message.ack())])


def test_a_message_put_meanwhile_wakes_the_consumer_long_before_its_timeout(queue: Queue) -> None:
    got: list[Any] = []
    with Connection("memory://", transport=TRANSPORT) as conn, _consumer(conn, queue, got):
        def publish() -> None:
            time.sleep(0.3)
            with Connection("memory://", transport=TRANSPORT) as other:
                other.Producer().publish({"n": 1}, exchange=queue.exchange, routing_key=queue.routing_key,
                                         declare=[queue])

        threading.Thread(target=publish).start()
        started = time.monotonic()
        conn.drain_events(timeout=60)
        assert got == [{"n": 1}]
        assert time.monotonic() - started < 30  # woken by the message, not by the timeout


def test_an_idle_consumer_sleeps_instead_of_polling(queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    looks = []
    # polling_interval: what the embedded mode set with the stock transport, to start runs soon
    with Connection("memory://", transport=TRANSPORT, transport_options={"polling_interval": 0.01}) as conn, \
            _consumer(conn, queue, []):
        transport = conn.transport
        assert isinstance(transport, Transport)
        real_get = transport.cycle.get

        def counting_get(*args: Any, **kwargs: Any) -> Any:
            looks.append(1)
            return real_get(*args, **kwargs)

        monkeypatch.setattr(transport.cycle, "get", counting_get)
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=1.5)
    # the stock transport looks every polling interval (10 ms in the embedded mode: ~150 looks)
    assert len(looks) <= 3, len(looks)


def test_a_message_already_queued_is_delivered_without_waiting(queue: Queue) -> None:
    got: list[Any] = []
    with Connection("memory://", transport=TRANSPORT) as conn:
        conn.Producer().publish({"n": 2}, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue])
        with _consumer(conn, queue, got):
            conn.drain_events(timeout=60)
    assert got == [{"n": 2}]


def test_an_acknowledgement_that_frees_the_prefetch_slot_wakes_the_consumer(
        queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded worker acknowledges late with a prefetch of one per slot: with every slot busy
    it may take nothing more, and the acknowledgement of a finished run must let it take the next
    message at once, not after its idle wait."""
    import livecode.worker.memory_transport as mt

    monkeypatch.setattr(mt, "IDLE_WAIT_S", 60.0)
    got: list[Any] = []
    held: list[Any] = []
    with Connection("memory://", transport=TRANSPORT) as conn:
        for n in (1, 2):
            conn.Producer().publish({"n": n}, exchange=queue.exchange, routing_key=queue.routing_key,
                                    declare=[queue])
        with conn.Consumer(queue, callbacks=[lambda body, message: (got.append(body), held.append(message))],
                           prefetch_count=1):
            conn.drain_events(timeout=60)
            assert got == [{"n": 1}]
            threading.Timer(0.2, held[0].ack).start()  # the run ends on another thread
            started = time.monotonic()
            conn.drain_events(timeout=60)
            assert got == [{"n": 1}, {"n": 2}]
            assert time.monotonic() - started < 30  # woken by the ack, not by the 60 s wait
