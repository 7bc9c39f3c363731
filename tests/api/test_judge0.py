"""/judge0: Judge0 CE 1.13.1's shapes, statuses, units, encodings and errors, in process (the SDK
drives a real stack in tests/compat/)."""

from __future__ import annotations

import base64
import io
import json
import signal
import threading
import uuid
import zipfile
from typing import Any

import pytest

from tests.support.inprocess import LiveApp, finish_like_a_worker, uid
from tests.support.users import sign_up

SUB = "/judge0/submissions"


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def create(live: LiveApp, body: dict[str, Any] | None = None, query: str = "", **kw: Any) -> str:
    r = live.client.post(SUB + query, json={"source_code": "print(1)", "language_id": 71, **(body or {})}, **kw)
    assert r.status_code == 201, r.get_json()
    assert set(r.get_json()) == {"token"}
    return r.get_json()["token"]  # type: ignore[no-any-return]


def finish(live: LiveApp, token: str, status: str = "COMPLETED", **result: Any) -> dict[str, Any]:
    finish_like_a_worker(live, token, status, **result)
    r = live.client.get(f"{SUB}/{token}?fields=*")
    assert r.status_code == 200, r.get_json()
    return r.get_json()  # type: ignore[no-any-return]


def test_a_submission_is_a_queued_execution_of_a_session_of_its_own(live: LiveApp) -> None:
    token = create(live, {"stdin": "in", "command_line_arguments": "a 'b c' $HOME;rm"})
    assert uuid.UUID(token).version == 4
    row = live.rows.one("executions", "id = :id", id=uid(token))
    assert (row["language"], row["status"], row["stdin"]) == ("python", "QUEUED", "in")
    # shlex.split: one argv entry per word, quotes removed, nothing a shell would expand.
    args = json.loads(row["args"]) if isinstance(row["args"], str) else row["args"]
    assert args == ["a", "b c", "$HOME;rm"]
    session = live.rows.one("code_sessions", "id = :id", id=row["session_id"])
    assert session["source_code"] == "print(1)"
    assert live.rows.count("judge0_submissions", "execution_id = :id", id=uid(token)) == 1
    assert live.enqueued.ids == [token]


def test_default_fields_and_all_fields(live: LiveApp) -> None:
    token = create(live)
    body = live.client.get(f"{SUB}/{token}").get_json()
    assert set(body) == {"token", "time", "memory", "stdout", "stderr", "compile_output", "message", "status"}
    assert body["status"] == {"id": 1, "description": "In Queue"}
    full = finish(live, token, stdout=b"1\n", cpu_time_ms=12, execution_time_ms=34, memory_kb=8000)
    assert full["status"] == {"id": 3, "description": "Accepted"}
    assert (full["stdout"], full["time"], full["wall_time"], full["memory"]) == ("1\n", "0.012", "0.034", 8000)
    assert full["language_id"] == 71 and full["source_code"] == "print(1)" and full["token"] == token
    assert full["finished_at"].endswith("Z") and full["exit_code"] == 0
    some = live.client.get(f"{SUB}/{token}?fields=stdout,status_id").get_json()
    assert some == {"stdout": "1\n", "status_id": 3}


def test_an_unknown_field_is_judge0s_400(live: LiveApp) -> None:
    token = create(live)
    r = live.client.get(f"{SUB}/{token}?fields=stdout,nope,worse")
    assert r.status_code == 400 and r.get_json() == {"error": "invalid fields: [nope, worse]"}


@pytest.mark.parametrize(
    ("status", "result", "expected", "judge0"),
    [
        ("COMPLETED", {"stdout": b"42  \n\n"}, "42\n", 3),
        ("COMPLETED", {"stdout": b"41\n"}, "42\n", 4),
        ("COMPLETED", {"stdout": b"anything"}, None, 3),
        ("TIMEOUT", {"reason": "TIME_LIMIT"}, None, 5),
        ("FAILED", {"reason": "COMPILE_ERROR", "compile_output": b"main.c:1: error"}, None, 6),
        ("FAILED", {"reason": "RUNTIME_ERROR", "signal": int(signal.SIGSEGV), "exit_code": None}, None, 7),
        ("FAILED", {"reason": "OUTPUT_LIMIT"}, None, 8),
        ("FAILED", {"reason": "RUNTIME_ERROR", "signal": int(signal.SIGFPE), "exit_code": None}, None, 9),
        ("FAILED", {"reason": "RUNTIME_ERROR", "signal": int(signal.SIGABRT), "exit_code": None}, None, 10),
        ("FAILED", {"reason": "RUNTIME_ERROR", "exit_code": 3}, None, 11),
        ("FAILED", {"reason": "MEMORY_LIMIT", "signal": int(signal.SIGKILL), "exit_code": None}, None, 12),
        ("FAILED", {"reason": "INTERNAL_ERROR"}, None, 13),
        ("CANCELLED", {"reason": "CANCELLED", "signal": int(signal.SIGKILL), "exit_code": None}, None, 12),
        ("CANCELLED", {"reason": "CANCELLED", "signal": None, "exit_code": None}, None, 12),  # never ran
    ],
)
def test_statuses_are_mapped_as_isolate_job_maps_them(
    live: LiveApp, status: str, result: dict[str, Any], expected: str | None, judge0: int
) -> None:
    token = create(live, {"expected_output": expected} if expected is not None else {})
    body = finish(live, token, status, **result)
    assert body["status"]["id"] == judge0, body
    statuses = {s["id"]: s["description"] for s in live.client.get("/judge0/statuses").get_json()}
    assert body["status"]["description"] == statuses[judge0]
    if judge0 == 11:
        assert body["message"] == "Exited with error status 3"


def test_base64_in_and_out_and_the_non_utf8_answer(live: LiveApp) -> None:
    token = create(
        live,
        {"source_code": b64("print(input())"), "stdin": b64("é\n"), "expected_output": b64("é")},
        query="?base64_encoded=true",
    )
    row = live.rows.one("executions", "id = :id", id=uid(token))
    assert row["stdin"] == "é\n"
    finish_like_a_worker(live, token, stdout=b"\xff\xfe raw\n")
    plain = live.client.get(f"{SUB}/{token}")
    assert plain.status_code == 400
    assert plain.get_json() == {
        "error": "some attributes for this submission cannot be converted to UTF-8, "
        "use base64_encoded=true query parameter"
    }
    encoded = live.client.get(f"{SUB}/{token}?base64_encoded=true&fields=stdout,expected_output,status")
    body = encoded.get_json()
    assert base64.b64decode(body["stdout"]) == b"\xff\xfe raw\n"
    assert base64.b64decode(body["expected_output"]) == "é".encode()
    assert body["status"]["id"] == 4
    batch = live.client.get(f"{SUB}/batch?tokens={token}")
    assert batch.status_code == 400 and "one or more submissions" in batch.get_json()["error"]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"source_code": ""}, "source_code", "can't be blank"),
        ({"language_id": None}, "language_id", "can't be blank"),
        ({"language_id": 999}, "language_id", "language with id 999 doesn't exist"),
        ({"compiler_options": "-O3"}, "compiler_options", "setting compiler options is not allowed"),
        ({"additional_files": 5}, "additional_files", "must be a base64-encoded zip archive"),
        ({"additional_files": "UEsDBA=="}, "additional_files", "is not a zip archive"),
        ({"additional_files": "%%%"}, "additional_files", "is not valid base64"),
        ({"enable_network": True}, "enable_network", "enabling network is not allowed"),
        ({"redirect_stderr_to_stdout": "sometimes"}, "redirect_stderr_to_stdout", "is not a boolean"),
        ({"redirect_stderr_to_stdout": 2}, "redirect_stderr_to_stdout", "is not a boolean"),
        ({"redirect_stderr_to_stdout": [True]}, "redirect_stderr_to_stdout", "is not a boolean"),
        ({"number_of_runs": 5}, "number_of_runs", "must be less than or equal to 1"),
        ({"command_line_arguments": "x" * 513}, "command_line_arguments", "is too long (maximum is 512 characters)"),
        ({"command_line_arguments": "'unclosed"}, "command_line_arguments", "cannot be split"),
        ({"cpu_time_limit": -1}, "cpu_time_limit", "must be greater than or equal to 0"),
        ({"memory_limit": 100}, "memory_limit", "must be greater than or equal to 2048"),
        ({"wall_time_limit": "soon"}, "wall_time_limit", "is not a number"),
        ({"cpu_time_limit": 10**400}, "cpu_time_limit", "is not a number"),  # no float can hold it
        (
            {"enable_per_process_and_thread_time_limit": True},
            "enable_per_process_and_thread_time_limit",
            "this option cannot be enabled",
        ),
        ({"callback_url": "ftp://example.com/x"}, "callback_url", "http"),
        ({"callback_url": "http://127.0.0.1:9/x"}, "callback_url", "loopback"),
    ],
)
def test_refused_submissions_get_judge0s_422_per_field_and_change_nothing(
    live: LiveApp, body: dict[str, Any], field: str, message: str
) -> None:
    before = live.rows.snapshot()
    r = live.client.post(SUB, json={"source_code": "print(1)", "language_id": 71, **body})
    assert r.status_code == 422, r.get_json()
    errors = r.get_json()
    assert field in errors and any(message in m for m in errors[field]), errors
    assert live.rows.snapshot() == before and live.enqueued.ids == []


@pytest.mark.parametrize(("given", "merged"), [(True, True), ("true", True), (1, True), (False, False),
                                               ("false", False), (None, False)])
def test_redirect_stderr_to_stdout_is_the_runs_merge_stderr(live: LiveApp, given: Any, merged: bool) -> None:
    body = {} if given is None else {"redirect_stderr_to_stdout": given}
    token = create(live, body)
    assert live.rows.one("executions", "id = :id", id=uid(token))["merge_stderr"] == merged
    assert live.client.get(f"{SUB}/{token}?fields=*").get_json()["redirect_stderr_to_stdout"] is merged
    assert live.client.get(f"{SUB}/{token}?fields=redirect_stderr_to_stdout").get_json() == {
        "redirect_stderr_to_stdout": merged}
    assert live.client.get(f"/api/v1/executions/{token}").get_json()["merge_stderr"] is merged


def stored_limits(live: LiveApp, token: str) -> dict[str, int]:
    limits = live.rows.one("executions", "id = :id", id=uid(token))["limits"]
    return json.loads(limits) if isinstance(limits, str) else limits  # type: ignore[no-any-return]


def test_units_become_livecode_limits_clamped_by_its_maxima(make_live: Any) -> None:
    live = make_live(max_time_limit_ms=5000, max_memory_limit_mb=128, max_stack_limit_kb=32768,
                     max_file_size_limit_kb=4096)
    token = create(
        live,
        {"cpu_time_limit": 1.5, "cpu_extra_time": 0.25, "wall_time_limit": 60, "memory_limit": 65536,
         "max_processes_and_or_threads": 10_000, "stack_limit": 100_000, "max_file_size": 512},
    )
    assert stored_limits(live, token) == {
        "cpu_time_ms": 1500,
        "cpu_extra_ms": 250,
        "time_limit_ms": 5000,
        "memory_limit_mb": 64,
        "max_processes": live.settings.max_processes,
        "stack_kb": 32768,
        "max_file_size_kb": 512,
        "max_output_bytes": 512 * 1024,  # isolate's stdout is a file: max_file_size bounds it too
    }
    # fields=* shows what the submission runs with: each limit cut to LiveCode's maximum.
    shown = live.client.get(f"{SUB}/{token}?fields=*").get_json()
    assert (shown["cpu_time_limit"], shown["cpu_extra_time"], shown["wall_time_limit"]) == ("1.5", "0.25", "5.0")
    assert (shown["stack_limit"], shown["max_file_size"], shown["memory_limit"]) == (32768, 512, 65536)
    assert shown["max_processes_and_or_threads"] == live.settings.max_processes
    # As isolate reads them, a stack or file size of 0 is no limit of its own: LiveCode's maximum.
    unlimited = create(live, {"stack_limit": 0, "max_file_size": 0})
    limits = stored_limits(live, unlimited)
    assert (limits["stack_kb"], limits["max_file_size_kb"]) == (32768, 4096) and "cpu_extra_ms" not in limits
    # Killed at cpu + extra: the extra time is cut so that the two stay within the maximum.
    extra = stored_limits(live, create(live, {"cpu_time_limit": 4.5, "cpu_extra_time": 5}))
    assert (extra["cpu_time_ms"], extra["cpu_extra_ms"]) == (4500, 500)
    none_left = stored_limits(live, create(live, {"cpu_time_limit": 5, "cpu_extra_time": 5}))
    assert "cpu_extra_ms" not in none_left
    info = live.client.get("/judge0/config_info").get_json()
    assert (info["max_wall_time_limit"], info["max_memory_limit"]) == (5.0, 128 * 1024)
    assert (info["max_cpu_extra_time"], info["max_stack_limit"], info["max_max_file_size"]) == (5.0, 32768, 4096)


def test_config_info_says_what_a_submission_without_options_runs_with(live: LiveApp) -> None:
    info = live.client.get("/judge0/config_info").get_json()
    limits = stored_limits(live, create(live))
    s = live.settings
    assert limits["cpu_time_ms"] == info["cpu_time_limit"] * 1000 == s.time_limit_ms
    assert limits["time_limit_ms"] == info["wall_time_limit"] * 1000
    assert limits.get("cpu_extra_ms", 0) == info["cpu_extra_time"] * 1000 == 0
    assert limits["memory_limit_mb"] * 1024 == info["memory_limit"]
    assert limits["stack_kb"] == info["stack_limit"] == s.stack_limit_kb
    assert limits["max_file_size_kb"] == info["max_file_size"] == s.file_size_limit_kb
    assert limits["max_processes"] == info["max_processes_and_or_threads"]
    assert info["callbacks_timeout"] == s.webhook_timeout_s and info["callbacks_max_tries"] == 3


def test_config_info_has_the_39_keys_with_unsupported_options_disabled(live: LiveApp) -> None:
    info = live.client.get("/judge0/config_info").get_json()
    assert len(info) == 39
    for key in (
        "enable_compiler_options",
        "allow_enable_network",
        "allow_enable_per_process_and_thread_time_limit",
        "allow_enable_per_process_and_thread_memory_limit",
    ):
        assert info[key] is False, key
    assert info["max_number_of_runs"] == 1 and info["max_submission_batch_size"] == 20
    # Judge0's key is the default of a submission that does not name it (config.rb): false, as
    # Judge0's own default; a submission may ask for true.
    assert info["redirect_stderr_to_stdout"] is False
    assert info["enable_wait_result"] is True and info["enable_callbacks"] is True


def test_languages_about_version_and_statuses(live: LiveApp) -> None:
    ids = {lang["id"] for lang in live.client.get("/judge0/languages/all").get_json()}
    assert ids == {71, 63, 50, 54, 52, 62, 60, 73, 46}
    assert live.client.get("/judge0/about").get_json()["version"] == "1.13.1"
    assert live.client.get("/judge0/version").get_data(as_text=True) == "1.13.1"
    python = live.client.get("/judge0/languages/71").get_json()
    assert python["source_file"] == "main.py" and python["name"].startswith("Python (")
    assert live.client.get("/judge0/languages/12").status_code == 404
    assert live.client.get("/judge0/languages/x").get_json() == {"error": "not found"}
    assert live.client.get("/judge0/languages/%C2%B2").status_code == 404  # a digit to isdigit(), not to int()
    assert [s["id"] for s in live.client.get("/judge0/statuses").get_json()] == list(range(1, 15))


def test_batch_gives_per_item_errors_and_reads_back_in_order(live: LiveApp) -> None:
    items = [
        {"source_code": b64("print(1)"), "language_id": 71},
        {"language_id": 71},
        {"source_code": b64("echo hi"), "language_id": 46, "enable_network": True},
    ]
    r = live.client.post(f"{SUB}/batch?base64_encoded=true", json={"submissions": items})
    assert r.status_code == 201
    out = r.get_json()
    assert set(out[0]) == {"token"} and out[1] == {"source_code": ["can't be blank"]}
    assert out[2] == {"enable_network": ["enabling network is not allowed"]}
    assert live.enqueued.ids == [out[0]["token"]]
    got = live.client.get(f"{SUB}/batch?tokens={out[0]['token']},{uuid.uuid4()},junk&fields=token").get_json()
    assert got == {"submissions": [{"token": out[0]["token"]}, None, None]}
    none_valid = live.client.post(f"{SUB}/batch", json={"submissions": [{"language_id": 1}]})
    assert none_valid.status_code == 422
    too_many = live.client.post(f"{SUB}/batch", json={"submissions": [{}] * 21})
    assert too_many.status_code == 400 and "less than or equal to 20" in too_many.get_json()["error"]
    assert live.client.post(f"{SUB}/batch", json={"submissions": []}).status_code == 400
    assert live.client.get(f"{SUB}/batch").status_code == 400


def test_list_delete_and_ownership(secure: LiveApp) -> None:
    live = secure
    alice, bob = sign_up(live), sign_up(live)
    key = live.client.post("/api/v1/api-keys", json={"name": "j0"}, headers=alice.headers).get_json()["key"]
    judge0 = {"X-Auth-Token": key}
    assert live.client.post(SUB, json={"source_code": "1", "language_id": 71}).status_code == 401
    token = create(live, headers=judge0)
    other = create(live, headers=bob.headers)
    page = live.client.get(f"{SUB}?per_page=10", headers=judge0).get_json()
    assert [s["token"] for s in page["submissions"]] == [token]
    assert page["meta"]["total_count"] == 1
    assert live.client.get(f"{SUB}/{other}", headers=judge0).status_code == 404
    assert live.client.get(f"{SUB}?page=0", headers=judge0).get_json() == {"error": "invalid page: 0"}
    far = live.client.get(f"{SUB}?page=99999999999999999999", headers=judge0)
    assert far.status_code == 200 and far.get_json()["submissions"] == []
    busy = live.client.delete(f"{SUB}/{token}", headers=judge0)
    assert busy.status_code == 400 and "status is 1 (In Queue)" in busy.get_json()["error"]
    finish_like_a_worker(live, token, stdout=b"ok")
    gone = live.client.delete(f"{SUB}/{token}", headers=judge0)
    assert gone.status_code == 200 and base64.b64decode(gone.get_json()["stdout"]) == b"ok"
    assert live.client.get(f"{SUB}/{token}", headers=judge0).status_code == 404
    assert live.rows.count("executions", "id = :id", id=uid(token)) == 0
    assert live.client.get("/judge0/workers", headers=judge0).status_code == 403
    assert live.client.get("/judge0/statistics", headers=judge0).get_json()["submissions"]["total"] == 0


def test_wait_true_answers_with_the_result_or_the_token(make_live: Any) -> None:
    live = make_live(max_wait_ms=300)
    # Nobody runs it: the wait runs out and the answer is the token, as without wait.
    r = live.client.post(f"{SUB}?wait=true", json={"source_code": "print(1)", "language_id": 71})
    assert r.status_code == 201 and set(r.get_json()) == {"token"}
    live2 = make_live(max_wait_ms=10_000)
    live2.enqueued.then = lambda eid: threading.Timer(
        0.05, finish_like_a_worker, (live2, eid), {"stdout": b"1\n"}
    ).start()
    r = live2.client.post(f"{SUB}?wait=true&fields=stdout,status", json={"source_code": "print(1)", "language_id": 71})
    assert r.status_code == 201 and r.get_json() == {"stdout": "1\n", "status": {"id": 3, "description": "Accepted"}}


def test_errors_keep_judge0s_shape(live: LiveApp) -> None:
    r = live.client.post(SUB, data="{", content_type="application/json")
    assert r.status_code == 400 and set(r.get_json()) == {"error"} and isinstance(r.get_json()["error"], str)
    r = live.client.post(SUB, data="x", content_type="text/plain")
    assert r.status_code == 415 and isinstance(r.get_json()["error"], str)
    r = live.client.get(f"{SUB}/{uuid.uuid4()}")
    assert r.status_code == 404 and r.get_json() == {"error": "not found"}
    r = live.client.post(SUB, json=["not", "an", "object"])
    assert r.status_code == 400 and isinstance(r.get_json()["error"], str)


def zipped(files: dict[str, bytes], sizes: dict[str, int] | None = None) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return base64.b64encode(buf.getvalue()).decode()


def test_additional_files_become_the_programs_other_files(live: LiveApp) -> None:
    archive = zipped({"helper.py": b"ANSWER = 42\n", "data/input.txt": b"x\n", "data/": b""})
    token = create(live, {"source_code": "import helper; print(helper.ANSWER)", "additional_files": archive})
    row = live.rows.one("executions", "id = :id", id=uid(token))
    session = live.rows.one("code_sessions", "id = :id", id=row["session_id"])
    files = json.loads(session["files"]) if isinstance(session["files"], str) else session["files"]
    paths = [f["path"] for f in files]
    assert session["entry"] == "main.py" and paths == ["main.py", "helper.py", "data/input.txt"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"../escape.py": b"x"}, "file path"),
        ({"/etc/passwd": b"x"}, "file path"),
        ({"main.py": b"print(2)"}, "file path"),  # clashes with the source
        ({"bin.dat": b"\xff\xfe\x00"}, "not UTF-8 text"),
        ({"bomb.txt": b"0" * (3 * 1024 * 1024)}, "bytes together"),
        ({f"f{i}.py": b"" for i in range(70)}, "at most"),
    ],
)
def test_additional_files_follow_the_programs_path_rules_and_limits(
    live: LiveApp, files: dict[str, bytes], message: str
) -> None:
    before = live.rows.snapshot()
    r = live.client.post(SUB, json={"source_code": "print(1)", "language_id": 71, "additional_files": zipped(files)})
    assert r.status_code == 422, r.get_json()
    assert any(message in m for m in r.get_json()["additional_files"]), r.get_json()
    assert live.rows.snapshot() == before and live.enqueued.ids == []
