"""Test cases with verdicts through a real worker and the real sandbox (issue 13, part 1), on the
distributed system (PostgreSQL, Redis, a Celery worker process) and the embedded one (SQLite):
per-test verdicts and results, the summary, a compile error ending every test, the blocking
wait, batch items, and the test_started/test_finished events on the stream."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import websocket

from tests.support.client import ApiClient
from tests.support.migration_cases import check_testcases_migration
from tests.support.procs import create_database

pytestmark = pytest.mark.integration

# Reads two numbers and prints their sum (and its first argument); 7 fails, a negative loops.
SUM_CPP = r"""
#include <iostream>
int main(int argc, char** argv) {
    long a, b;
    if (!(std::cin >> a >> b)) return 3;
    if (a < 0) { volatile long x = 0; for (;;) x++; }
    if (a == 7) { std::cerr << "seven\n"; return 7; }
    std::cout << a + b << "\n";
    if (argc > 1) std::cout << argv[1] << "\n";
    return 0;
}
"""
SUM_TESTS = [
    {"name": "small", "stdin": "1 2", "expected_output": "3"},
    {"name": "wrong", "stdin": "2 2", "expected_output": "5\n"},
    {"name": "fails", "stdin": "7 0", "expected_output": "7"},
    {"name": "loops", "stdin": "-1 0", "expected_output": "-1"},
    {"stdin": "4 4", "args": ["x y"], "expected_output": "8   \nx y\n\n"},
    {"name": "no expectation", "stdin": "5 5"},
]


def run_with_tests(api: ApiClient, source: str, language: str, **body: Any) -> dict[str, Any]:
    sid = api.create_session(source, language)["session_id"]
    r = api.execute(sid, **body)
    assert r.status_code == 202, r.text
    return api.wait_execution(r.json()["execution_id"], timeout=120)


def replayed_events(api: ApiClient, eid: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event of a finished execution, replayed from the start of its stream."""
    out = []
    with requests.get(f"{api.base}/api/v1/executions/{eid}/events", stream=True, timeout=30) as r:
        assert r.status_code == 200, r.text
        kind = None
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind is not None:
                out.append((kind, json.loads(line.split(":", 1)[1])))
                if kind == "end":
                    break
    return out


def test_cpp_tests_get_a_verdict_each_and_stream_as_events(api: ApiClient) -> None:
    result = run_with_tests(api, SUM_CPP, "cpp", tests=SUM_TESTS, time_limit_ms=1000)
    assert result["status"] == "COMPLETED", result  # every test ran, whatever the verdicts
    assert result["reason"] is None
    got = [(t["index"], t["name"], t["verdict"]) for t in result["tests"]]
    assert got == [
        (0, "small", "ACCEPTED"),
        (1, "wrong", "WRONG_ANSWER"),
        (2, "fails", "RUNTIME_ERROR"),
        (3, "loops", "TIME_LIMIT"),
        (4, None, "ACCEPTED"),
        (5, "no expectation", "ACCEPTED"),
    ]
    assert result["summary"] == {"passed": 3, "total": 6, "verdict": "WRONG_ANSWER"}
    small, wrong, fails, loops, with_args, _ = result["tests"]
    assert (small["stdout"], small["exit_code"], small["truncated"]) == ("3\n", 0, False)
    assert wrong["stdout"] == "4\n"
    assert (fails["exit_code"], fails["stderr"], fails["stdout"]) == (7, "seven\n", "")
    assert loops["signal"] is not None and loops["execution_time_ms"] >= 900
    assert with_args["stdout"] == "8\nx y\n"  # its own stdin and argument
    for t in result["tests"]:
        assert t["execution_time_ms"] is not None and t["memory_kb"] is not None

    events = replayed_events(api, result["execution_id"])
    kinds = [k for k, _ in events]
    tests_events = [(k, d["index"]) for k, d in events if k.startswith("test_")]
    assert tests_events == [(k, i) for i in range(6) for k in ("test_started", "test_finished")]
    finished = [d for k, d in events if k == "test_finished"]
    assert [d["verdict"] for d in finished] == [t["verdict"] for t in result["tests"]]
    assert finished[0]["stdout"] == "3\n" and finished[0]["name"] == "small"
    assert kinds.index("test_finished") < kinds.index("result") and kinds[-1] == "end"
    assert next(d for k, d in events if k == "result")["summary"] == result["summary"]


def test_the_websocket_carries_the_test_events(api: ApiClient) -> None:
    sid = api.create_session("print(input()[::-1])")["session_id"]
    r = api.execute(sid, tests=[{"stdin": "abc", "expected_output": "cba"}, {"stdin": "xy", "expected_output": "xy"}])
    assert r.status_code == 202, r.text
    eid = r.json()["execution_id"]
    ws = websocket.create_connection(api.base.replace("http://", "ws://") + f"/api/v1/executions/{eid}/ws", timeout=60)
    received = []
    try:
        while not received or received[-1]["event"] != "end":
            received.append(json.loads(ws.recv()))
    finally:
        ws.close()
    tests_events = [(m["event"], m["data"]["index"]) for m in received if m["event"].startswith("test_")]
    assert tests_events == [("test_started", 0), ("test_finished", 0), ("test_started", 1), ("test_finished", 1)]
    assert [m["data"]["verdict"] for m in received if m["event"] == "test_finished"] == ["ACCEPTED", "WRONG_ANSWER"]


def test_a_compile_error_ends_every_test_and_the_blocking_wait_has_the_tests(api: ApiClient) -> None:
    sid = api.create_session("int main() { return undefined_name; }\n", "cpp")["session_id"]
    r = api.request(
        "POST",
        f"/api/v1/executions/session/{sid}/execute?wait=true&timeout_ms=60000",
        json={"tests": SUM_TESTS[:3]},
        timeout=90,
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert (result["status"], result["reason"]) == ("FAILED", "COMPILE_ERROR")
    assert "undefined_name" in result["compile_output"]
    assert [t["verdict"] for t in result["tests"]] == ["COMPILE_ERROR"] * 3
    assert result["summary"] == {"passed": 0, "total": 3, "verdict": "COMPILE_ERROR"}
    assert all(t["stdout"] == "" and t["exit_code"] is None for t in result["tests"])


def test_batch_items_with_tests_and_compare_modes(api: ApiClient) -> None:
    sid = api.create_session("import sys\nprint(float(sys.stdin.read()) / 3)")["session_id"]
    tests = [{"stdin": "1", "expected_output": "0.333333"}, {"stdin": "3", "expected_output": "1.0"}]
    r = api.request(
        "POST",
        "/api/v1/executions/batch",
        json={
            "executions": [
                {"session_id": sid, "tests": tests, "compare": "float:1e-5"},
                {"session_id": sid, "tests": tests},  # trim: 0.3333333333333333 is not 0.333333
            ]
        },
    )
    assert r.status_code == 202, r.text
    loose, strict = (api.wait_execution(e["execution_id"]) for e in r.json()["executions"])
    assert loose["status"] == strict["status"] == "COMPLETED"
    assert [t["verdict"] for t in loose["tests"]] == ["ACCEPTED", "ACCEPTED"]
    assert [t["verdict"] for t in strict["tests"]] == ["WRONG_ANSWER", "ACCEPTED"]
    assert strict["summary"] == {"passed": 1, "total": 2, "verdict": "WRONG_ANSWER"}
    assert loose["priority"] == "batch"


def test_test_cases_of_a_merged_run_see_stderr_in_stdout(api: ApiClient) -> None:
    sid = api.create_session("import sys\nprint('out', flush=True)\nprint('err', file=sys.stderr, flush=True)\n"
                             "print(input())")["session_id"]
    tests = [{"stdin": "x", "expected_output": "out\nerr\nx"}]
    r = api.request("POST", "/api/v1/executions/batch", json={"executions": [
        {"session_id": sid, "tests": tests, "merge_stderr": True}, {"session_id": sid, "tests": tests}]})
    assert r.status_code == 202, r.text
    merged, apart = (api.wait_execution(e["execution_id"]) for e in r.json()["executions"])
    assert merged["merge_stderr"] is True and apart["merge_stderr"] is False
    assert merged["tests"][0]["verdict"] == "ACCEPTED", merged["tests"]
    assert (merged["tests"][0]["stdout"], merged["tests"][0]["stderr"]) == ("out\nerr\nx\n", "")
    assert apart["tests"][0]["verdict"] == "WRONG_ANSWER", apart["tests"]
    assert (apart["tests"][0]["stdout"], apart["tests"][0]["stderr"]) == ("out\nx\n", "err\n")


def test_tests_of_a_run_share_the_output_limit(api: ApiClient) -> None:
    result = run_with_tests(
        api,
        "import sys\nsys.stdout.write('x' * int(sys.stdin.read()))",
        "python",
        tests=[{"stdin": "900"}, {"stdin": "2000"}],
        max_output_bytes=2000,
    )
    # Each test may write its share, 1000 bytes: the second is stopped past it.
    assert [t["verdict"] for t in result["tests"]] == ["ACCEPTED", "OUTPUT_LIMIT"], result["tests"]
    assert result["tests"][0]["stdout"] == "x" * 900
    assert len(result["tests"][1]["stdout"]) <= 1000 and result["tests"][1]["truncated"] is True


def test_the_migration_round_trip_on_postgresql(pg_admin_url: str) -> None:
    url = create_database(pg_admin_url).replace("postgresql://", "postgresql+psycopg://")
    check_testcases_migration(url)
