"""Read replica (design 4.1): with DATABASE_REPLICA_URL set, list endpoints read from it, writes go
to the primary, and a client reading its own just-written session never sees an older version.

To prove where each read goes, the "replica" here is a second database that is NOT replicated: a
row is there only when the test copies it, possibly stale, as a lagging replica would hold it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support.client import ApiClient
from tests.support.procs import Process, create_database, run_livecode, start_api

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def replica_api(cluster: Any, pg_admin_url: str) -> Iterator[tuple[ApiClient, str, str]]:
    replica_url = create_database(pg_admin_url)
    env = {**cluster.env, "DATABASE_REPLICA_URL": replica_url}
    run_livecode("db", "upgrade", env={**env, "DATABASE_URL": replica_url}, check=True)
    proc: Process
    proc, base = start_api(env)
    yield ApiClient(base), cluster.env["DATABASE_URL"], replica_url
    proc.stop()


def rows(url: str, table: str, row_id: str, key: str = "id") -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(f"SELECT * FROM {table} WHERE {key} = %s", (row_id,)).fetchall()  # noqa: S608


def copy_row(row: dict[str, Any], url: str, table: str) -> None:
    """What replication would do, as of the moment the row was read."""
    cols = list(row)
    values = [Jsonb(v) if isinstance(v, dict | list) else v for v in row.values()]
    with psycopg.connect(url) as conn:
        conn.execute(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",  # noqa: S608
            values,
        )


def test_lists_read_the_replica_and_writes_go_to_the_primary(replica_api: Any) -> None:
    api, primary, replica = replica_api
    session = api.create_session("print('v1')")
    sid = session["session_id"]
    assert rows(primary, "code_sessions", sid) and not rows(replica, "code_sessions", sid)
    stale_copy = rows(primary, "code_sessions", sid)[0]

    saved = api.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "print('v2')", "version": 1})
    assert saved.status_code == 200 and saved.json()["version"] == 2
    run = api.execute(sid)
    assert run.status_code == 202, run.text
    eid = run.json()["execution_id"]
    done = api.wait_execution(eid)  # a read of one execution: the primary, always current
    assert done["status"] == "COMPLETED" and done["stdout"] == "v2\n"
    assert not rows(replica, "executions", eid)  # no write reached the replica

    # The list endpoint reads the replica, which has not seen this session yet.
    listed = api.request("GET", f"/api/v1/executions/session/{sid}")
    assert listed.status_code == 404, listed.text

    # The replica catches up, but only to version 1 of the session.
    copy_row(stale_copy, replica, "code_sessions")
    execution = rows(primary, "executions", eid)[0]
    source = rows(primary, "sources", execution["source_hash"], key="hash")[0]
    copy_row(source, replica, "sources")  # the program text the execution references
    copy_row(execution, replica, "executions")
    listed = api.request("GET", f"/api/v1/executions/session/{sid}")
    assert listed.status_code == 200, listed.text
    assert [e["execution_id"] for e in listed.json()["items"]] == [eid]

    # Reading one's own session never shows the replica's older version.
    mine = api.request("GET", f"/api/v1/code-sessions/{sid}").json()
    assert mine["version"] == 2 and mine["source_code"] == "print('v2')"
