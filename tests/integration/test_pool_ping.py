"""The pool's pre-ping with a bypass window (LIVECODE DB_POOL_PRE_PING_BYPASS_MS): a connection
given back moments ago is used without a ping; one that has idled past the window is pinged, and a
dead one is replaced before the caller sees it. Real PostgreSQL; the server kills the backends."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from livecode.config import load_settings
from livecode.db import Database, is_unavailable
from tests.support.pgtrace import scratch_database


@pytest.fixture
def url(pg_admin_url: str) -> Iterator[str]:
    with scratch_database(pg_admin_url) as db_url:
        yield db_url


def database(url: str, bypass_ms: int) -> Database:
    base = load_settings("embedded")
    return Database(dataclasses.replace(base, database_url=url, db_pool_size=1, db_max_overflow=0,
                                        db_pool_pre_ping=True, db_pool_pre_ping_bypass_ms=bypass_ms))


def backend_pid(db: Database) -> int:
    with db.read_core(fresh=True) as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def kill(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.2)


def count_pings(db: Database, monkeypatch: Any) -> list[int]:
    pings: list[int] = []
    real = db.engine.dialect.do_ping

    def counting(dbapi_conn: Any) -> bool:
        pings.append(1)
        return real(dbapi_conn)

    monkeypatch.setattr(db.engine.dialect, "do_ping", counting)
    return pings


def test_a_connection_just_given_back_is_used_without_a_ping(url: str, monkeypatch: Any) -> None:
    db = database(url, bypass_ms=60_000)
    pings = count_pings(db, monkeypatch)
    first = backend_pid(db)
    for _ in range(5):
        assert backend_pid(db) == first  # the same pooled connection, each time
    assert pings == []


def test_an_idle_connection_is_pinged_and_a_dead_one_replaced_before_use(url: str, monkeypatch: Any) -> None:
    db = database(url, bypass_ms=50)
    pings = count_pings(db, monkeypatch)
    first = backend_pid(db)
    kill(url, first)  # idles past the window meanwhile
    second = backend_pid(db)  # no error: the ping found it dead and the pool connected anew
    assert second != first and len(pings) == 1


def test_a_connection_that_died_within_the_window_fails_as_unavailable_then_recovers(url: str) -> None:
    db = database(url, bypass_ms=60_000)
    first = backend_pid(db)
    kill(url, first)
    with pytest.raises(Exception) as failed:
        backend_pid(db)
    assert is_unavailable(failed.value)  # a 503 or a task retry for the callers, never a 500
    assert backend_pid(db) != first


def test_a_zero_window_pings_before_every_use(url: str) -> None:
    db = database(url, bypass_ms=0)
    assert db.engine.pool._pre_ping  # SQLAlchemy's own pre-ping
    first = backend_pid(db)
    kill(url, first)
    assert backend_pid(db) != first
