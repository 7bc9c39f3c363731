"""/piston/api/v2: Piston's shapes, checks, error answers and unit conversions, in process. A
stand-in worker (the enqueue's `then`) finishes each run through the same service calls a worker
makes and publishes its output events, so the synchronous execute answers at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.inprocess import LiveApp, finish_like_a_worker, uid

RUNTIMES = "/piston/api/v2/runtimes"
EXECUTE = "/piston/api/v2/execute"
PY = {"language": "python", "version": "*", "files": [{"content": "print(1)"}]}


def worker(live: LiveApp, outputs: list[tuple[str, str]] = (), **result: Any) -> Callable[[Any], None]:  # type: ignore[assignment]
    """A stand-in worker: publishes RUNNING and the output chunks in order, then finishes the run."""
    seen: list[dict[str, Any]] = []

    def run(eid: Any) -> None:
        row = live.rows.one("executions", "id = :id", id=uid(eid))
        seen.append(row)
        live.rt.events.publish(str(eid), "status", {"status": "RUNNING", "attempt": 1})
        for stream, text in outputs:
            live.rt.events.publish(str(eid), "output", {"stream": stream, "text": text})
        out = {
            "stdout": "".join(t for s, t in outputs if s == "stdout").encode(),
            "stderr": "".join(t for s, t in outputs if s == "stderr").encode(),
            **result,
        }
        finish_like_a_worker(live, eid, **out)

    run.seen = seen  # type: ignore[attr-defined]
    return run


def message_of(resp: Any, status: int) -> str:
    assert resp.status_code == status, (resp.status_code, resp.get_data()[:300])
    body = resp.get_json()
    assert isinstance(body, dict) and set(body) == {"message"}, body
    assert isinstance(body["message"], str) and body["message"]
    return body["message"]  # type: ignore[no-any-return]


def test_runtimes_list_each_language_with_a_semver_version_and_aliases(live: LiveApp) -> None:
    r = live.client.get(RUNTIMES)
    assert r.status_code == 200
    runtimes = {rt["language"]: rt for rt in r.get_json()}
    assert {"python", "c++", "bash"} <= set(runtimes)
    assert "py" in runtimes["python"]["aliases"] and "cpp" in runtimes["c++"]["aliases"]
    for rt in runtimes.values():
        major, minor, patch = rt["version"].split(".")[:3]
        assert major.isdigit() and minor.isdigit() and patch[:1].isdigit(), rt
        assert set(rt) <= {"language", "version", "aliases", "runtime"}


def test_execute_answers_in_pistons_shape_with_the_output_interleaved(live: LiveApp) -> None:
    run = worker(
        live,
        [("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "c\n")],
        execution_time_ms=12,
        cpu_time_ms=7,
        memory_kb=2048,
    )
    live.enqueued.then = run
    r = live.client.post(EXECUTE, json={**PY, "version": "3.x", "stdin": "in", "args": ["x", "y"]})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["language"] == "python" and body["version"].startswith("3.")
    assert "compile" not in body
    assert body["run"] == {
        "stdout": "a\nc\n",
        "stderr": "b\n",
        "output": "a\nb\nc\n",
        "code": 0,
        "signal": None,
        "message": None,
        "status": None,
        "cpu_time": 7,
        "wall_time": 12,
        "memory": 2048 * 1024,
    }
    row = run.seen[0]  # type: ignore[attr-defined]
    assert row["stdin"] == "in\n"  # Piston ends stdin with a newline
    assert row["args"] in (["x", "y"], '["x", "y"]')
    # Nothing is kept once answered: the run's session and execution are gone.
    assert live.rows.count("code_sessions") == 0 and live.rows.count("executions") == 0


def test_without_ordered_events_output_is_stdout_then_stderr(live: LiveApp) -> None:
    def run(eid: Any) -> None:  # no output events at all (a lost stream): the row is the truth
        finish_like_a_worker(live, eid, stdout=b"out\n", stderr=b"err\n")

    live.enqueued.then = run
    body = live.client.post(EXECUTE, json=PY).get_json()
    assert body["run"]["output"] == "out\nerr\n"


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (
            {"status": "FAILED", "reason": "RUNTIME_ERROR", "exit_code": 3},
            {"code": 3, "signal": None, "status": "RE", "message": "Exited with error status 3"},
        ),
        (
            {"status": "FAILED", "reason": "RUNTIME_ERROR", "exit_code": None, "signal": 11},
            {"code": None, "signal": "SIGSEGV", "status": "SG"},
        ),
        (
            {"status": "TIMEOUT", "reason": "TIME_LIMIT", "exit_code": None},
            {"code": None, "signal": "SIGKILL", "status": "TO"},
        ),
        (
            {"status": "FAILED", "reason": "MEMORY_LIMIT", "exit_code": None},
            {"code": None, "signal": "SIGKILL", "status": "SG"},
        ),
        (
            {"status": "FAILED", "reason": "OUTPUT_LIMIT", "exit_code": None, "stdout_truncated": True},
            {"status": "OL", "signal": "SIGKILL"},
        ),
        ({"status": "FAILED", "reason": "INTERNAL_ERROR", "exit_code": None}, {"status": "XX", "code": None}),
        (
            {"status": "CANCELLED", "reason": "CANCELLED", "exit_code": None, "signal": 15},
            {"code": None, "signal": "SIGTERM", "status": "SG", "message": "Caught fatal signal 15"},
        ),
    ],
)
def test_how_a_run_ended_is_told_as_isolate_tells_piston(
    live: LiveApp, result: dict[str, Any], expected: dict[str, Any]
) -> None:
    live.enqueued.then = lambda eid: finish_like_a_worker(live, eid, **result)
    run = live.client.post(EXECUTE, json=PY).get_json()["run"]
    assert {k: run[k] for k in expected} == expected


def test_a_compiled_language_has_a_compile_stage_and_a_failed_compile_is_also_run(live: LiveApp) -> None:
    body = {"language": "c", "version": "*", "files": [{"name": "main.c", "content": "int main(){return 0;}"}]}
    live.enqueued.then = lambda eid: finish_like_a_worker(live, eid, compile_output=b"warning: x\n")
    ok = live.client.post(EXECUTE, json=body).get_json()
    assert ok["compile"]["code"] == 0 and ok["compile"]["stderr"] == "warning: x\n"
    assert ok["compile"]["output"] == "warning: x\n" and ok["run"]["code"] == 0
    live.enqueued.then = lambda eid: finish_like_a_worker(
        live, eid, status="FAILED", reason="COMPILE_ERROR", exit_code=1, compile_output=b"error: y\n"
    )
    failed = live.client.post(EXECUTE, json=body).get_json()
    assert failed["compile"]["code"] == 1 and failed["compile"]["stderr"] == "error: y\n"
    assert failed["run"] == failed["compile"]  # Piston's backward compatibility


def test_limits_in_pistons_units_are_converted_and_clamped(live: LiveApp) -> None:
    run = worker(live)
    live.enqueued.then = run
    big = 10**12
    r = live.client.post(
        EXECUTE,
        json={
            **PY,
            "run_timeout": 2500.5,
            "run_cpu_time": big,
            "run_memory_limit": 64 * 1024 * 1024 + 1,
            "compile_memory_limit": -1,
            "compile_timeout": 10000,
        },
    )
    assert r.status_code == 200, r.get_json()
    limits = run.seen[0]["limits"]  # type: ignore[attr-defined]
    limits = limits if isinstance(limits, dict) else __import__("json").loads(limits)
    assert limits == {"time_limit_ms": 2501, "cpu_time_ms": live.settings.max_time_limit_ms, "memory_limit_mb": 65}
    # -1 (Piston's "no limit", which clients send by default) is the server's default limit.
    live.client.post(EXECUTE, json={**PY, "run_memory_limit": -1})
    second = run.seen[1]["limits"]  # type: ignore[attr-defined]
    assert "memory_limit_mb" not in (second if isinstance(second, dict) else __import__("json").loads(second))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"version": "*", "files": []}, "language is required as a string"),
        ({"language": 3, "version": "*", "files": []}, "language is required as a string"),
        ({"language": "python", "files": []}, "version is required as a string"),
        ({"language": "python", "version": "*", "files": "x"}, "files is required as an array"),
        ({"language": "python", "version": "*", "files": [{"content": 1}]}, "files[0].content is required as a string"),
        ({"language": "python", "version": "*", "files": [None]}, "files[0].content is required as a string"),
        ({"language": "cobol", "version": "*", "files": []}, "cobol-* runtime is unknown"),
        ({"language": "python", "version": "2.x", "files": []}, "python-2.x runtime is unknown"),
        ({"language": "python", "version": "not a range", "files": []}, "python-not a range runtime is unknown"),
        ({"language": "python", "version": "82<+ -  ^Xa~", "files": []}, "python-82<+ -  ^Xa~ runtime is unknown"),
        ({"language": "python", "version": "*", "files": []}, "files must include at least one utf8 encoded file"),
        (
            {"language": "python", "version": "*", "files": [{"content": "eA==", "encoding": "base64"}]},
            "files must include at least one utf8 encoded file",
        ),
        ({**PY, "run_timeout": "3000"}, "If specified, run_timeout must be a number"),
        ({**PY, "run_timeout": True}, "If specified, run_timeout must be a number"),
        ({**PY, "compile_cpu_time": [1]}, "If specified, compile_cpu_time must be a number"),
        ({**PY, "run_timeout": -5}, "run_timeout must be non-negative"),
        ({**PY, "stdin": 5}, "stdin must be a string"),
        ({**PY, "args": "a b"}, "args must be an array of strings"),
        ({**PY, "args": [1]}, "args must be an array of strings"),
        ([PY], "the request body must be a JSON object"),
    ],
)
def test_bad_input_gets_pistons_400_and_creates_nothing(live: LiveApp, body: Any, message: str) -> None:
    before = live.rows.snapshot()
    assert message_of(live.client.post(EXECUTE, json=body), 400) == message
    assert live.rows.snapshot() == before and live.enqueued.calls == []


def test_several_files_are_one_program_the_first_utf8_file_its_entry(live: LiveApp) -> None:
    seen: list[tuple[Any, list[tuple[str, str]]]] = []

    def run(eid: Any) -> None:
        row = live.rows.one("executions", "id = :id", id=uid(eid))
        with live.rows.engine.connect() as conn:
            files = conn.execute(
                __import__("sqlalchemy").text(
                    "SELECT f.path, s.content FROM execution_files f JOIN sources s ON s.hash = f.source_hash "
                    "WHERE f.execution_id = :id ORDER BY f.position"
                ),
                {"id": uid(eid)},
            ).all()
        seen.append((row["entry"], [tuple(f) for f in files]))
        finish_like_a_worker(live, eid, stdout=b"ok\n")

    live.enqueued.then = run
    data = __import__("base64").b64encode(b"42\n").decode()
    body = {
        **PY,
        "files": [
            {"name": "data.txt", "content": data, "encoding": "base64"},
            {"name": "app.py", "content": "import helper"},
            {"name": "helper.py", "content": "print(open('data.txt').read())"},
            {"content": "x = 1", "encoding": "nonsense"},  # an unknown encoding is utf8
        ],
    }
    r = live.client.post(EXECUTE, json=body)
    assert r.status_code == 200, r.get_json()
    assert seen == [
        (
            "app.py",
            [
                ("data.txt", "42\n"),
                ("app.py", "import helper"),
                ("helper.py", "print(open('data.txt').read())"),
                ("file3.code", "x = 1"),
            ],
        )
    ]
    # An unnamed entry among several files is the language's default file.
    live.client.post(EXECUTE, json={**PY, "files": [{"content": "import lib"}, {"name": "lib.py", "content": ""}]})
    assert seen[1] == ("main.py", [("main.py", "import lib"), ("lib.py", "")])
    assert live.rows.count("code_sessions") == 0 and live.rows.count("executions") == 0


@pytest.mark.parametrize(
    ("files", "status", "words"),
    [
        ([{"name": "../x.py", "content": "1"}, {"content": "2"}], 400, "file path"),
        ([{"name": "a.py", "content": "1"}, {"name": "a.py", "content": "2"}], 400, "a.py"),
        ([{"name": "/etc/passwd", "content": "1"}], 400, "file path"),
        ([{"content": "1"}, {"name": "b.bin", "content": "//79", "encoding": "base64"}], 400, "binary"),
        ([{"content": "1"}, {"name": "b.hex", "content": "zz", "encoding": "hex"}], 400, "hex"),
        ([{"name": "a.py", "content": "1"}] + [{"name": f"f{i}.py", "content": ""} for i in range(80)], 400, "files"),
        ([{"name": "a.py", "content": "#" * 600_000}, {"name": "b.py", "content": "#" * 600_000}], 413, "bytes"),
    ],
)
def test_a_program_that_breaks_the_file_rules_is_refused_in_pistons_shape(
    live: LiveApp, files: list[dict[str, Any]], status: int, words: str
) -> None:
    before = live.rows.snapshot()
    assert words in message_of(live.client.post(EXECUTE, json={**PY, "files": files}), status)
    assert live.rows.snapshot() == before and live.enqueued.calls == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_415(live: LiveApp, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = live.client.post(EXECUTE, data=b'{"language": "python"}', headers=headers)
    assert message_of(r, 415) == "requests must be of type application/json"


@pytest.mark.parametrize("raw", [b"{", b"\xff\xfe", b"[" * 100000, b"NaN", b'{"language": "python", "x": NaN'])
def test_broken_json_is_a_400_in_pistons_shape(live: LiveApp, raw: bytes) -> None:
    message_of(live.client.post(EXECUTE, data=raw, headers={"Content-Type": "application/json"}), 400)


def test_nan_is_refused_and_infinite_or_huge_limits_are_clamped(live: LiveApp) -> None:
    head = b'{"language": "python", "version": "*", "files": [{"content": "1"}], '
    nan = live.client.post(EXECUTE, data=head + b'"run_timeout": NaN}', headers={"Content-Type": "application/json"})
    assert "must be a number" in message_of(nan, 400)
    run = worker(live)
    live.enqueued.then = run
    for limits in (
        b'"run_timeout": Infinity, "run_memory_limit": 1e400}',
        b'"run_timeout": 1' + b"0" * 400 + b', "run_memory_limit": 1' + b"0" * 400 + b"}",
    ):
        r = live.client.post(EXECUTE, data=head + limits, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.get_json()
    for row in run.seen:  # type: ignore[attr-defined]
        got = row["limits"] if isinstance(row["limits"], dict) else __import__("json").loads(row["limits"])
        assert got == {
            "time_limit_ms": live.settings.max_time_limit_ms,
            "memory_limit_mb": live.settings.max_memory_limit_mb,
        }
    negative = live.client.post(
        EXECUTE, data=head + b'"run_cpu_time": -1' + b"0" * 400 + b"}", headers={"Content-Type": "application/json"}
    )
    assert message_of(negative, 400) == "run_cpu_time must be non-negative"


def test_packages_are_the_runtimes_and_cannot_be_managed(live: LiveApp) -> None:
    listed = live.client.get("/piston/api/v2/packages").get_json()
    runtimes = live.client.get(RUNTIMES).get_json()
    assert listed == [
        {"language": r["language"], "language_version": r["version"], "installed": True} for r in runtimes
    ]
    for method in ("POST", "DELETE"):
        r = live.client.open("/piston/api/v2/packages", method=method, json={"language": "python", "version": "*"})
        assert "cannot be installed" in message_of(r, 405)


def test_unknown_piston_paths_and_methods_answer_in_pistons_shape(live: LiveApp) -> None:
    message_of(live.client.get("/piston/api/v2/nope"), 404)
    message_of(live.client.post(RUNTIMES, json={}), 404)


def test_an_oversized_source_is_413_in_pistons_shape(make_live: Any) -> None:
    live = make_live(max_source_bytes=100)
    message_of(live.client.post(EXECUTE, json={**PY, "files": [{"content": "#" * 200}]}), 413)
    assert live.rows.count("code_sessions") == 0


def test_sign_in_and_keys(secure: LiveApp) -> None:
    from tests.support.users import sign_up

    # Runtimes are public, as /api/v1/languages is.
    assert secure.client.get(RUNTIMES).status_code == 200
    assert "sign-in required" in message_of(secure.client.post(EXECUTE, json=PY), 401)
    message_of(secure.client.post(EXECUTE, json=PY, headers={"Authorization": "lc_not_a_key"}), 401)
    user = sign_up(secure)
    key = secure.client.post("/api/v1/api-keys", json={"name": "piston"}, headers=user.headers).get_json()["key"]
    secure.enqueued.then = lambda eid: finish_like_a_worker(secure, eid, stdout=b"1\n")
    for headers in ({"Authorization": key}, {"X-API-Key": key}):
        r = secure.client.post(EXECUTE, json=PY, headers=headers)
        assert r.status_code == 200 and r.get_json()["run"]["stdout"] == "1\n", r.get_json()


def test_the_rate_limit_is_a_429_in_pistons_shape(make_live: Any) -> None:
    live = make_live(execution_rate_limit="2/minute")
    live.enqueued.then = lambda eid: finish_like_a_worker(live, eid)
    assert [live.client.post(EXECUTE, json=PY).status_code for _ in range(2)] == [200, 200]
    r = live.client.post(EXECUTE, json=PY)
    assert "rate limit" in message_of(r, 429) and r.headers["Retry-After"]


def test_the_openapi_document_names_both_operations(live: LiveApp) -> None:
    doc = live.client.get("/piston/openapi.json").get_json()
    assert set(doc["paths"]) == {"/api/v2/runtimes", "/api/v2/packages", "/api/v2/execute"}


def test_errors_raised_before_a_piston_route_matched_are_in_pistons_shape(secure: LiveApp) -> None:
    """A made-up method, a WebSocket handshake on a plain route, and a 401 on the WebSocket route
    are refused before any /piston handler runs: still Piston's shape."""
    message_of(secure.client.open(RUNTIMES, method="BREW"), 405)
    message_of(secure.client.open(EXECUTE, method="BREW", headers={"Authorization": "lc_nope"}), 401)
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    message_of(secure.client.get(RUNTIMES, headers=upgrade), 400)
    message_of(secure.client.get("/piston/api/v2/connect", headers=upgrade), 401)
    # LiveCode's own API keeps its own shape.
    assert set(secure.client.open("/api/v1/languages", method="BREW").get_json()) == {"error"}


def test_any_json_body_is_a_job_or_pistons_400(live: LiveApp) -> None:
    """Whatever JSON arrives, the checks answer with a job or a PistonError: never another
    exception (a 500). Values are drawn for every field Piston reads, and for the files' fields."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from livecode.services import piston as svc

    runtimes = svc.runtimes(live.rt.languages)
    scalar = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=8),
        st.sampled_from(["*", "3.x", "^3", "python", "py", "c++", "utf8", "base64", "hex", "a.py", "../a", ""]),
        st.sampled_from([10**400, -(10**400), float("inf"), float("-inf"), float("nan"), -1, 0.5]),
    )
    value = st.recursive(
        scalar,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=6,
    )
    file = st.fixed_dictionaries(
        {}, optional={"name": value, "content": value | st.text(max_size=8), "encoding": value}
    )
    fields = ["language", "version", "files", "stdin", "args", *svc.LIMIT_NAMES]
    files = st.lists(
        file | st.fixed_dictionaries({"content": st.text(max_size=8)}, optional={"name": value}), max_size=3
    )
    random_body = st.fixed_dictionaries(
        {}, optional={name: files | value if name == "files" else value for name in fields}
    )
    # A valid body with one or two fields replaced: reaches the checks after the first ones.
    near_valid = st.dictionaries(st.sampled_from(fields), st.one_of(scalar, files, value), max_size=3).map(
        lambda over: {**PY, **over}
    )
    body = near_valid | random_body

    made: list[Any] = []

    # 500 derandomized examples reach every line of parse_job and its helpers that 1000 reach (a
    # line tracer over services/piston.py, 2026-12); 300 do not. Each example is ~6 ms of
    # hypothesis' drawing, the floor's costliest test.
    @given(body=body | value)
    @settings(
        max_examples=500, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(body: Any) -> None:
        try:
            job = svc.parse_job(body, runtimes, live.settings)
        except svc.PistonError as exc:
            assert exc.status == 400 and exc.message
        else:
            assert job.files and (job.entry is None or job.entry in [p for p, _ in job.files])
            made.append(job)

    check()
    assert made, "no example made a job: the strategy does not reach the happy path"
