"""The API queues a run without Celery's producer (worker/celery_app.py, `task_message`): what it
puts on the Redis list must be the message `send_task` puts there, so a stock Celery worker takes
it as before (every distributed suite's run goes through it), and it goes in the same round trip
as the run's QUEUED event, after it. Real Redis."""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from livecode.config import Settings, load_settings
from livecode.services.executions import queue_runs
from livecode.streaming.bus import RedisEventBus
from livecode.worker.celery_app import RedisEnqueue, celery, configure_celery, enqueue_execution


@pytest.fixture
def settings(redis_base_url: str) -> Iterator[Settings]:
    """Queues of this test's own: the session's shared workers consume the default ones."""
    previous = celery.conf.get("livecode_settings")
    tag = uuid.uuid4().hex[:8]
    mine = dataclasses.replace(load_settings("embedded"), redis_url=redis_base_url,
                               queue_high=f"test-high-{tag}", queue_low=f"test-low-{tag}")
    configure_celery(mine)
    yield mine
    redis.Redis.from_url(redis_base_url).delete(mine.queue_high, mine.queue_low)
    if previous is not None:
        configure_celery(previous)


@pytest.fixture
def client(settings: Settings, redis_base_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_base_url)


def _messages(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The queue's messages in the order a worker takes them (kombu pushes left, pops right)."""
    return [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]  # type: ignore[union-attr]


def _comparable(message: dict[str, Any], execution_id: str) -> dict[str, Any]:
    """The message with the execution id as a placeholder, its body decoded, and what differs on
    every publish by design (the delivery tag, a fresh uuid) left out."""
    text = json.dumps(message).replace(execution_id, "<id>")
    out = json.loads(text)
    out["body"] = json.loads(base64.b64decode(message["body"]).decode().replace(execution_id, "<id>"))
    del out["properties"]["delivery_tag"]
    return out  # type: ignore[no-any-return]


@pytest.mark.parametrize("priority", ["interactive", "batch"])
def test_the_apis_message_is_the_one_send_task_sends(client: redis.Redis, settings: Settings, priority: str) -> None:
    queue = settings.queue_low if priority == "batch" else settings.queue_high
    by_celery, by_api = uuid.uuid4(), uuid.uuid4()
    enqueue_execution(by_celery, priority, "req-1")
    RedisEnqueue(client)(by_api, priority, "req-1")
    sent = _messages(client, queue)
    assert len(sent) == 2, sent
    assert sent[1]["headers"]["id"] == sent[1]["properties"]["correlation_id"] == str(by_api)
    assert sent[1]["headers"]["task"] == "livecode.execute"
    assert sent[1]["headers"]["request_id"] == "req-1"
    assert json.loads(base64.b64decode(sent[1]["body"]))[0] == [str(by_api)]
    assert _comparable(sent[1], str(by_api)) == _comparable(sent[0], str(by_celery))
    assert sent[0]["properties"]["delivery_tag"] != sent[1]["properties"]["delivery_tag"]


def _command_names(packed: bytes) -> list[str]:
    """The names of the commands in Redis's protocol (arrays of bulk strings), in order."""
    names, i = [], 0
    while i < len(packed):
        end = packed.index(b"\r\n", i)
        count, i = int(packed[i + 1:end]), end + 2
        for n in range(count):
            end = packed.index(b"\r\n", i)
            size = int(packed[i + 1:end])
            if n == 0:
                names.append(packed[end + 2:end + 2 + size].decode())
            i = end + 2 + size + 2
    return names


def test_queued_events_and_messages_go_in_one_round_trip_events_first(
    client: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bus = RedisEventBus(client)
    seen: list[list[str]] = []
    real = redis.connection.Connection.send_packed_command

    def send_packed_command(conn: Any, packed: Any, check_health: bool = True) -> Any:  # one write's commands
        seen.append(_command_names(b"".join([packed] if isinstance(packed, bytes) else packed)))
        return real(conn, packed, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", send_packed_command)
    ids = [uuid.uuid4(), uuid.uuid4()]
    queue_runs(bus, RedisEnqueue(client), ids, "batch", None)
    # (a new connection's hand-shake, HELLO and CLIENT SETINFO, goes in writes of its own)
    ours = [w for w in seen if {"XADD", "EXPIRE", "LPUSH"} & set(w)]
    assert ours == [["XADD", "EXPIRE", "XADD", "EXPIRE", "LPUSH", "LPUSH"]]
    assert [m["headers"]["id"] for m in _messages(client, settings.queue_low)] == [str(i) for i in ids]
    for eid in ids:
        assert [(k, d) for _, k, d in bus.read(str(eid), None, 0)] == [("status", {"status": "QUEUED"})]


def test_a_failed_round_trip_queues_nothing_and_is_logged(
    client: redis.Redis, caplog: pytest.LogCaptureFixture,
) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)  # nothing listens there
    queue_runs(RedisEventBus(dead), RedisEnqueue(dead), [uuid.uuid4()], "interactive", None)
    assert any("the reconciler will queue them" in r.getMessage() for r in caplog.records)
