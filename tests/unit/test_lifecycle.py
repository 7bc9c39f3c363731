"""The execution service owns an execution's lifecycle: it publishes QUEUED itself, for a single
run and for every run of a batch, before the id is on the queue (so a follower sees QUEUED before
the worker's RUNNING). In-process: create_app + test_client on SQLite, a recording enqueue."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from livecode.app import create_app
from livecode.runtime import Runtime
from tests.support.embedded import embedded_runtime


@pytest.fixture
def rt(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    with embedded_runtime(tmp_path, monkeypatch) as r:
        yield r


class RecordingEnqueue:
    """Records each queued id with the events its stream held at that moment."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.calls: list[tuple[str, str, list[dict[str, Any]]]] = []

    def __call__(self, execution_id: uuid.UUID, priority: str, request_id: str | None) -> None:
        events = self.rt.events.read(str(execution_id), None, 0)
        self.calls.append((str(execution_id), priority, [{"kind": k, **d} for _, k, d in events]))


@pytest.fixture
def app(rt: Runtime) -> tuple[Flask, RecordingEnqueue]:
    enqueue = RecordingEnqueue(rt)
    return create_app(rt.settings, runtime=rt, enqueue=enqueue, run_migrations=False), enqueue


def _session(client: Any) -> str:
    r = client.post("/api/v1/code-sessions", json={"language": "python", "source_code": "print(1)"})
    assert r.status_code == 201, r.get_data(as_text=True)
    return str(r.get_json()["session_id"])


def test_a_single_run_is_queued_with_its_queued_event(app: tuple[Flask, RecordingEnqueue]) -> None:
    flask_app, enqueue = app
    client = flask_app.test_client()
    r = client.post(f"/api/v1/executions/session/{_session(client)}/execute", json={})
    assert r.status_code == 202, r.get_data(as_text=True)
    eid = r.get_json()["execution_id"]
    assert enqueue.calls == [(eid, "interactive", [{"kind": "status", "status": "QUEUED"}])]


def test_every_run_of_a_batch_gets_its_queued_event_before_it_is_queued(
    app: tuple[Flask, RecordingEnqueue],
) -> None:
    flask_app, enqueue = app
    client = flask_app.test_client()
    sessions = [_session(client) for _ in range(2)]
    r = client.post("/api/v1/executions/batch",
                    json={"executions": [{"session_id": s} for s in [*sessions, sessions[0]]]})
    assert r.status_code == 202, r.get_data(as_text=True)
    ids = [e["execution_id"] for e in r.get_json()["executions"]]
    assert len(set(ids)) == 3
    assert [c[0] for c in enqueue.calls] == ids
    for _eid, priority, events in enqueue.calls:
        assert priority == "batch"
        assert events == [{"kind": "status", "status": "QUEUED"}]


def test_a_refused_batch_publishes_nothing(app: tuple[Flask, RecordingEnqueue], rt: Runtime) -> None:
    flask_app, enqueue = app
    client = flask_app.test_client()
    missing = str(uuid.uuid4())
    r = client.post("/api/v1/executions/batch", json={"executions": [{"session_id": _session(client)},
                                                                      {"session_id": missing}]})
    assert r.status_code == 404, r.get_data(as_text=True)
    assert enqueue.calls == []
