"""Test cases on the execute request and batch items (issue 13, part 1): what is accepted and
stored, what is refused (4xx in the one error shape, nothing stored or queued), and the shape of
the per-test results and summary in GET, the list and the Swagger document."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from livecode.services import testcases
from livecode.services.compare import parse_compare
from tests.support.inprocess import LiveApp, expect_error, finish_like_a_worker, uid
from tests.support.migration_cases import check_testcases_migration

EXECUTIONS = "/api/v1/executions"
BATCH = f"{EXECUTIONS}/batch"
TESTS = [
    {"name": "one", "stdin": "1 2", "expected_output": "3"},
    {"stdin": "2 2", "args": ["-v"], "expected_output": "4\n"},
    {"name": "no expectation", "stdin": ""},
]


def execute_url(session_id: str) -> str:
    return f"{EXECUTIONS}/session/{session_id}/execute"


def test_tests_and_compare_are_stored_with_the_queued_run(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    queued = live.execute(sid, {"tests": TESTS, "compare": "tokens", "time_limit_ms": 2000})
    assert live.enqueued.ids == [queued["execution_id"]]
    row = live.rows.one("executions", "id = :id", id=uid(queued["execution_id"]))
    assert json.loads(row["tests"]) == [
        {"name": "one", "stdin": "1 2", "args": [], "expected_output": "3"},
        {"name": None, "stdin": "2 2", "args": ["-v"], "expected_output": "4\n"},
        {"name": "no expectation", "stdin": "", "args": [], "expected_output": None},
    ]
    assert row["compare_mode"] == "tokens" and row["test_results"] is None
    got = live.client.get(f"{EXECUTIONS}/{queued['execution_id']}").get_json()
    assert got["status"] == "QUEUED"
    assert [(t["index"], t["name"], t["verdict"], t["stdout"]) for t in got["tests"]] == [
        (0, "one", None, None),
        (1, None, None, None),
        (2, "no expectation", None, None),
    ]
    assert got["summary"] == {"passed": 0, "total": 3, "verdict": None}
    assert got["compare"] == "tokens"


def test_a_run_without_tests_has_null_tests_and_summary(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    eid = live.execute(sid, {"stdin": "x"})["execution_id"]
    row = live.rows.one("executions", "id = :id", id=uid(eid))
    assert (row["tests"], row["compare_mode"]) == (None, None)  # SQL NULL, not JSON null
    got = live.client.get(f"{EXECUTIONS}/{eid}").get_json()
    assert got["tests"] is None and got["summary"] is None and got["compare"] is None


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"tests": "1 2"}, 400, "INVALID_FIELD"),
        ({"tests": {"stdin": ""}}, 400, "INVALID_FIELD"),
        ({"tests": [5]}, 400, "INVALID_FIELD"),
        ({"tests": [{"stdin": 5}]}, 400, "INVALID_FIELD"),
        ({"tests": [{"stdin": "", "args": "x"}]}, 400, "INVALID_FIELD"),
        ({"tests": [{"stdin": "", "args": [1]}]}, 400, "INVALID_FIELD"),
        ({"tests": [{"stdin": "", "expected_output": 3}]}, 400, "INVALID_FIELD"),
        ({"tests": [{"stdin": "", "name": ["a"]}]}, 400, "INVALID_FIELD"),
        ({"tests": [{"stdin": "", "name": "n" * 201}]}, 400, "INVALID_FIELD"),
        ({"tests": [{"stdin": "", "expected": "3"}]}, 400, "UNKNOWN_FIELD"),
        ({"tests": [{"stdin": "a\u0000"}]}, 400, "INVALID_SOURCE"),
        ({"tests": [{"stdin": "", "args": ["a"] * 65}]}, 400, "INVALID_ARGS"),
        ({"tests": []}, 400, "INVALID_FIELD"),
        ({"tests": [{"stdin": ""}] * 101}, 400, "TOO_MANY_TESTS"),
        ({"tests": [{"stdin": ""}], "compare": "fuzzy"}, 400, "INVALID_COMPARE"),
        ({"tests": [{"stdin": ""}], "compare": "float:abc"}, 400, "INVALID_COMPARE"),
        ({"tests": [{"stdin": ""}], "compare": "float:5"}, 400, "INVALID_COMPARE"),
        ({"tests": [{"stdin": ""}], "compare": "float:" + "1" * 80}, 400, "INVALID_COMPARE"),
        ({"tests": [{"stdin": ""}], "compare": 1}, 400, "INVALID_FIELD"),
        ({"compare": "exact"}, 400, "INVALID_FIELD"),
        ({"tests": [{"stdin": ""}], "stdin": "x"}, 400, "TESTS_CONFLICT"),
        ({"tests": [{"stdin": ""}], "args": ["x"]}, 400, "TESTS_CONFLICT"),
        ({"tests": [{"stdin": ""}], "interactive": True}, 400, "TESTS_CONFLICT"),
        ({"tests": [{"stdin": "x" * (256 * 1024 + 1)}]}, 413, "INPUT_TOO_LARGE"),
    ],
)
def test_bad_tests_are_refused_and_nothing_is_stored_or_queued(
    live: LiveApp, body: dict[str, Any], status: int, code: str
) -> None:
    sid = live.session()["session_id"]
    before = live.rows.snapshot()
    err = expect_error(live.client.post(execute_url(sid), json=body), status, code)
    assert live.rows.snapshot() == before
    assert live.enqueued.calls == []
    named = "compare" if "compare" in body and code == "INVALID_FIELD" else "tests"
    if code in ("INVALID_FIELD", "UNKNOWN_FIELD"):
        assert named in err["message"]  # says which field


def test_the_message_names_the_test_and_field(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    err = expect_error(
        live.client.post(execute_url(sid), json={"tests": [{"stdin": ""}, {"stdin": 7}]}), 400, "INVALID_FIELD"
    )
    assert "tests[1].stdin" in err["message"] and err["details"] == {"field": "tests[1].stdin"}
    err = expect_error(
        live.client.post(execute_url(sid), json={"tests": [{"stdin": ""}], "compare": "fuzzy"}), 400, "INVALID_COMPARE"
    )
    assert "exact" in err["message"] and "float:EPS" in err["message"]


def test_the_test_count_maximum_is_a_setting(make_live: Any) -> None:
    live = make_live(max_tests=2)
    sid = live.session()["session_id"]
    err = expect_error(live.client.post(execute_url(sid), json={"tests": [{"stdin": ""}] * 3}), 400, "TOO_MANY_TESTS")
    assert err["details"]["maximum"] == 2 and "1 to 2" in err["message"]
    assert live.client.post(execute_url(sid), json={"tests": [{"stdin": ""}] * 2}).status_code == 202


def test_batch_items_carry_tests_and_a_bad_one_refuses_the_batch(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    before = live.rows.snapshot()
    bad = {"executions": [{"session_id": sid, "tests": TESTS}, {"session_id": sid, "tests": TESTS, "compare": "x"}]}
    expect_error(live.client.post(BATCH, json=bad), 400, "INVALID_COMPARE")
    bad = {"executions": [{"session_id": sid, "tests": [{"stdin": ""}] * 101}]}
    expect_error(live.client.post(BATCH, json=bad), 400, "TOO_MANY_TESTS")
    assert live.rows.snapshot() == before and live.enqueued.calls == []

    r = live.client.post(
        BATCH, json={"executions": [{"session_id": sid, "tests": TESTS, "compare": "float:1e-6"}, {"session_id": sid}]}
    )
    assert r.status_code == 202, r.get_json()
    first, second = (e["execution_id"] for e in r.get_json()["executions"])
    row = live.rows.one("executions", "id = :id", id=uid(first))
    assert len(json.loads(row["tests"])) == 3 and row["compare_mode"] == "float:1e-6"
    assert live.rows.one("executions", "id = :id", id=uid(second))["tests"] is None


def _finished(live: LiveApp, results: list[dict[str, Any]], status: str = "COMPLETED", **cols: Any) -> str:
    sid = live.session()["session_id"]
    eid = live.execute(sid, {"tests": TESTS})["execution_id"]
    finish_like_a_worker(live, eid, status, stdout=b"", stderr=b"", test_results=results, **cols)
    return eid


def _entry(verdict: str, stdout: bytes = b"", **kw: Any) -> dict[str, Any]:
    fields = {
        "exit_code": 0,
        "signal": None,
        "execution_time_ms": 12,
        "cpu_time_ms": 5,
        "memory_kb": 900,
        "truncated": False,
        **kw,
    }
    return testcases.result_entry(verdict, stdout, b"warn\xff", **fields)


def test_per_test_results_and_summary_shape(live: LiveApp) -> None:
    results = [_entry("ACCEPTED", b"3\n"), _entry("WRONG_ANSWER", b"5\n"), _entry("ACCEPTED", b"\x00\xfe")]
    eid = _finished(live, results)
    got = live.client.get(f"{EXECUTIONS}/{eid}").get_json()
    assert got["status"] == "COMPLETED"
    assert got["summary"] == {"passed": 2, "total": 3, "verdict": "WRONG_ANSWER"}
    assert got["compare"] == "trim"  # the default
    first = got["tests"][0]
    assert set(first) == {
        "index",
        "name",
        "verdict",
        "stdout",
        "stderr",
        "exit_code",
        "signal",
        "execution_time_ms",
        "cpu_time_ms",
        "memory_kb",
        "truncated",
    }
    assert first == {
        "index": 0,
        "name": "one",
        "verdict": "ACCEPTED",
        "stdout": "3\n",
        "stderr": "warn\ufffd",
        "exit_code": 0,
        "signal": None,
        "execution_time_ms": 12,
        "cpu_time_ms": 5,
        "memory_kb": 900,
        "truncated": False,
    }
    assert [t["verdict"] for t in got["tests"]] == ["ACCEPTED", "WRONG_ANSWER", "ACCEPTED"]
    # Output is bytes: base64 gives each test's exact output.
    raw = live.client.get(f"{EXECUTIONS}/{eid}?encoding=base64").get_json()
    assert base64.b64decode(raw["tests"][2]["stdout"]) == b"\x00\xfe"
    assert base64.b64decode(raw["tests"][0]["stderr"]) == b"warn\xff"
    # The session's list shows them too.
    listed = live.client.get(f"{EXECUTIONS}/session/{got['session_id']}").get_json()["items"][0]
    assert listed["summary"] == got["summary"] and listed["tests"] == got["tests"]


def test_summary_when_everything_passed_and_after_a_compile_error(live: LiveApp) -> None:
    eid = _finished(live, [_entry("ACCEPTED")] * 3)
    assert live.client.get(f"{EXECUTIONS}/{eid}").get_json()["summary"] == {
        "passed": 3,
        "total": 3,
        "verdict": "ACCEPTED",
    }
    eid = _finished(
        live, [_entry("COMPILE_ERROR")] * 3, "FAILED", reason="COMPILE_ERROR", compile_output=b"main.cpp:1: error"
    )
    got = live.client.get(f"{EXECUTIONS}/{eid}").get_json()
    assert (got["status"], got["reason"], got["compile_output"]) == ("FAILED", "COMPILE_ERROR", "main.cpp:1: error")
    assert got["summary"] == {"passed": 0, "total": 3, "verdict": "COMPILE_ERROR"}


def test_an_internal_error_leaves_the_tests_that_did_not_run_without_a_verdict(live: LiveApp) -> None:
    eid = _finished(live, [_entry("ACCEPTED")], "FAILED", reason="INTERNAL_ERROR")
    got = live.client.get(f"{EXECUTIONS}/{eid}").get_json()
    assert [t["verdict"] for t in got["tests"]] == ["ACCEPTED", None, None]
    assert got["summary"] == {"passed": 1, "total": 3, "verdict": None}


def test_swagger_documents_tests_compare_and_results(live: LiveApp) -> None:
    spec = live.client.get("/swagger.json").get_json()
    defs = spec["definitions"]
    assert set(defs["TestCase"]["properties"]) == {"name", "stdin", "args", "expected_output"}
    assert {"tests", "compare"} <= set(defs["ExecuteRequest"]["properties"])
    assert {"tests", "compare"} <= set(defs["BatchItem"]["properties"])
    assert {"tests", "summary", "compare"} <= set(defs["Execution"]["properties"])
    assert set(defs["TestResult"]["properties"]) == {
        "index",
        "name",
        "verdict",
        "stdout",
        "stderr",
        "exit_code",
        "signal",
        "execution_time_ms",
        "cpu_time_ms",
        "memory_kb",
        "truncated",
    }
    assert set(defs["TestResult"]["properties"]["verdict"]["enum"]) == set(testcases.VERDICTS)
    assert set(defs["TestSummary"]["properties"]) == {"passed", "total", "verdict"}


@pytest.mark.parametrize(
    ("outcome", "stdout", "expected", "mode", "verdict"),
    [
        ("OK", b"3\n", "3", "trim", "ACCEPTED"),
        ("OK", b"3 \n\n", "3\n", "trim", "ACCEPTED"),
        ("OK", b"3 \n", "3\n", "exact", "WRONG_ANSWER"),
        ("OK", b"1  2\n3", "1 2 3", "tokens", "ACCEPTED"),
        ("OK", b"0.3333334", "0.3333333", "float:1e-6", "ACCEPTED"),
        ("OK", b"0.34", "0.3333333", "float:1e-6", "WRONG_ANSWER"),
        ("OK", b"anything", None, "trim", "ACCEPTED"),
        ("RUNTIME_ERROR", b"3", "3", "trim", "RUNTIME_ERROR"),
        ("TIME_LIMIT", b"", None, "trim", "TIME_LIMIT"),
        ("MEMORY_LIMIT", b"", "3", "trim", "MEMORY_LIMIT"),
        ("OUTPUT_LIMIT", b"3", "3", "trim", "OUTPUT_LIMIT"),
    ],
)
def test_verdicts(outcome: str, stdout: bytes, expected: str | None, mode: str, verdict: str) -> None:
    assert testcases.verdict(outcome, stdout, expected, parse_compare(mode)) == verdict


def test_an_unknown_execution_still_404s_with_tests_in_the_schema(live: LiveApp) -> None:
    expect_error(live.client.get(f"{EXECUTIONS}/{uuid.uuid4()}"), 404, "EXECUTION_NOT_FOUND")


def test_the_migration_round_trip_on_sqlite(tmp_path: Any) -> None:
    check_testcases_migration(f"sqlite:///{tmp_path / 'db.sqlite'}")
