"""Priority queues and scale-out (design 4.2, 4.3): an interactive run overtakes a backlog of a
thousand batch runs; two worker processes share the load; queue lengths are exposed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests

from tests.support.client import ApiClient
from tests.support.procs import Process, start_worker, wait_for, wait_workers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BACKLOG = 1000


@pytest.fixture(scope="module")
def second_worker(cluster: Any) -> Iterator[Process]:
    """A second worker process next to the cluster's, on both queues."""
    proc = start_worker(cluster.env, "w1@scaleout")
    try:
        wait_workers(cluster.base, len(cluster.workers) + 1)
    except Exception:
        print(proc.output()[-3000:])
        proc.stop()
        raise
    yield proc
    proc.stop()


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def queue_lengths(api: ApiClient) -> dict[str, int]:
    r = api.request("GET", "/api/v1/admin/stats")  # sign-in off here: the local user is admin
    assert r.status_code == 200, r.text
    return r.json()["queues"]  # type: ignore[no-any-return]


def workers_of(api: ApiClient, sid: str) -> set[str]:
    seen: set[str] = set()
    for page in range(1, BACKLOG // 100 + 1):
        items = api.request("GET", f"/api/v1/executions/session/{sid}",
                            params={"page": page, "per_page": 100}).json()["items"]
        seen |= {e["worker"] for e in items if e["status"] == "COMPLETED" and e["worker"]}
    return seen


def test_interactive_overtakes_batch_backlog_and_two_workers_share_it(cluster: Any, second_worker: Process) -> None:
    api = cluster.client()
    batch_session = api.create_session("pass")["session_id"]
    interactive_session = api.create_session("print('me first')")["session_id"]

    r = api.request("POST", "/api/v1/executions/batch",
                    json={"executions": [{"session_id": batch_session}] * BACKLOG}, timeout=120)
    assert r.status_code == 202, r.text
    assert r.json()["count"] == BACKLOG
    try:
        backlog_before = queue_lengths(api)["low_priority"]
        assert backlog_before > BACKLOG // 2, backlog_before

        run = api.execute(interactive_session)
        assert run.status_code == 202, run.text
        done = api.wait_execution(run.json()["execution_id"], timeout=60)
        assert done["status"] == "COMPLETED" and done["stdout"] == "me first\n"
        start_delay = (ts(done["started_at"]) - ts(done["queued_at"])).total_seconds()
        # The design's target is about a second; a busy 2-core CI machine gets a generous bound.
        # bench/bench_auth_overhead.py measures the real figure.
        assert start_delay < 10, start_delay
        # It overtook: most of the backlog was still waiting when it finished.
        assert queue_lengths(api)["low_priority"] > 0

        # Both worker processes take part in the backlog.
        both = wait_for(lambda: len(workers_of(api, batch_session)) >= 2 and workers_of(api, batch_session),
                        120, 1.0, what="batch runs finished by both workers")
        assert {"w0@test", "w1@scaleout"} <= both, both

        metrics = requests.get(cluster.base + "/metrics", timeout=10).text
        assert 'livecode_queue_length{queue="low_priority"}' in metrics
        assert 'livecode_queue_length{queue="high_priority"}' in metrics
    finally:
        # Deleting the session turns the rest of the backlog into no-ops the workers skip at once,
        # so later tests do not queue behind it.
        assert api.request("DELETE", f"/api/v1/code-sessions/{batch_session}").status_code == 204
        wait_for(lambda: queue_lengths(api)["low_priority"] == 0, 180, 0.5, what="the backlog to drain")
