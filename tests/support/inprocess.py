"""The in-process floor: `create_app()` with Flask's test client on SQLite in a temporary folder,
and a recording enqueue instead of a broker. Nothing here starts a process or opens a socket.

The database is migrated once per test process into a template file
(tests/support/embedded.py); each test gets a copy, so a test starts from an empty, fully migrated
database in a few milliseconds.
"""

from __future__ import annotations

import secrets
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from livecode.app import create_app
from livecode.config import Settings, load_settings
from livecode.models import Base
from tests.support.embedded import DB_FILE

SECRET = secrets.token_urlsafe(48)
# Environment the settings must not pick up from the machine running the tests.
FOREIGN_ENV = ("DATABASE_URL", "DATABASE_REPLICA_URL", "REDIS_URL", "SECRET_KEY", "LIVECODE_ENV_FILE")


@dataclass
class RecordingEnqueue:
    """Stands in for the broker: records what would have been queued. With `fail` set it raises,
    as a publish to a Redis that is down does."""

    calls: list[tuple[str, str, str | None]] = field(default_factory=list)
    fail: bool = False
    then: Any = None  # called with the execution id after recording (a stand-in worker)

    def __call__(self, execution_id: uuid.UUID, priority: str, request_id: str | None) -> None:
        if self.fail:
            raise ConnectionError("broker down (test)")
        self.calls.append((str(execution_id), priority, request_id))
        if self.then is not None:
            self.then(execution_id)

    @property
    def ids(self) -> list[str]:
        return [c[0] for c in self.calls]


def clean_env(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    for name in FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("LIVECODE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LIVECODE_SANDBOX", "none")  # nothing runs in this floor
    monkeypatch.setenv("LIVECODE_LOG_LEVEL", "WARNING")
    # Argon2 at its production cost is ~0.1-0.4 s a hash on a busy 2-core machine; these tests
    # check who may do what, not the hash's cost.
    monkeypatch.setenv("LIVECODE_PASSWORD_HASH_MEMORY_KIB", "32")
    monkeypatch.setenv("LIVECODE_PASSWORD_HASH_TIME_COST", "1")


def embedded_settings(data_dir: Path, **overrides: Any) -> Settings:
    return load_settings("embedded", data_dir=data_dir, database_url=f"sqlite:///{data_dir / DB_FILE}",
                         **overrides)


def runtime(app: Flask) -> Any:
    return app.extensions["livecode.runtime"]


class Rows:
    """Direct SQL on the test's database, independent of the code under test."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)

    def count(self, table: str, where: str = "1=1", **params: Any) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}"), params).scalar_one())

    def one(self, table: str, where: str, **params: Any) -> dict[str, Any]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT * FROM {table} WHERE {where}"), params).mappings().all()
        assert len(rows) == 1, f"{len(rows)} rows in {table} where {where} {params}"
        return dict(rows[0])

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table: compare before and after a refused request."""
        out = {}
        with self.engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                rows = conn.execute(sa.select(table)).all()
                out[table.name] = sorted(tuple(map(repr, r)) for r in rows)
        return out


def uid(value: Any) -> str:
    """An id as SQLite stores a SQLAlchemy Uuid column (32 hex digits)."""
    return uuid.UUID(str(value)).hex


@dataclass
class LiveApp:
    app: Flask
    client: FlaskClient
    settings: Settings
    enqueued: RecordingEnqueue
    rows: Rows

    @property
    def rt(self) -> Any:
        return runtime(self.app)

    @property
    def db(self) -> Any:
        return self.rt.db

    # ---- shortcuts for the common requests -------------------------------------------------

    def session(self, source: str = "print('hi')", language: str = "python", **kw: Any) -> dict[str, Any]:
        r = self.client.post("/api/v1/code-sessions", json={"language": language, "source_code": source}, **kw)
        assert r.status_code == 201, r.get_json()
        return r.get_json()  # type: ignore[no-any-return]

    def execute(self, session_id: str, body: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        r = self.client.post(f"/api/v1/executions/session/{session_id}/execute", json=body or {}, **kw)
        assert r.status_code == 202, r.get_json()
        return r.get_json()  # type: ignore[no-any-return]


def make_live_app(template: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> LiveApp:
    clean_env(monkeypatch, data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, data_dir / DB_FILE)
    settings = embedded_settings(data_dir, **overrides)
    enqueued = RecordingEnqueue()
    app = create_app(settings, enqueue=enqueued, run_migrations=False)
    app.config["TESTING"] = True
    return LiveApp(app, app.test_client(), settings, enqueued, Rows(settings.database_url))


def close_live_app(live: LiveApp) -> None:
    live.rows.engine.dispose()
    live.db.dispose()


def error_of(resp: Any) -> dict[str, Any]:
    """The one JSON error shape: {"error": {"code", "message"[, "details"]}}; returns the inner object."""
    body = resp.get_json()
    assert isinstance(body, dict) and set(body) == {"error"}, (resp.status_code, resp.get_data()[:300])
    err = body["error"]
    assert isinstance(err.get("code"), str) and err["code"], err
    assert isinstance(err.get("message"), str) and err["message"], err
    assert set(err) <= {"code", "message", "details"}, err
    return err  # type: ignore[no-any-return]


def expect_error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.get_data()[:500])
    err = error_of(resp)
    if code is not None:
        assert err["code"] == code, err
    return err


def finish_like_a_worker(live: LiveApp, execution_id: Any, status: str = "COMPLETED", **result: Any) -> None:
    """What a worker does with a queued run, through the same service calls: claim it (QUEUED ->
    RUNNING), write its result (RUNNING -> terminal), then publish the final events (status,
    result, end) on the runtime's event bus."""
    from livecode.models import ExecutionStatus
    from livecode.services import executions

    eid = uuid.UUID(str(execution_id))
    claimed = executions.claim_execution(live.db, eid, "test-worker@inprocess")
    assert claimed is not None, f"execution {eid} was not QUEUED"
    result.setdefault("exit_code", 0 if status == "COMPLETED" else 1)
    final = executions.finish_execution_returning(live.db, eid, claimed.attempt, ExecutionStatus(status), **result)
    assert final is not None
    live.rt.events.publish_many(str(eid), [("status", {"status": status}), ("result", final),
                                           ("end", {"status": status})])
