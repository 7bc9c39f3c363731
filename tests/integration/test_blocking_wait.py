"""POST .../execute?wait=true: the finished execution in the answer, woken by the worker's final
events (not by polling), against the distributed system and the embedded one."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
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
    answers, health = wait_all_while_probing(system.base, sessions, "/health", timeout=90)
    # Parked, the waits hold no server thread: 50 wait at once on a process of 32 threads.
    assert [a.status_code for a in answers] == [200] * 50, [a.text for a in answers if a.status_code != 200]
    for i, a in enumerate(answers):
        body = a.json()
        assert body["status"] == "COMPLETED" and body["stdout"] == f"{i}\n"
        assert a.headers["X-Request-ID"] and int(a.headers["Content-Length"]) == len(a.content)
    assert health and {code for code, _ in health} == {200}, health
    assert max(dt for _, dt in health) < 10  # answered while every wait was open (no thread starvation)


def wait_all_while_probing(base: str, sessions: list[str], probe_path: str,
                           timeout: float) -> tuple[list[requests.Response], list[tuple[int | str, float]]]:
    """Every session's run waited for at once (`wait=true`) while one client GETs `probe_path` in
    a loop: the answers, and each probe's (status, or the error, and its seconds)."""
    probes: list[tuple[int | str, float]] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                code: int | str = requests.get(f"{base}{probe_path}", timeout=30).status_code
            except requests.RequestException as exc:
                code = repr(exc)
            probes.append((code, time.monotonic() - t0))
            time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with ThreadPoolExecutor(len(sessions)) as pool:
            answers = list(pool.map(lambda sid: execute_wait(base, sid, timeout=timeout), sessions))
    finally:
        stop.set()
        prober.join()
    return answers, probes


def test_more_waits_than_threads_all_wait_and_ordinary_requests_are_served(cluster: Cluster) -> None:
    """A waiting request holds its connection, not a server thread: on a process of 4 threads,
    40 requests wait at once (the runs take seconds to drain through the worker), while GETs on
    the same process are answered."""
    proc, base = start_api({**cluster.env, "LIVECODE_MAX_WAIT_MS": "120000"}, threads=4)
    try:
        api = ApiClient(base)
        sessions = [api.create_session(f"import time\ntime.sleep(0.2)\nprint({i})")["session_id"] for i in range(40)]
        done = api.run("print('done')")["execution_id"]
        answers, gets = wait_all_while_probing(base, sessions, f"/api/v1/executions/{done}", timeout=180)
        assert [a.status_code for a in answers] == [200] * 40, [a.text for a in answers if a.status_code != 200]
        assert [a.json()["stdout"] for a in answers] == [f"{i}\n" for i in range(40)]
        assert len(gets) >= 5 and {code for code, _ in gets} == {200}, gets
        assert max(dt for _, dt in gets) < 10  # served while the waits were open
    finally:
        proc.stop()


def test_an_idempotent_replay_that_waits_answers_the_finished_run(system: Cluster) -> None:
    """A retry with the same Idempotency-Key finds the run made by the first request; with
    `wait=true` it answers that run, finished (the retry never heard the run's end: its wait
    reads the row first)."""
    api = system.client()
    session = api.create_session("print('once')")["session_id"]
    url = f"{system.base}/api/v1/executions/session/{session}/execute?wait=true"
    key = {"Idempotency-Key": f"replay-{uuid.uuid4()}"}
    first = requests.post(url, json={}, headers=key, timeout=60)
    assert first.status_code == 200, first.text
    t0 = time.monotonic()
    again = requests.post(url, json={}, headers=key, timeout=60)
    assert again.status_code == 200, again.text
    assert time.monotonic() - t0 < 10  # not at the wait's 30 s deadline
    assert again.json()["execution_id"] == first.json()["execution_id"]
    assert again.json()["stdout"] == "once\n"


def test_a_connection_is_kept_alive_after_a_parked_answer(system: Cluster) -> None:
    """The answer a wait ends with is written by another thread than the one that took the
    request; the connection then serves its next request (HTTP/1.1 keep-alive)."""
    api = system.client()
    sessions = [api.create_session(f"print({i})")["session_id"] for i in range(2)]
    host, port = system.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        reader = sock.makefile("rb")
        for i, sid in enumerate(sessions):
            sock.sendall(f"POST /api/v1/executions/session/{sid}/execute?wait=true HTTP/1.1\r\nHost: {host}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}".encode())
            status, headers, body = read_response(reader)
            assert status == 200, body
            assert json.loads(body)["stdout"] == f"{i}\n"
            assert headers.get("connection", "keep-alive").lower() != "close"
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert read_response(reader)[0] == 200


def read_response(reader: Any) -> tuple[int, dict[str, str], bytes]:
    status = int(reader.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, reader.read(int(headers["content-length"]))


def test_a_parked_wait_is_counted_with_its_final_status(cluster: Cluster) -> None:
    """The latency histogram sees the answer the wait ended with (200, after the run's 0.5 s),
    not the 202 the server held while it waited."""
    proc, base = start_api(cluster.env)
    try:
        api = ApiClient(base)
        session = api.create_session("import time\ntime.sleep(0.5)\nprint('hi')")["session_id"]
        assert execute_wait(base, session).status_code == 200
        def value(kind: str, status: int, le: str = "") -> float:
            text = requests.get(f"{base}/metrics", timeout=10).text
            labels = ['endpoint="/api/v1/executions/session/<string:session_id>/execute"', 'method="POST"',
                      f'status="{status}"', *([f'le="{le}"'] if le else [])]
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith(f"livecode_http_request_duration_seconds_{kind}{{")
                       and all(label in line for label in labels))

        wait_for(lambda: value("count", 200) == 1, what="the wait's 200 counted")
        assert value("count", 202) == 0
        assert value("bucket", 200, "0.25") == 0 and value("bucket", 200, "10.0") == 1  # its time is the wait's
    finally:
        proc.stop()


def test_a_stopping_api_answers_its_parked_waits_when_their_runs_end(cluster: Cluster) -> None:
    """A process told to stop keeps its parked waits, as a request waiting in a thread is kept
    through gunicorn's graceful stop: the wait is answered with its finished run, then the
    process exits (it neither drops the connection nor cuts the wait short)."""
    proc, base = start_api(cluster.env)
    api = ApiClient(base)
    session = api.create_session(SLEEPER.format(s=3))["session_id"]
    held: dict[str, Any] = {}

    def wait() -> None:
        try:
            held["r"] = execute_wait(base, session, timeout=60)
        finally:
            held["at"] = time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    try:
        wait_for(lambda: api.request("GET", f"/api/v1/executions/session/{session}").json()["total"] == 1,
                 what="the run queued")
        time.sleep(0.3)
        proc.terminate()
        waiter.join(40)
        assert not waiter.is_alive()
        assert held["r"].status_code == 200, held["r"].text
        assert held["r"].json()["stdout"] == "woke\n"
        proc.wait_stopped(20)
        assert not proc.alive()
    finally:
        proc.stop()


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


def test_judge0_and_piston_waits_past_the_thread_count_all_get_their_results(cluster: Cluster) -> None:
    """Judge0's `?wait=true` and Piston's execute (always a wait) are parked too: 12 of each at
    once on a process of 4 threads, every one answered with its run's output."""
    proc, base = start_api(cluster.env, threads=4)
    try:
        def judge0(i: int) -> requests.Response:
            return requests.post(f"{base}/judge0/submissions?wait=true", timeout=120, json={
                "language_id": 71, "source_code": f"import time\ntime.sleep(0.5)\nprint({i})"})

        def piston(i: int) -> requests.Response:
            return requests.post(f"{base}/piston/api/v2/execute", timeout=120, json={
                "language": "python", "version": "*",
                "files": [{"content": f"import time\ntime.sleep(0.5)\nprint({i})"}]})

        with ThreadPoolExecutor(24) as pool:
            j0 = [pool.submit(judge0, i) for i in range(12)]
            ps = [pool.submit(piston, i) for i in range(12)]
            j0_answers, piston_answers = [f.result() for f in j0], [f.result() for f in ps]
        assert [a.status_code for a in j0_answers] == [201] * 12, [a.text for a in j0_answers]
        assert [a.json()["stdout"] for a in j0_answers] == [f"{i}\n" for i in range(12)]
        assert all(a.json()["status"]["id"] == 3 for a in j0_answers)  # Accepted
        assert [a.status_code for a in piston_answers] == [200] * 12, [a.text for a in piston_answers]
        assert not any("Retry-After" in a.headers for a in piston_answers)  # the held 503's, not theirs
        assert [a.json()["run"]["stdout"] for a in piston_answers] == [f"{i}\n" for i in range(12)]
    finally:
        proc.stop()


def test_each_parked_wait_gives_its_slot_back_once(cluster: Cluster) -> None:
    """LIVECODE_MAX_WAITS=3: after waits ended every way (the run's end, the deadline, a replay, a
    client that hung up), 3 wait at once again and a 4th answers 202 at once: no slot was kept
    (the 3 would not all wait) nor given back twice (the 4th would wait)."""
    proc, base = start_api({**cluster.env, "LIVECODE_MAX_WAITS": "3"}, threads=4)
    try:
        api = ApiClient(base)

        def wait(source: str, query: str = "wait=true") -> requests.Response:
            return execute_wait(base, api.create_session(source)["session_id"], query)

        with ThreadPoolExecutor(2) as pool:  # ended by the run's end, by the deadline
            ends = list(pool.map(lambda a: wait(*a),
                                 [("print(1)",), (SLEEPER.format(s=3), "wait=true&timeout_ms=200")]))
        assert [a.status_code for a in ends] == [200, 202]
        sid = api.create_session("print('replayed')")["session_id"]
        key = {"Idempotency-Key": f"slots-{uuid.uuid4()}"}
        for _ in range(2):  # a replay's wait too
            r = requests.post(f"{base}/api/v1/executions/session/{sid}/execute?wait=true", json={}, headers=key,
                              timeout=60)
            assert r.status_code == 200, r.text
        gone = api.create_session(SLEEPER.format(s=1))["session_id"]
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:  # hangs up while it waits
            sock.sendall(f"POST /api/v1/executions/session/{gone}/execute?wait=true HTTP/1.1\r\nHost: {host}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}".encode())
            wait_for(lambda: api.request("GET", f"/api/v1/executions/session/{gone}").json()["total"] == 1,
                     what="the hung-up wait's run queued")
        last = api.request("GET", f"/api/v1/executions/session/{gone}").json()["items"][0]["execution_id"]
        api.wait_execution(last)
        long_runs = [api.create_session(SLEEPER.format(s=8))["session_id"] for _ in range(3)]
        holders = ThreadPoolExecutor(3)
        try:
            held = [holders.submit(execute_wait, base, s) for s in long_runs]
            wait_for(lambda: sum(api.request("GET", f"/api/v1/executions/session/{s}").json()["total"]
                                 for s in long_runs) == 3, what="the 3 long runs queued")
            sid = api.create_session("print(4)")["session_id"]
            t0 = time.monotonic()
            fourth = execute_wait(base, sid)
            assert fourth.status_code == 202 and time.monotonic() - t0 < 4, fourth.text  # the cap is full
            for s in long_runs:  # their waits end (CANCELLED is an end): the shared worker is freed
                eid = api.request("GET", f"/api/v1/executions/session/{s}").json()["items"][0]["execution_id"]
                api.request("POST", f"/api/v1/executions/{eid}/cancel", json={})
            assert [f.result(60).status_code for f in held] == [200, 200, 200]
        finally:
            holders.shutdown()
        assert wait("print(5)").status_code == 200  # and free again
    finally:
        proc.stop()
