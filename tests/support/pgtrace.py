"""What a piece of code sent to PostgreSQL, read from libpq's own trace of the only connection of a
Database's pool: the tests of round trips and statements count on the wire, not in SQLAlchemy."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from livecode.db import Database

from .procs import create_database


def traced(db: Database, fn: Callable[[], Any]) -> tuple[Any, list[list[str]]]:
    """fn's result and libpq's trace of the pool's only connection while fn ran: one list of
    tab-separated fields per message ("F"rontend or "B"ackend, length, type, contents)."""
    with db.engine.connect() as conn:
        pgconn = conn.connection.driver_connection.pgconn  # type: ignore[union-attr]
    fd, path = tempfile.mkstemp()
    try:
        pgconn.trace(fd)
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE)
        try:
            result = fn()
        finally:
            pgconn.untrace()  # flushes the trace
        with open(path) as f:
            return result, [line.split("\t") for line in f.read().splitlines()]
    finally:
        os.close(fd)
        os.unlink(path)


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the server at `admin_url` for the block, dropped after it."""
    url = create_database(admin_url)
    try:
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


@contextmanager
def scratch_db(admin_url: str, pool_size: int = 1, migrated: bool = True) -> Iterator[Database]:
    """A Database (the embedded settings, a pool of `pool_size` and no overflow) on a fresh,
    migrated database for the block; disposed and dropped after it."""
    from livecode import migrations
    from livecode.config import load_settings

    with scratch_database(admin_url) as url:
        database = Database(load_settings("embedded", database_url=url.replace("postgresql://", "postgresql+psycopg://"),
                                          db_pool_size=pool_size, db_max_overflow=0))
        try:
            if migrated:
                migrations.upgrade(database.engine)
            yield database
        finally:
            database.dispose()
