"""POST .../execute?wait=true: the finished execution in the answer, woken by the worker's final
events (not by polling), against the distributed system and the embedded one."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.conftest import Cluster
from tests.support.client import TERMINAL, ApiClient
from tests.support.procs import start_api, wait_for

pytestmark = pytest.mark.integration

SLEEPER = "import time\ntime.sleep({s})\nprint('woke')\n"


def execute_wait(base: str, session_id: str, query: str = "wait=true", timeout: float = 60) -> requests.Response:
    return requests.post(f"{base}/api/v1/executions/session/{session_id}/execute?{query}", json={},
                         timeout=timeout)


def test_wait_answers_with_the_finished_execution(system: Cluster) -> None:
    api = system.client()
    session = api.create_session("print('hi')")
    r = execute_wait(system.base, session["session_id"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "COMPLETED"
    assert body["stdout"] == "hi\n"
    assert body["exit_code"] == 0
    assert body["finished_at"] is not None
    # The same body as GET /api/v1/executions/{id}.
    assert api.get_execution(body["execution_id"]) == body


def test_wait_honours_the_encoding(system: Cluster) -> None:
    session = system.client().create_session("import sys; sys.stdout.buffer.write(b'\\xff')")
    r = execute_wait(system.base, session["session_id"], "wait=true&encoding=base64")
    assert r.status_code == 200, r.text
    assert r.json()["encoding"] == "base64"
    assert r.json()["stdout"] == "/w=="


def test_wait_shorter_than_the_run_answers_202(system: Cluster) -> None:
    api = system.client()
    session = api.create_session(SLEEPER.format(s=3))
    t0 = time.monotonic()
    r = execute_wait(system.base, session["session_id"], "wait=true&timeout_ms=300")
    assert r.status_code == 202, r.text
    assert time.monotonic() - t0 < 2.5  # it did not wait for the run (3 s of sleep)
    body = r.json()
    assert body["status"] == "QUEUED"
    done = api.wait_execution(body["execution_id"])
    assert done["status"] == "COMPLETED" and done["stdout"] == "woke\n"


@pytest.mark.parametrize("query", ["wait=true&timeout_ms=abc", "wait=true&timeout_ms=-1", "wait=maybe",
                                   "wait=true&timeout_ms=1.5", "wait=true&encoding=hex"])
def test_bad_wait_parameters_are_400_and_create_nothing(system: Cluster, query: str) -> None:
    api = system.client()
    session = api.create_session("print('never')")
    r = execute_wait(system.base, session["session_id"], query)
    assert r.status_code == 400, r.text
    assert set(r.json()["error"]) >= {"code", "message"}
    listed = api.request("GET", f"/api/v1/executions/session/{session['session_id']}").json()
    assert listed["total"] == 0


def test_many_concurrent_waits_all_return_while_health_answers(system: Cluster) -> None:
    api = system.client()
    sessions = [api.create_session(f"print({i})")["session_id"] for i in range(50)]
    health: list[tuple[int, float]] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            code = requests.get(f"{system.base}/health", timeout=30).status_code
            health.append((code, time.monotonic() - t0))
            time.sleep(0.1)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda sid: execute_wait(system.base, sid, timeout=90), sessions))
    finally:
        stop.set()
        prober.join()
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 202}, [a.text for a in answers if a.status_code not in (200, 202)]
    assert codes.count(200) >= 10  # some waited (the rest found the process's wait cap full)
    for i, a in enumerate(answers):
        body = a.json() if a.status_code == 200 else api.wait_execution(a.json()["execution_id"])
        assert body["status"] == "COMPLETED" and body["stdout"] == f"{i}\n"
    assert health and all(code == 200 for code, _ in health)
    assert max(dt for _, dt in health) < 10  # answered while every wait was open (no thread starvation)


def test_past_the_wait_cap_a_request_answers_202_at_once(cluster: Cluster) -> None:
    proc, base = start_api({**cluster.env, "LIVECODE_MAX_WAITS": "1"})
    try:
        api = ApiClient(base)
        first = api.create_session(SLEEPER.format(s=4))["session_id"]
        second = api.create_session("print('second')")["session_id"]
        held: dict[str, Any] = {}
        waiter = threading.Thread(target=lambda: held.setdefault("r", execute_wait(base, first)))
        waiter.start()
        wait_for(lambda: api.request("GET", f"/api/v1/executions/session/{first}").json()["total"] == 1,
                 what="the first run queued")
        r = execute_wait(base, second)
        assert r.status_code == 202, r.text  # the one wait slot is taken
        assert waiter.is_alive()
        waiter.join(60)
        assert held["r"].status_code == 200 and held["r"].json()["stdout"] == "woke\n"
        assert api.wait_execution(r.json()["execution_id"])["status"] in TERMINAL
    finally:
        proc.stop()
