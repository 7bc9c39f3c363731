"""GET /api/v1/executions/{id}/files[/{path}] (issue 13, part 3): listing, bytes, headers,
ownership, deletion with the execution, expiry."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest

from livecode.models import utcnow
from livecode.sandbox.outputs import OutputFile
from livecode.services.output_files import expire_files
from tests.support.inprocess import LiveApp, expect_error, finish_like_a_worker, uid
from tests.support.users import sign_up

EXECUTIONS = "/api/v1/executions"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
FILES = [
    OutputFile("plot.png", PNG),
    OutputFile("data/table.csv", b"a,b\n1,2\n"),
    OutputFile("page.svg", b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"),
    OutputFile("caf\u00e9 notes.bin", b"\x00\xff"),
]


def finished_with_files(live: LiveApp, headers: dict[str, str] | None = None, **result: Any) -> str:
    sid = live.session(headers=headers or {})["session_id"]
    eid = live.execute(sid, headers=headers or {})["execution_id"]
    finish_like_a_worker(live, eid, files=FILES, **result)
    return str(eid)


def test_lists_the_files_by_path_with_size_type_and_digest(live: LiveApp) -> None:
    eid = finished_with_files(live, files_truncated=True)
    r = live.client.get(f"{EXECUTIONS}/{eid}/files")
    assert r.status_code == 200
    listed = r.get_json()
    assert [f["path"] for f in listed] == sorted(f.path for f in FILES)
    by_path = {f["path"]: f for f in listed}
    assert by_path["plot.png"] == {
        "path": "plot.png",
        "size": len(PNG),
        "content_type": "image/png",
        "sha256": hashlib.sha256(PNG).hexdigest(),
    }
    assert by_path["data/table.csv"]["content_type"] == "text/csv; charset=utf-8"
    assert by_path["caf\u00e9 notes.bin"]["content_type"] == "application/octet-stream"
    assert live.client.get(f"{EXECUTIONS}/{eid}").get_json()["files_truncated"] is True


def test_a_run_without_files_lists_none(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    eid = live.execute(sid)["execution_id"]
    assert live.client.get(f"{EXECUTIONS}/{eid}/files").get_json() == []  # queued: nothing yet
    finish_like_a_worker(live, eid)
    assert live.client.get(f"{EXECUTIONS}/{eid}/files").get_json() == []
    assert live.client.get(f"{EXECUTIONS}/{eid}").get_json()["files_truncated"] is False


def test_an_image_comes_back_inline_with_its_bytes_and_safe_headers(live: LiveApp) -> None:
    eid = finished_with_files(live)
    r = live.client.get(f"{EXECUTIONS}/{eid}/files/plot.png")
    assert r.status_code == 200 and r.data == PNG
    assert r.headers["Content-Type"] == "image/png"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Content-Disposition"].startswith("inline;")
    assert "sandbox" in r.headers["Content-Security-Policy"]
    assert r.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    assert r.headers["ETag"].strip('"') == hashlib.sha256(PNG).hexdigest()


@pytest.mark.parametrize("path", ["data/table.csv", "page.svg", "caf\u00e9 notes.bin"])
def test_other_files_are_downloads_that_cannot_run_script(live: LiveApp, path: str) -> None:
    eid = finished_with_files(live)
    r = live.client.get(f"{EXECUTIONS}/{eid}/files/{path}")
    assert r.status_code == 200 and r.data == next(f.data for f in FILES if f.path == path)
    assert r.headers["Content-Disposition"].startswith("attachment;")
    assert "sandbox" in r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "text/html" not in r.headers["Content-Type"]


@pytest.mark.parametrize(
    "path",
    ["nope.png", "../plot.png", "data/../plot.png", "data/./table.csv", "PLOT.PNG", "plot.png/", "a\\b", "x" * 2000],
)
def test_a_missing_or_tricky_path_is_a_404(live: LiveApp, path: str) -> None:
    eid = finished_with_files(live)
    r = live.client.get(f"{EXECUTIONS}/{eid}/files/{path}")
    assert r.status_code == 404, (path, r.status_code)
    if r.is_json:  # werkzeug may normalise a path away from the route first: still no file
        assert r.get_json()["error"]["code"] in {"FILE_NOT_FOUND", "NOT_FOUND"}


def test_bad_and_unknown_execution_ids(live: LiveApp) -> None:
    expect_error(live.client.get(f"{EXECUTIONS}/not-a-uuid/files"), 400)
    expect_error(live.client.get(f"{EXECUTIONS}/not-a-uuid/files/plot.png"), 400)
    missing = "00000000-0000-4000-8000-000000000000"
    expect_error(live.client.get(f"{EXECUTIONS}/{missing}/files"), 404, "EXECUTION_NOT_FOUND")
    expect_error(live.client.get(f"{EXECUTIONS}/{missing}/files/plot.png"), 404, "EXECUTION_NOT_FOUND")


def test_another_users_files_are_a_404_as_their_execution_is(secure: LiveApp) -> None:
    alice, mallory = sign_up(secure), sign_up(secure)
    eid = finished_with_files(secure, headers=alice.headers)
    assert secure.client.get(f"{EXECUTIONS}/{eid}/files", headers=alice.headers).status_code == 200
    assert secure.client.get(f"{EXECUTIONS}/{eid}/files/plot.png", headers=alice.headers).data == PNG
    expect_error(secure.client.get(f"{EXECUTIONS}/{eid}/files", headers=mallory.headers), 404, "EXECUTION_NOT_FOUND")
    r = secure.client.get(f"{EXECUTIONS}/{eid}/files/plot.png", headers=mallory.headers)
    expect_error(r, 404, "EXECUTION_NOT_FOUND")
    expect_error(secure.client.get(f"{EXECUTIONS}/{eid}/files"), 401)


def test_files_are_deleted_with_their_session(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    eid = live.execute(sid)["execution_id"]
    finish_like_a_worker(live, eid, files=FILES)
    assert live.rows.count("execution_outputs", "execution_id = :e", e=uid(eid)) == len(FILES)
    assert live.client.delete(f"/api/v1/code-sessions/{sid}").status_code == 204
    assert live.rows.count("execution_outputs") == 0


def test_expiry_deletes_old_files_and_keeps_the_execution(make_live: Any) -> None:
    live = make_live(output_file_retention_days=2)
    eid = finished_with_files(live)
    assert expire_files(live.db, live.settings, now=utcnow() + timedelta(days=1)) == 0
    assert expire_files(live.db, live.settings, now=utcnow() + timedelta(days=3)) == len(FILES)
    assert live.client.get(f"{EXECUTIONS}/{eid}/files").get_json() == []
    assert live.client.get(f"{EXECUTIONS}/{eid}").status_code == 200


def test_expiry_is_off_by_default(live: LiveApp) -> None:
    finished_with_files(live)
    assert expire_files(live.db, live.settings, now=utcnow() + timedelta(days=3650)) == 0


def test_the_routes_are_documented(live: LiveApp) -> None:
    spec = live.client.get("/swagger.json").get_json()
    assert "/api/v1/executions/{execution_id}/files" in spec["paths"]
    assert "/api/v1/executions/{execution_id}/files/{path}" in spec["paths"]
    assert "ExecutionFile" in spec["definitions"]
    assert "files_truncated" in spec["definitions"]["Execution"]["properties"]
