"""The API's answer to a bug (issue 9, item 10): one JSON error shape, code INTERNAL_ERROR, a
generic message and an error id; the traceback and the SQL only in the operator's log line with
the same id, and the statement's parameters not even there. In-process: create_app on SQLite."""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from livecode.app import create_app
from livecode.config import load_settings
from livecode.runtime import Runtime, build_runtime
from tests.support.embedded import embedded_runtime

SECRET = "parameter-value-" + uuid.uuid4().hex


@pytest.fixture
def rt(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    with embedded_runtime(tmp_path, monkeypatch) as r:
        yield r


@pytest.fixture
def app(rt: Runtime) -> Flask:
    app = create_app(rt.settings, runtime=rt, enqueue=lambda *a: None, run_migrations=False)

    @app.route("/test-only/duplicate-user")
    def duplicate_user() -> str:
        # A real database error whose statement carries a parameter: a unique violation.
        stmt = text("INSERT INTO users (id, username, password_hash, role, created_at) "
                    "VALUES (:id, :name, 'x', 'user', CURRENT_TIMESTAMP)")
        for _ in range(2):
            with rt.db.write() as s:
                s.execute(stmt, {"id": uuid.uuid4().hex, "name": SECRET})
        return "unreachable"

    return app


def assert_generic_500(resp: Any) -> str:
    assert resp.status_code == 500
    body = resp.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    err = body["error"]
    assert err["code"] == "INTERNAL_ERROR"
    error_id = err["details"]["error_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", error_id)
    assert error_id in err["message"]
    raw = resp.get_data(as_text=True)
    for detail in (SECRET, "INSERT", "SQL", "Traceback", "sqlite", "Error", "/", "File "):
        assert detail not in raw, (detail, raw)
    return str(error_id)


def logged_with(caplog: pytest.LogCaptureFixture, error_id: str) -> str:
    records = [r for r in caplog.records if getattr(r, "error_id", None) == error_id]
    assert len(records) == 1, [r.getMessage() for r in caplog.records]
    record = records[0]
    # The traceback is on the record (as exc_text once the secret-redacting filter rendered it).
    assert record.levelno == logging.ERROR and (record.exc_info or record.exc_text)
    return logging.Formatter().format(record)


def test_a_database_error_is_a_generic_500_with_an_error_id_in_the_log(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        resp = app.test_client().get("/test-only/duplicate-user")
    error_id = assert_generic_500(resp)
    logged = logged_with(caplog, error_id)
    # The operator's line has the id, the traceback and the statement, never its parameters.
    assert error_id in logged and "Traceback" in logged and "INSERT INTO users" in logged
    assert SECRET not in logged


def test_a_failing_api_route_is_a_generic_500_with_an_error_id_in_the_log(
    app: Flask, rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    # A stored execution whose JSON column is corrupt: reading it fails inside a Flask-RESTX route.
    client = app.test_client()
    created = client.post("/api/v1/code-sessions", json={"language": "python", "source_code": "print(1)"})
    assert created.status_code == 201, created.get_data(as_text=True)
    sid = created.get_json()["session_id"]
    queued = client.post(f"/api/v1/executions/session/{sid}/execute", json={})
    assert queued.status_code == 202, queued.get_data(as_text=True)
    eid = queued.get_json()["execution_id"]
    with rt.db.write() as s:
        s.execute(text("UPDATE executions SET tests = :bad"), {"bad": "{not json"})
    with caplog.at_level(logging.ERROR):
        resp = client.get(f"/api/v1/executions/{eid}")
    error_id = assert_generic_500(resp)
    assert "Traceback" in logged_with(caplog, error_id)


def test_a_dependency_that_is_down_is_named_without_its_details(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 1 of the loopback: both connections are refused at once.
    monkeypatch.setenv("DATABASE_URL", "postgresql://livecode-user@127.0.0.1:1/livecode")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("SECRET_KEY", secrets.token_urlsafe(48))
    monkeypatch.setenv("LIVECODE_DATA_DIR", str(tmp_path))
    r = build_runtime(load_settings("distributed"))
    app = create_app(r.settings, runtime=r, enqueue=lambda *a: None, run_migrations=False)
    with caplog.at_level(logging.WARNING):
        resp = app.test_client().get("/health")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["down"] == ["database", "broker"]
    raw = resp.get_data(as_text=True)
    for detail in ("127.0.0.1", "port", "livecode-user", "SQL", "refused"):
        assert detail not in raw, (detail, raw)
    error_id = re.search(r"error id ([0-9a-f]{32})", body["details"]["database"]["error"])
    assert error_id, body
    logged = [r.getMessage() for r in caplog.records if getattr(r, "error_id", None) == error_id.group(1)]
    assert logged and "127.0.0.1" in logged[0]  # the operator's log has what went wrong
    r.db.dispose()
