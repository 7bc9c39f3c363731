"""Session history (issue 15, part 1) on the in-process floor: versions made by runs, checkpoints,
coalesced autosaves and restores; the list, content, diff and restore routes; retention; and the
ownership and bad-input rules."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from tests.support.inprocess import LiveApp, expect_error, finish_like_a_worker, uid
from tests.support.users import sign_up

SESSIONS = "/api/v1/code-sessions"
TWO = [
    {"path": "main.py", "content": "from lib.util import twice\nprint(twice(21))\n"},
    {"path": "lib/util.py", "content": "def twice(x):\n    return 2 * x\n"},
]


def versions(live: LiveApp, sid: str, **kw: Any) -> list[dict[str, Any]]:
    r = live.client.get(f"{SESSIONS}/{sid}/versions", **kw)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["items"]  # type: ignore[no-any-return]


def checkpoint(live: LiveApp, sid: str, **body: Any) -> dict[str, Any]:
    r = live.client.post(f"{SESSIONS}/{sid}/versions", json=body)
    assert r.status_code == 201, r.get_json()
    return r.get_json()  # type: ignore[no-any-return]


def save(live: LiveApp, sid: str, **body: Any) -> dict[str, Any]:
    r = live.client.patch(f"{SESSIONS}/{sid}", json=body)
    assert r.status_code == 200, r.get_json()
    return r.get_json()  # type: ignore[no-any-return]


def age_autosave(live: LiveApp, sid: str, seconds: float = 3600) -> None:
    """The controllable clock: the last autosave version is made `seconds` older."""
    from livecode.models import utcnow

    live.rows.execute(
        "UPDATE code_sessions SET history_at = :t WHERE id = :id", t=utcnow() - timedelta(seconds=seconds), id=uid(sid)
    )


def test_a_run_makes_a_version_and_the_execution_names_it(live: LiveApp) -> None:
    sid = live.session("print(1)")["session_id"]
    first = live.execute(sid)["execution_id"]
    assert live.client.get(f"/api/v1/executions/{first}").get_json()["version"] == 1
    finish_like_a_worker(live, first)
    again = live.execute(sid)["execution_id"]  # the same code: the same version, no new row
    assert live.client.get(f"/api/v1/executions/{again}").get_json()["version"] == 1
    finish_like_a_worker(live, again)
    save(live, sid, source_code="print(2)")
    third = live.execute(sid)["execution_id"]
    assert live.client.get(f"/api/v1/executions/{third}").get_json()["version"] == 2
    items = versions(live, sid)
    assert [(v["version"], v["reason"]) for v in items] == [(2, "execution"), (1, "execution")]
    assert items[0]["execution_id"] == third and items[1]["execution_id"] == first
    assert live.client.get(f"{SESSIONS}/{sid}/versions/2").get_json()["source_code"] == "print(2)"


def test_a_refused_run_makes_no_version(live: LiveApp) -> None:
    sid = live.session("print(1)")["session_id"]
    live.execute(sid)
    save(live, sid, source_code="print(2)")
    r = live.client.post(f"/api/v1/executions/session/{sid}/execute", json={})
    assert r.status_code == 409  # one active interactive run per session
    assert [v["version"] for v in versions(live, sid)] == [1]


def test_checkpoint_list_and_content(live: LiveApp) -> None:
    r = live.client.post(SESSIONS, json={"language": "python", "files": TWO})
    sid = r.get_json()["session_id"]
    made = checkpoint(live, sid, label="before refactor")
    assert made["version"] == 1 and made["reason"] == "checkpoint" and made["label"] == "before refactor"
    assert made["author"] is None and made["created_at"]
    unlabelled = live.client.post(f"{SESSIONS}/{sid}/versions")  # no body at all is fine
    assert unlabelled.status_code == 201 and unlabelled.get_json()["label"] is None
    got = live.client.get(f"{SESSIONS}/{sid}/versions/1").get_json()
    assert got["files"] == TWO and got["entry"] == "main.py" and got["source_code"] == TWO[0]["content"]
    # one file set and its sources, however many versions hold them
    assert live.rows.count("file_sets") == 1 and live.rows.count("sources") == 2
    page = live.client.get(f"{SESSIONS}/{sid}/versions?per_page=1&page=2").get_json()
    assert page["total"] == 2 and [v["version"] for v in page["items"]] == [1]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"label": 5}, 400, None),
        ({"label": "x" * 201}, 400, None),
        ({"nope": 1}, 400, None),
    ],
)
def test_bad_checkpoints_change_nothing(live: LiveApp, body: dict[str, Any], status: int, code: str | None) -> None:
    sid = live.session()["session_id"]
    before = live.rows.snapshot()
    expect_error(live.client.post(f"{SESSIONS}/{sid}/versions", json=body), status, code)
    assert live.rows.snapshot() == before


def test_autosave_makes_at_most_one_version_per_interval(live: LiveApp) -> None:
    sid = live.session("a = 0")["session_id"]
    for i in range(5):  # within the first interval of editing: no version
        save(live, sid, source_code=f"a = {i + 1}")
    assert versions(live, sid) == []
    age_autosave(live, sid)
    save(live, sid, source_code="a = 6")  # the interval has passed: this save makes one
    for i in range(5):
        save(live, sid, source_code=f"a = {i + 7}")
    items = versions(live, sid)
    assert [(v["version"], v["reason"]) for v in items] == [(1, "autosave")]
    assert live.client.get(f"{SESSIONS}/{sid}/versions/1").get_json()["source_code"] == "a = 6"
    age_autosave(live, sid)
    save(live, sid, file={"path": "extra.py", "content": "x = 1\n"})  # the multi-file path too
    got = live.client.get(f"{SESSIONS}/{sid}/versions/2").get_json()
    assert got["reason"] == "autosave" and [f["path"] for f in got["files"]] == ["main.py", "extra.py"]


def test_autosave_interval_is_a_setting(make_live: Any) -> None:
    live = make_live(history_autosave_interval_s=0)
    sid = live.session("a = 0")["session_id"]
    age_autosave(live, sid)
    for i in range(3):
        save(live, sid, source_code=f"a = {i + 1}")
    assert [v["version"] for v in versions(live, sid)] == [3, 2, 1]


def test_diff_per_file_with_added_and_removed_files(live: LiveApp) -> None:
    r = live.client.post(SESSIONS, json={"language": "python", "files": TWO})
    sid, ver = r.get_json()["session_id"], r.get_json()["version"]
    checkpoint(live, sid)
    new = [{"path": "main.py", "content": "print('hello')"}, {"path": "notes.txt", "content": "hi\n"}]
    save(live, sid, files=new, version=ver)
    checkpoint(live, sid)
    d = live.client.get(f"{SESSIONS}/{sid}/versions/1/diff/2").get_json()
    assert d["from"] == 1 and d["to"] == 2 and d["entry_from"] == d["entry_to"] == "main.py"
    by_path = {f["path"]: f for f in d["files"]}
    assert {p: f["change"] for p, f in by_path.items()} == {
        "main.py": "modified",
        "notes.txt": "added",
        "lib/util.py": "removed",
    }
    assert "-print(twice(21))\n" in by_path["main.py"]["diff"]
    assert "+print('hello')\n\\ No newline at end of file\n" in by_path["main.py"]["diff"]
    assert by_path["notes.txt"]["diff"].startswith("--- /dev/null\n+++ b/notes.txt\n")
    assert "+++ /dev/null" in by_path["lib/util.py"]["diff"]
    same = live.client.get(f"{SESSIONS}/{sid}/versions/2/diff/2").get_json()
    assert same["files"] == []
    expect_error(live.client.get(f"{SESSIONS}/{sid}/versions/1/diff/9"), 404, "VERSION_NOT_FOUND")


def test_restore_makes_a_version_current_with_optimistic_locking(live: LiveApp) -> None:
    sid = live.session("print('old')")["session_id"]
    checkpoint(live, sid)
    current = save(live, sid, source_code="print('new')")["version"]
    r = live.client.post(f"{SESSIONS}/{sid}/versions/1/restore", json={"version": current})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["restored"] == 1 and body["saved_as"] == 2 and body["version"] == current + 1
    assert r.headers["ETag"] == f'"{sid}-v{current + 1}"'
    got = live.client.get(f"{SESSIONS}/{sid}").get_json()
    assert got["source_code"] == "print('old')" and got["version"] == current + 1
    kept = live.client.get(f"{SESSIONS}/{sid}/versions/2").get_json()
    assert kept["reason"] == "restore" and kept["source_code"] == "print('new')"
    # a stale version: 409, and nothing changed (no session write, no version)
    before = live.rows.snapshot()
    err = expect_error(
        live.client.post(f"{SESSIONS}/{sid}/versions/2/restore", json={"version": current}), 409, "VERSION_CONFLICT"
    )
    assert err["details"]["current_version"] == current + 1
    assert live.rows.snapshot() == before
    # If-Match works as for autosave
    r = live.client.post(f"{SESSIONS}/{sid}/versions/2/restore", headers={"If-Match": f'"{sid}-v{current + 1}"'})
    assert r.status_code == 200 and live.client.get(f"{SESSIONS}/{sid}").get_json()["source_code"] == "print('new')"


def test_restore_of_a_multi_file_version_brings_back_its_files(live: LiveApp) -> None:
    r = live.client.post(SESSIONS, json={"language": "python", "files": TWO})
    sid, ver = r.get_json()["session_id"], r.get_json()["version"]
    checkpoint(live, sid)
    ver = save(live, sid, files=[{"path": "main.py", "content": "print(0)"}], version=ver)["version"]
    assert live.client.get(f"{SESSIONS}/{sid}").get_json()["files"] == [{"path": "main.py", "content": "print(0)"}]
    assert live.client.post(f"{SESSIONS}/{sid}/versions/1/restore", json={"version": ver}).status_code == 200
    assert live.client.get(f"{SESSIONS}/{sid}").get_json()["files"] == TWO


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "MISSING_FIELD"),
        ({"version": "two"}, 400, None),
        ({"version": 0}, 400, None),
        ({"version": 1, "other": True}, 400, None),
    ],
)
def test_bad_restores_change_nothing(live: LiveApp, body: dict[str, Any], status: int, code: str | None) -> None:
    sid = live.session()["session_id"]
    checkpoint(live, sid)
    before = live.rows.snapshot()
    expect_error(live.client.post(f"{SESSIONS}/{sid}/versions/1/restore", json=body), status, code)
    expect_error(
        live.client.post(f"{SESSIONS}/{sid}/versions/7/restore", json={"version": 1}), 404, "VERSION_NOT_FOUND"
    )
    assert live.rows.snapshot() == before


def test_another_users_history_is_404(secure: LiveApp) -> None:
    alice, mallory = sign_up(secure), sign_up(secure)
    r = secure.client.post(SESSIONS, json={"language": "python", "source_code": "print(1)"}, headers=alice.headers)
    sid = r.get_json()["session_id"]
    made = secure.client.post(f"{SESSIONS}/{sid}/versions", json={"label": "mine"}, headers=alice.headers)
    assert made.status_code == 201 and made.get_json()["author"] == alice.user_id
    before = secure.rows.snapshot()
    h = mallory.headers
    for resp in (
        secure.client.get(f"{SESSIONS}/{sid}/versions", headers=h),
        secure.client.post(f"{SESSIONS}/{sid}/versions", json={}, headers=h),
        secure.client.get(f"{SESSIONS}/{sid}/versions/1", headers=h),
        secure.client.get(f"{SESSIONS}/{sid}/versions/1/diff/1", headers=h),
        secure.client.post(f"{SESSIONS}/{sid}/versions/1/restore", json={"version": 1}, headers=h),
    ):
        expect_error(resp, 404, "SESSION_NOT_FOUND")
    assert secure.rows.snapshot() == before
    expect_error(secure.client.get(f"{SESSIONS}/{uuid.uuid4()}/versions", headers=alice.headers), 404)
    expect_error(secure.client.get(f"{SESSIONS}/not-a-uuid/versions", headers=alice.headers), 400)


def test_retention_keeps_n_or_d_days_and_every_labelled_checkpoint(make_live: Any) -> None:
    from livecode.models import utcnow
    from livecode.services import history, storage

    live = make_live(history_keep_versions=2, history_keep_days=7)
    sid = live.session("v = 0")["session_id"]
    checkpoint(live, sid, label="keep me")
    for i in range(5):
        save(live, sid, source_code=f"v = {i + 1}")
        checkpoint(live, sid)
    assert len(versions(live, sid, query_string={"per_page": 100})) == 6
    # within D days every version stays, whatever N says
    assert history.expire_versions(live.db, live.settings) == 0
    later = utcnow() + timedelta(days=8)
    assert history.expire_versions(live.db, live.settings, now=later) == 3
    assert [v["version"] for v in versions(live, sid)] == [6, 5, 1]  # the newest 2 and the labelled one
    # the file sets and sources of dropped versions are collected; the kept ones stay readable
    storage.collect_sources(live.db, live.settings, now=later + timedelta(seconds=live.settings.source_gc_grace_s))
    assert live.rows.count("file_sets") == 3
    for n, text in ((1, "v = 0"), (5, "v = 4"), (6, "v = 5")):
        assert live.client.get(f"{SESSIONS}/{sid}/versions/{n}").get_json()["source_code"] == text


def test_deleting_a_session_deletes_its_history(live: LiveApp) -> None:
    from livecode.models import utcnow
    from livecode.services import storage

    sid = live.session("print(1)")["session_id"]
    checkpoint(live, sid, label="x")
    assert live.rows.count("session_versions") == 1
    assert live.client.delete(f"{SESSIONS}/{sid}").status_code == 204
    assert live.rows.count("session_versions") == 0
    later = utcnow() + timedelta(seconds=live.settings.source_gc_grace_s + 60)
    storage.collect_sources(live.db, live.settings, now=later)
    assert live.rows.count("file_sets") == 0 and live.rows.count("sources") == 0


def test_a_versions_sources_outlive_its_executions(live: LiveApp) -> None:
    from livecode.models import utcnow
    from livecode.services import storage

    sid = live.session("print('kept')")["session_id"]
    eid = live.execute(sid)["execution_id"]
    finish_like_a_worker(live, eid)
    live.rows.execute("DELETE FROM executions")
    later = utcnow() + timedelta(seconds=live.settings.source_gc_grace_s + 60)
    assert storage.collect_sources(live.db, live.settings, now=later) == 0
    assert live.client.get(f"{SESSIONS}/{sid}/versions/1").get_json()["source_code"] == "print('kept')"


def test_a_batch_makes_one_version_per_session_and_each_run_names_it(live: LiveApp) -> None:
    a = live.session("print('a')")["session_id"]
    b = live.session("print('b')")["session_id"]
    checkpoint(live, b)  # b's code is version 1 already: its runs name it
    items = [{"session_id": a}, {"session_id": b}, {"session_id": a}]
    r = live.client.post("/api/v1/executions/batch", json={"executions": items})
    assert r.status_code == 202, r.get_json()
    runs = r.get_json()["executions"]
    named = [live.client.get(f"/api/v1/executions/{e['execution_id']}").get_json()["version"] for e in runs]
    assert named == [1, 1, 1]
    assert [v["reason"] for v in versions(live, a)] == ["execution"]
    assert [v["reason"] for v in versions(live, b)] == ["checkpoint"]


def test_version_numbers_out_of_range_are_400_and_missing_ones_404(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    checkpoint(live, sid)
    huge = 2**40
    expect_error(live.client.get(f"{SESSIONS}/{sid}/versions/{huge}"), 400, "INVALID_VERSION")
    expect_error(live.client.get(f"{SESSIONS}/{sid}/versions/0"), 400, "INVALID_VERSION")
    expect_error(live.client.get(f"{SESSIONS}/{sid}/versions/1/diff/{huge}"), 400, "INVALID_VERSION")
    expect_error(live.client.post(f"{SESSIONS}/{sid}/versions/{huge}/restore", json={"version": 1}), 400)
    expect_error(live.client.get(f"{SESSIONS}/{sid}/versions/-1"), 404)  # not a route at all
    expect_error(live.client.get(f"{SESSIONS}/{sid}/versions/abc"), 404)
    expect_error(live.client.get(f"{SESSIONS}/{sid}/versions/2"), 404, "VERSION_NOT_FOUND")


def test_members_read_the_history_and_only_editors_write_it(secure: LiveApp) -> None:
    owner, editor, viewer, stranger = (sign_up(secure) for _ in range(4))
    c = secure.client
    sid = c.post(SESSIONS, json={"language": "python", "source_code": "print(1)"}, headers=owner.headers).get_json()[
        "session_id"
    ]
    for user, role in ((editor, "editor"), (viewer, "viewer")):
        r = c.post(f"{SESSIONS}/{sid}/members", json={"username": user.username, "role": role}, headers=owner.headers)
        assert r.status_code in (200, 201), r.get_json()
    made = c.post(f"{SESSIONS}/{sid}/versions", json={"label": "by the editor"}, headers=editor.headers)
    assert made.status_code == 201 and made.get_json()["author"] == editor.user_id
    for user in (owner, editor, viewer):
        assert c.get(f"{SESSIONS}/{sid}/versions", headers=user.headers).get_json()["total"] == 1
        assert c.get(f"{SESSIONS}/{sid}/versions/1", headers=user.headers).status_code == 200
        assert c.get(f"{SESSIONS}/{sid}/versions/1/diff/1", headers=user.headers).status_code == 200
    before = secure.rows.snapshot()
    expect_error(c.post(f"{SESSIONS}/{sid}/versions", json={}, headers=viewer.headers), 403, "READ_ONLY_MEMBER")
    expect_error(
        c.post(f"{SESSIONS}/{sid}/versions/1/restore", json={"version": 1}, headers=viewer.headers),
        403,
        "READ_ONLY_MEMBER",
    )
    expect_error(c.get(f"{SESSIONS}/{sid}/versions", headers=stranger.headers), 404, "SESSION_NOT_FOUND")
    assert secure.rows.snapshot() == before
    r = c.post(f"{SESSIONS}/{sid}/versions/1/restore", json={"version": 1}, headers=editor.headers)
    assert r.status_code == 200, r.get_json()
