"""Multi-file sessions on the in-process floor: create, read, autosave (whole set, one file,
entry) with version locking, every bad path refused, the single-file form unchanged, and the
snapshot an execution takes."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.inprocess import LiveApp, expect_error, finish_like_a_worker, uid

SESSIONS = "/api/v1/code-sessions"
TWO = [
    {"path": "main.py", "content": "from lib.util import twice\nprint(twice(21))\n"},
    {"path": "lib/util.py", "content": "def twice(x):\n    return 2 * x\n"},
    {"path": "lib/__init__.py", "content": ""},
]


def create(live: LiveApp, **body: Any) -> dict[str, Any]:
    r = live.client.post(SESSIONS, json={"language": "python", **body})
    assert r.status_code == 201, r.get_json()
    return r.get_json()  # type: ignore[no-any-return]


def test_create_with_files_returns_them_in_order_with_the_entry(live: LiveApp) -> None:
    body = create(live, files=TWO)
    assert body["files"] == TWO and body["entry"] == "main.py"
    assert body["source_code"] == TWO[0]["content"]  # the single-file view: the entry's content
    got = live.client.get(f"{SESSIONS}/{body['session_id']}").get_json()
    assert got["files"] == TWO and got["entry"] == "main.py" and got["version"] == 1


def test_the_entry_content_is_stored_once(live: LiveApp) -> None:
    sid = create(live, files=TWO)["session_id"]
    row = live.rows.one("code_sessions", "id = :id", id=uid(sid))
    assert row["source_code"] == TWO[0]["content"] and row["entry"] == "main.py"
    assert '"content": null' in row["files"].replace('"content":null', '"content": null')


def test_single_file_sessions_read_as_one_file_at_the_default_path(live: LiveApp) -> None:
    sid = live.session("print(1)")["session_id"]
    got = live.client.get(f"{SESSIONS}/{sid}").get_json()
    assert got["files"] == [{"path": "main.py", "content": "print(1)"}] and got["entry"] == "main.py"
    row = live.rows.one("code_sessions", "id = :id", id=uid(sid))
    assert row["files"] is None and row["entry"] is None
    java = create(live, language="java", source_code="class Main {}")
    assert java["entry"] == "Main.java" and java["files"] == [{"path": "Main.java", "content": "class Main {}"}]


def test_files_of_just_the_default_file_are_stored_as_a_single_file_session(live: LiveApp) -> None:
    sid = create(live, files=[{"path": "main.py", "content": "print(2)"}])["session_id"]
    row = live.rows.one("code_sessions", "id = :id", id=uid(sid))
    assert (row["source_code"], row["files"], row["entry"]) == ("print(2)", None, None)


def test_entry_is_chosen_named_or_required(live: LiveApp) -> None:
    only = create(live, files=[{"path": "app.py", "content": "print(3)"}])
    assert only["entry"] == "app.py" and only["source_code"] == "print(3)"
    named = create(live, files=[{"path": "a.py", "content": "1"}, {"path": "b.py", "content": "2"}], entry="b.py")
    assert named["entry"] == "b.py" and named["source_code"] == "2"
    before = live.rows.snapshot()
    expect_error(
        live.client.post(
            SESSIONS,
            json={"language": "python", "files": [{"path": "a.py", "content": "1"}, {"path": "b.py", "content": "2"}]},
        ),
        400,
        "INVALID_ENTRY",
    )
    expect_error(
        live.client.post(SESSIONS, json={"language": "python", "files": TWO, "entry": "nope.py"}), 400, "INVALID_ENTRY"
    )
    assert live.rows.snapshot() == before


def test_source_code_beside_files_is_the_entry(live: LiveApp) -> None:
    body = create(live, source_code="import helper\n", files=[{"path": "helper.py", "content": "X = 1\n"}])
    assert body["entry"] == "main.py"
    assert body["files"] == [
        {"path": "main.py", "content": "import helper\n"},
        {"path": "helper.py", "content": "X = 1\n"},
    ]
    err = expect_error(
        live.client.post(SESSIONS, json={"language": "python", "source_code": "x", "files": TWO}), 400, "INVALID_FILES"
    )
    assert "main.py" in err["message"]


BAD_PATHS = [
    "../x.py",
    "a/../../x.py",
    "/etc/passwd",
    "a\\b.py",
    "a\u0000b.py",
    "./x.py",
    "a//b.py",
    "dir/",
    "",
    "-rf",
    "/".join(["d"] * 20) + "/x.py",
    "x" * 300,
    "out",  # the output directory every sandbox starts with
]


@pytest.mark.parametrize("path", BAD_PATHS, ids=range(len(BAD_PATHS)))
def test_a_bad_path_is_a_400_naming_it_and_stores_nothing(live: LiveApp, path: str) -> None:
    before = live.rows.snapshot()
    files = [{"path": "main.py", "content": "print(1)"}, {"path": path, "content": "x"}]
    err = expect_error(
        live.client.post(SESSIONS, json={"language": "python", "files": files}), 400, "INVALID_FILE_PATH"
    )
    assert err["details"]["path"] == path[:1024]
    assert repr(path[:200])[:60] in err["message"]
    assert live.rows.snapshot() == before


def test_duplicates_and_a_file_used_as_a_directory_are_refused(live: LiveApp) -> None:
    dup = [{"path": "main.py", "content": "1"}, {"path": "main.py", "content": "2"}]
    err = expect_error(live.client.post(SESSIONS, json={"language": "python", "files": dup}), 400, "INVALID_FILE_PATH")
    assert err["details"]["path"] == "main.py" and "twice" in err["message"]
    clash = [{"path": "main.py", "content": "1"}, {"path": "lib", "content": ""}, {"path": "lib/a.py", "content": ""}]
    err = expect_error(
        live.client.post(SESSIONS, json={"language": "python", "files": clash}), 400, "INVALID_FILE_PATH"
    )
    assert err["details"]["path"] == "lib/a.py"


@pytest.mark.parametrize(
    ("files", "code"),
    [
        ("main.py", "INVALID_FILES"),
        ([], "INVALID_FILES"),
        ([["main.py", "x"]], "INVALID_FILES"),
        ([{"path": "main.py"}], "INVALID_FILES"),
        ([{"path": 3, "content": "x"}], "INVALID_FILES"),
        ([{"path": "main.py", "content": "x", "mode": 7}], "INVALID_FILES"),
        ([{"path": "main.py", "content": "a\u0000b"}], "INVALID_SOURCE"),
    ],
)
def test_a_wrong_shape_is_a_400(live: LiveApp, files: Any, code: str) -> None:
    before = live.rows.snapshot()
    expect_error(live.client.post(SESSIONS, json={"language": "python", "files": files}), 400, code)
    assert live.rows.snapshot() == before


def test_count_and_size_limits(make_live: Any) -> None:
    live = make_live(max_files=3, max_files_bytes=100)
    before = live.rows.snapshot()
    four = [{"path": f"f{i}.py", "content": ""} for i in range(3)] + [{"path": "main.py", "content": ""}]
    err = expect_error(live.client.post(SESSIONS, json={"language": "python", "files": four}), 400, "TOO_MANY_FILES")
    assert err["details"] == {"limit": 3, "count": 4}
    big = [{"path": "main.py", "content": "x" * 60}, {"path": "b.py", "content": "y" * 60}]
    err = expect_error(live.client.post(SESSIONS, json={"language": "python", "files": big}), 413, "FILES_TOO_LARGE")
    assert err["details"]["size_bytes"] == 120
    one = [{"path": "main.py", "content": "x" * 101}]
    expect_error(live.client.post(SESSIONS, json={"language": "python", "files": one}), 413, "FILES_TOO_LARGE")
    assert live.rows.snapshot() == before
    sid = create(live, files=[{"path": "main.py", "content": "x" * 50}, {"path": "b.py", "content": "y" * 50}])[
        "session_id"
    ]
    expect_error(
        live.client.patch(f"{SESSIONS}/{sid}", json={"file": {"path": "c.py", "content": "z"}}), 413, "FILES_TOO_LARGE"
    )
    expect_error(live.client.patch(f"{SESSIONS}/{sid}", json={"files": four}), 400, "TOO_MANY_FILES")
    assert live.client.get(f"{SESSIONS}/{sid}").get_json()["version"] == 1


def test_autosave_of_the_whole_set_with_version_locking(live: LiveApp) -> None:
    sid = create(live, files=TWO)["session_id"]
    new = [*TWO, {"path": "data/in.txt", "content": "42\n"}]
    r = live.client.patch(f"{SESSIONS}/{sid}", json={"files": new, "version": 1})
    assert r.status_code == 200 and r.get_json()["version"] == 2 and r.headers["ETag"] == f'"{sid}-v2"'
    got = live.client.get(f"{SESSIONS}/{sid}").get_json()
    assert got["files"] == new and got["entry"] == "main.py"
    # an edit of version 1 now conflicts and changes nothing
    err = expect_error(
        live.client.patch(f"{SESSIONS}/{sid}", json={"files": TWO, "version": 1}), 409, "VERSION_CONFLICT"
    )
    assert err["details"] == {"current_version": 2, "your_version": 1}
    r = live.client.patch(f"{SESSIONS}/{sid}", json={"files": TWO}, headers={"If-Match": f'"{sid}-v1"'})
    expect_error(r, 409, "VERSION_CONFLICT")
    assert live.client.get(f"{SESSIONS}/{sid}").get_json()["files"] == new
    # without a version the save applies to whatever is current
    assert live.client.patch(f"{SESSIONS}/{sid}", json={"files": TWO}).get_json()["version"] == 3


def test_autosave_keeps_the_entry_renames_and_deletes(live: LiveApp) -> None:
    sid = create(live, files=[{"path": "a.py", "content": "1"}, {"path": "b.py", "content": "2"}], entry="b.py")[
        "session_id"
    ]
    # b.py is still there: it stays the entry
    live.client.patch(
        f"{SESSIONS}/{sid}", json={"files": [{"path": "b.py", "content": "22"}, {"path": "c.py", "content": "3"}]}
    )
    got = live.client.get(f"{SESSIONS}/{sid}").get_json()
    assert got["entry"] == "b.py" and got["source_code"] == "22"
    # renamed away: name the new entry, or it is refused
    renamed = [{"path": "run.py", "content": "22"}, {"path": "c.py", "content": "3"}]
    expect_error(live.client.patch(f"{SESSIONS}/{sid}", json={"files": renamed}), 400, "INVALID_ENTRY")
    live.client.patch(f"{SESSIONS}/{sid}", json={"files": renamed, "entry": "run.py"})
    got = live.client.get(f"{SESSIONS}/{sid}").get_json()
    assert got["files"] == renamed and got["entry"] == "run.py"
    # just the entry
    live.client.patch(f"{SESSIONS}/{sid}", json={"entry": "c.py"})
    assert live.client.get(f"{SESSIONS}/{sid}").get_json()["source_code"] == "3"
    expect_error(live.client.patch(f"{SESSIONS}/{sid}", json={"entry": "gone.py"}), 400, "INVALID_ENTRY")


def test_autosave_of_one_file(live: LiveApp) -> None:
    sid = create(live, files=TWO)["session_id"]
    r = live.client.patch(
        f"{SESSIONS}/{sid}",
        json={"file": {"path": "lib/util.py", "content": "def twice(x):\n    return x + x\n"}, "version": 1},
    )
    assert r.status_code == 200 and r.get_json()["version"] == 2
    r = live.client.patch(f"{SESSIONS}/{sid}", json={"file": {"path": "notes.md", "content": "# hi"}, "version": 2})
    got = live.client.get(f"{SESSIONS}/{sid}").get_json()
    assert [f["path"] for f in got["files"]] == ["main.py", "lib/util.py", "lib/__init__.py", "notes.md"]
    assert got["files"][1]["content"].endswith("x + x\n") and got["version"] == 3
    expect_error(
        live.client.patch(f"{SESSIONS}/{sid}", json={"file": {"path": "../x", "content": ""}}), 400, "INVALID_FILE_PATH"
    )
    expect_error(
        live.client.patch(f"{SESSIONS}/{sid}", json={"file": {"path": "x.py", "content": ""}, "version": 1}),
        409,
        "VERSION_CONFLICT",
    )
    expect_error(live.client.patch(f"{SESSIONS}/{sid}", json={"files": TWO, "file": TWO[0]}), 400, "INVALID_FILES")


def test_source_code_autosave_of_a_multi_file_session_edits_the_entry(live: LiveApp) -> None:
    """An old client that only knows source_code keeps working on a multi-file session."""
    sid = create(live, files=TWO)["session_id"]
    r = live.client.patch(f"{SESSIONS}/{sid}", json={"source_code": "print('new')\n", "version": 1})
    assert r.status_code == 200
    got = live.client.get(f"{SESSIONS}/{sid}").get_json()
    assert got["files"][0] == {"path": "main.py", "content": "print('new')\n"} and got["files"][1:] == TWO[1:]


def test_a_single_file_session_becomes_multi_file_and_back(live: LiveApp) -> None:
    sid = live.session("print(1)")["session_id"]
    live.client.patch(f"{SESSIONS}/{sid}", json={"file": {"path": "util.py", "content": "X = 1"}})
    got = live.client.get(f"{SESSIONS}/{sid}").get_json()
    assert got["files"] == [{"path": "main.py", "content": "print(1)"}, {"path": "util.py", "content": "X = 1"}]
    live.client.patch(f"{SESSIONS}/{sid}", json={"files": [{"path": "main.py", "content": "print(5)"}]})
    row = live.rows.one("code_sessions", "id = :id", id=uid(sid))
    assert (row["source_code"], row["files"], row["entry"]) == ("print(5)", None, None)


def test_an_execution_snapshots_the_files(live: LiveApp) -> None:
    sid = create(live, files=TWO)["session_id"]
    eid = live.execute(sid)["execution_id"]
    # editing afterwards does not change what the run runs
    live.client.patch(f"{SESSIONS}/{sid}", json={"file": {"path": "lib/util.py", "content": "changed"}})
    from livecode.services import executions

    claimed = executions.claim_execution(live.db, uuid.UUID(eid), "test-worker")
    assert claimed is not None and claimed.entry == "main.py"
    assert claimed.files == [(f["path"], f["content"]) for f in TWO]
    assert claimed.source_code == TWO[0]["content"]
    assert live.rows.count("execution_files", "execution_id = :e", e=uid(eid)) == 3
    # the empty lib/__init__.py and any repeated content are stored once
    assert live.rows.count("sources") == 3


def test_a_single_file_execution_has_no_file_rows(live: LiveApp) -> None:
    sid = live.session("print(1)")["session_id"]
    eid = live.execute(sid)["execution_id"]
    finish_like_a_worker(live, eid)
    got = live.client.get(f"/api/v1/executions/{eid}").get_json()
    assert got["entry"] is None and live.rows.count("execution_files") == 0


def test_batch_items_snapshot_their_sessions_files(live: LiveApp) -> None:
    multi = create(live, files=TWO)["session_id"]
    single = live.session("print(1)")["session_id"]
    r = live.client.post(
        "/api/v1/executions/batch",
        json={"executions": [{"session_id": multi}, {"session_id": single}, {"session_id": multi, "stdin": "x"}]},
    )
    assert r.status_code == 202, r.get_json()
    ids = [e["execution_id"] for e in r.get_json()["executions"]]
    assert [live.rows.count("execution_files", "execution_id = :e", e=uid(i)) for i in ids] == [3, 0, 3]
    got = live.client.get(f"/api/v1/executions/{ids[0]}").get_json()
    assert got["entry"] == "main.py"


def test_source_collection_keeps_sources_that_execution_files_use(live: LiveApp) -> None:
    from datetime import timedelta

    from livecode.models import utcnow
    from livecode.services import storage

    sid = create(live, files=TWO)["session_id"]
    live.execute(sid)
    later = utcnow() + timedelta(seconds=live.settings.source_gc_grace_s + 3600)
    assert storage.collect_sources(live.db, live.settings, now=later) == 0
    assert live.rows.count("sources") == 3
    live.client.delete(f"{SESSIONS}/{sid}")  # its executions and their file rows go with it
    assert live.rows.count("execution_files") == 0
    assert storage.collect_sources(live.db, live.settings, now=later) == 3


@pytest.mark.parametrize(
    "body",
    [
        {"language": "python", "files": [{"path": "a\ud800.py", "content": "x"}]},
        {"language": "python", "files": [{"path": "main.py", "content": "\ud800"}]},
        {"language": "python", "files": [{"path": "main.py", "content": "x"}], "entry": "\ud800"},
        {"language": "python", "files": [{"path": "main.py", "content": "x"}], "entry": 5},
        {"language": "python", "source_code": "x", "entry": ""},
        {"language": "python", "entry": "main.py"},
    ],
    ids=range(6),
)
def test_odd_input_is_a_4xx_never_a_5xx(live: LiveApp, body: dict[str, Any]) -> None:
    before = live.rows.snapshot()
    r = live.client.post(SESSIONS, json=body)
    assert 400 <= r.status_code < 500, r.get_data()[:300]
    assert live.rows.snapshot() == before
    sid = live.session("print(1)")["session_id"]
    patch = {k: v for k, v in body.items() if k != "language"}
    r = live.client.patch(f"{SESSIONS}/{sid}", json=patch)
    assert r.status_code < 500, r.get_data()[:300]


def test_an_execution_shows_the_program_it_ran(live: LiveApp) -> None:
    sid = create(live, files=TWO)["session_id"]
    eid = live.execute(sid)["execution_id"]
    live.client.patch(f"{SESSIONS}/{sid}", json={"file": {"path": "lib/util.py", "content": "edited later"}})
    got = live.client.get(f"/api/v1/executions/{eid}/program")
    assert got.status_code == 200
    assert got.get_json() == {"execution_id": eid, "language": "python", "entry": "main.py", "files": TWO}
    single = live.execute(live.session("print(7)")["session_id"])["execution_id"]
    assert live.client.get(f"/api/v1/executions/{single}/program").get_json()["files"] == [
        {"path": "main.py", "content": "print(7)"}
    ]
    expect_error(live.client.get(f"/api/v1/executions/{uuid.uuid4()}/program"), 404, "EXECUTION_NOT_FOUND")
    expect_error(live.client.get("/api/v1/executions/nope/program"), 400)


def test_another_users_execution_program_is_not_found(secure: LiveApp) -> None:
    from tests.support.users import sign_up

    ada, bob = sign_up(secure), sign_up(secure)
    r = secure.client.post(SESSIONS, json={"language": "python", "files": TWO}, headers=ada.headers)
    sid = r.get_json()["session_id"]
    eid = secure.execute(sid, headers=ada.headers)["execution_id"]
    assert secure.client.get(f"/api/v1/executions/{eid}/program", headers=ada.headers).status_code == 200
    expect_error(
        secure.client.get(f"/api/v1/executions/{eid}/program", headers=bob.headers), 404, "EXECUTION_NOT_FOUND"
    )
    expect_error(secure.client.get(f"/api/v1/executions/{eid}/program"), 401)


def test_the_swagger_document_describes_files_and_the_program(live: LiveApp) -> None:
    doc = live.client.get("/swagger.json").get_json()
    assert "/api/v1/executions/{execution_id}/program" in doc["paths"]
    create_body = doc["definitions"]["CodeSessionCreate"]["properties"]
    assert {"files", "entry", "source_code"} <= set(create_body)
    assert {"files", "file", "entry"} <= set(doc["definitions"]["CodeSessionAutosave"]["properties"])
