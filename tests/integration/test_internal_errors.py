"""No internal detail reaches a user (issue 9, item 10): when the worker cannot save a result, the
execution shows a generic message and an error id; the SQL, its parameters and the traceback are
only in the operator's log (under that id), and the program's output is not even there.

The failure is a real one: a trigger in the real database (PostgreSQL for the distributed
system, SQLite for the embedded one) refuses the save of runs whose source carries a marker."""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Cluster
from tests.support.client import ApiClient
from tests.support.procs import Process, wait_for

pytestmark = pytest.mark.integration

REFUSE_RESULT = "REFUSE-RESULT"  # the result cannot be saved; a row without the output can
REFUSE_ALL = "REFUSE-ALL"  # nothing but the dead letter's FAILED can be saved

PG_TRIGGER = f"""
CREATE OR REPLACE FUNCTION lc_test_refuse_save() RETURNS trigger AS $$
BEGIN
  IF NEW.stdout IS NOT NULL AND position('{REFUSE_RESULT}' in NEW.source_code) > 0 THEN
    RAISE EXCEPTION 'test trigger refuses this save';
  END IF;
  IF position('{REFUSE_ALL}' in NEW.source_code) > 0 AND NEW.status IN ('COMPLETED', 'FAILED', 'TIMEOUT')
     AND NEW.reason IS DISTINCT FROM 'DEAD_LETTER' THEN
    RAISE EXCEPTION 'test trigger refuses every save';
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS lc_test_refuse_save ON executions;
CREATE TRIGGER lc_test_refuse_save BEFORE UPDATE ON executions
  FOR EACH ROW EXECUTE FUNCTION lc_test_refuse_save();
"""
SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS lc_test_refuse_result BEFORE UPDATE ON executions
        WHEN NEW.stdout IS NOT NULL AND instr(NEW.source_code, '{REFUSE_RESULT}') > 0
        BEGIN SELECT RAISE(ABORT, 'test trigger refuses this save'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS lc_test_refuse_all BEFORE UPDATE ON executions
        WHEN instr(NEW.source_code, '{REFUSE_ALL}') > 0 AND NEW.status IN ('COMPLETED', 'FAILED', 'TIMEOUT')
             AND (NEW.reason IS NULL OR NEW.reason <> 'DEAD_LETTER')
        BEGIN SELECT RAISE(ABORT, 'test trigger refuses every save'); END""",
]


@pytest.fixture
def refusing_db(system: Cluster) -> Iterator[None]:
    if system.env.get("DATABASE_URL"):
        url = system.env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(PG_TRIGGER)
        yield
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER IF EXISTS lc_test_refuse_save ON executions")
        return
    path = Path(system.env["LIVECODE_DATA_DIR"]) / "livecode.db"
    with sqlite3.connect(path, timeout=15) as conn:
        for ddl in SQLITE_TRIGGERS:
            conn.execute(ddl)
    yield
    with sqlite3.connect(path, timeout=15) as conn:
        conn.execute("DROP TRIGGER IF EXISTS lc_test_refuse_result")
        conn.execute("DROP TRIGGER IF EXISTS lc_test_refuse_all")


def program(marker: str) -> tuple[str, str]:
    token = f"PROGRAM-OUTPUT-{uuid.uuid4().hex}"
    # The token is built at run time: only the program's output holds it, not its source.
    return f"# {marker}\nprint({token[::-1]!r}[::-1])\n", token


def error_id_in(text: str) -> str:
    found = re.search(r"error id ([0-9a-f-]{32,36})\b", text)
    assert found, text
    return found.group(1)


def assert_generic(stderr: str) -> None:
    for detail in ("SQL", "UPDATE", "executions", "parameters", "Traceback", "trigger", "Error:", "/"):
        assert detail not in stderr, (detail, stderr)


def logs_of(system: Cluster) -> list[Process]:
    return [system.api, *system.workers]


def test_a_result_that_cannot_be_saved_shows_a_generic_message_and_an_error_id(
    api: ApiClient, system: Cluster, refusing_db: None
) -> None:
    source, token = program(REFUSE_RESULT)
    result = api.run(source)
    assert result["status"] == "FAILED" and result["reason"] == "INTERNAL_ERROR", result
    assert result["stdout"] is None
    assert_generic(result["stderr"])
    error_id = error_id_in(result["stderr"])
    # The operator's log has the id, with what went wrong; the program's output is nowhere.
    wait_for(lambda: any(error_id in p.output() for p in system.workers or [system.api]), 10, 0.2,
             what="the error id in the worker's log")
    log = "\n".join(p.output() for p in logs_of(system))
    line = next(x for x in log.splitlines() if error_id in x)
    assert "could not save the result" in line and "refuses this save" in line, line
    assert token not in log
    # Not a dead letter: re-running the program would not make its result fit.
    letters = api.request("GET", "/api/v1/admin/dead-letters").json()["items"]
    assert all(d["execution_id"] != result["execution_id"] for d in letters)


def test_a_dead_lettered_run_shows_a_generic_message_and_an_error_id(
    api: ApiClient, system: Cluster, refusing_db: None
) -> None:
    source, token = program(REFUSE_ALL)
    result = api.run(source)
    assert result["status"] == "FAILED" and result["reason"] == "DEAD_LETTER", result
    assert_generic(result["stderr"])
    error_id = error_id_in(result["stderr"])
    letters = api.request("GET", "/api/v1/admin/dead-letters").json()["items"]
    letter = next(d for d in letters if d["execution_id"] == result["execution_id"])
    assert letter["id"] == error_id  # the operator finds the details under the id the user quotes
    assert "refuses every save" in letter["error"] and token not in letter["error"]
    log = "\n".join(p.output() for p in logs_of(system))
    assert error_id in log
    assert token not in log
