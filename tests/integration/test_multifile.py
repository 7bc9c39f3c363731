"""Multi-file programs end to end, on PostgreSQL (distributed) and SQLite (embedded), each with a
real worker and the real sandbox: a session of several files runs as one program, an edit of one
file is what the next run runs (a header too: the compile cache keys on every file), batch
items run their session's files, and a bad path is refused before anything is queued."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.client import ApiClient

pytestmark = [pytest.mark.integration, pytest.mark.sandbox]

SESSIONS = "/api/v1/code-sessions"
PY = [
    {"path": "main.py", "content": "from shapes.area import area\nprint(area(6, 7))\n"},
    {"path": "shapes/__init__.py", "content": ""},
    {"path": "shapes/area.py", "content": "def area(w, h):\n    return w * h\n"},
]
C = [
    {
        "path": "main.c",
        "content": '#include <stdio.h>\n#include "lib/k.h"\nint main(void) { printf("%d\\n", K * twice(1)); }\n',
    },
    {"path": "lib/k.h", "content": "#define K 21\nint twice(int x);\n"},
    {"path": "lib/twice.c", "content": '#include "k.h"\nint twice(int x) { return 2 * x; }\n'},
]


def create(api: ApiClient, language: str, files: list[dict[str, str]], **body: Any) -> dict[str, Any]:
    r = api.request("POST", SESSIONS, json={"language": language, "files": files, **body})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def run(api: ApiClient, session_id: str, **body: Any) -> dict[str, Any]:
    r = api.execute(session_id, **body)
    assert r.status_code == 202, r.text
    return api.wait_execution(r.json()["execution_id"], timeout=180)


@pytest.mark.parametrize(("language", "files"), [("python", PY), ("c", C)])
def test_a_multi_file_program_runs_and_an_edit_of_one_file_is_run_next(
    api: ApiClient, language: str, files: list[dict[str, str]]
) -> None:
    session = create(api, language, files)
    first = run(api, session["session_id"])
    assert first["status"] == "COMPLETED", first
    assert first["stdout"] == "42\n" and first["entry"] == files[0]["path"]
    ran = api.request("GET", f"/api/v1/executions/{first['execution_id']}/program").json()
    assert ran["files"] == files and ran["entry"] == files[0]["path"]
    edited = (
        {
            "path": files[2]["path"],
            "content": files[2]["content"].replace("w * h", "w * h + 1").replace("2 * x", "2 * x + 1"),
        }
        if language == "python"
        else {"path": "lib/k.h", "content": "#define K 10\nint twice(int x);\n"}
    )
    r = api.request("PATCH", f"{SESSIONS}/{session['session_id']}", json={"file": edited, "version": 1})
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    second = run(api, session["session_id"])
    assert second["status"] == "COMPLETED", second
    assert second["stdout"] == ("43\n" if language == "python" else "20\n")


def test_batch_items_run_their_sessions_files(api: ApiClient) -> None:
    multi = create(api, "python", PY)["session_id"]
    single = api.create_session("print('one file')")["session_id"]
    r = api.request(
        "POST", "/api/v1/executions/batch", json={"executions": [{"session_id": multi}, {"session_id": single}]}
    )
    assert r.status_code == 202, r.text
    done = [api.wait_execution(e["execution_id"], timeout=120) for e in r.json()["executions"]]
    assert [(d["status"], d["stdout"]) for d in done] == [("COMPLETED", "42\n"), ("COMPLETED", "one file\n")]


@pytest.mark.parametrize("path", ["../escape.py", "/etc/cron.d/x", "lib/../../x.py", "a\\b.py"])
def test_a_path_that_would_leave_the_work_directory_is_refused(api: ApiClient, path: str) -> None:
    files = [{"path": "main.py", "content": "print(1)"}, {"path": path, "content": "x"}]
    r = api.request("POST", SESSIONS, json={"language": "python", "files": files})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "INVALID_FILE_PATH" and r.json()["error"]["details"]["path"] == path
    sid = api.create_session("print(1)")["session_id"]
    r = api.request("PATCH", f"{SESSIONS}/{sid}", json={"file": {"path": path, "content": "x"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_FILE_PATH", r.text
    assert api.request("GET", f"{SESSIONS}/{sid}").json()["version"] == 1


def test_test_cases_run_a_multi_file_program(api: ApiClient) -> None:
    """Test cases (compile once, run many) take the session's files too."""
    files = [
        {"path": "main.py", "content": "from ops import add\nprint(add(*map(int, input().split())))\n"},
        {"path": "ops.py", "content": "def add(a, b):\n    return a + b\n"},
    ]
    session = create(api, "python", files)
    done = run(
        api,
        session["session_id"],
        tests=[{"stdin": "1 2\n", "expected_output": "3"}, {"stdin": "2 2\n", "expected_output": "5"}],
    )
    assert done["status"] == "COMPLETED", done
    assert [t["verdict"] for t in done["tests"]] == ["ACCEPTED", "WRONG_ANSWER"]
    assert done["summary"] == {"passed": 1, "total": 2, "verdict": "WRONG_ANSWER"}
