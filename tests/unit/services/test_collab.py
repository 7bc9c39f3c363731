"""Co-editing rooms (services/collab.py) in process: two CollabRooms sharing one log stand for two
API processes; FakePeers speak y-protocols through pycrdt, as browsers do."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pycrdt import Map

from livecode.services import sessions as ss
from livecode.services.collab import CollabRooms, DocumentTooLarge
from livecode.streaming.collab_log import MemoryCollabLog
from tests.support.yjs import FakePeer


@pytest.fixture
def rooms(db: Any, settings: Any) -> Iterator[tuple[CollabRooms, CollabRooms, Any]]:
    settings = settings.with_overrides(collab_persist_ms=50, max_source_bytes=2000)
    log = MemoryCollabLog(3600)
    a, b = CollabRooms(db, log, settings), CollabRooms(db, log, settings)
    yield a, b, settings
    a.stop()
    b.stop()


def new_session(db: Any, source: str = "print(1)\n") -> uuid.UUID:
    created = ss.create_session(db, language="python", source_code=source, owner_id=None, max_bytes=100_000)
    return uuid.UUID(created["session_id"])


def source_of(db: Any, sid: uuid.UUID) -> tuple[str, int]:
    row = ss.get_session(db, sid, None, fresh=True)
    return row["source_code"], row["version"]


def test_editors_on_two_processes_converge_and_the_source_follows(db: Any, rooms: Any) -> None:
    a, b, _ = rooms
    sid = new_session(db, "hello")
    alice, bob = FakePeer(a).join(sid), FakePeer(b).join(sid)
    assert alice.text() == bob.text() == "hello"
    alice.insert(5, " world")
    bob.wait_text("hello world")
    bob.insert(0, ">> ")
    alice.wait_text(">> hello world")
    version = alice.saved_version()
    assert source_of(db, sid) == (">> hello world", version)


def test_concurrent_inserts_at_one_position_converge_byte_for_byte(db: Any, rooms: Any) -> None:
    a, b, _ = rooms
    sid = new_session(db, "ab")
    peers = [FakePeer(a, client_id=11).join(sid), FakePeer(b, client_id=22).join(sid), FakePeer(a).join(sid)]
    # Both edits are made before either is seen: the same position, different text.
    u1 = peers[0].insert(1, "XXX", send=False)
    u2 = peers[1].insert(1, "YYY", send=False)
    peers[0].post(bytes([0, 2]) + _msg(u1))
    peers[1].post(bytes([0, 2]) + _msg(u2))
    for p in peers:
        p.wait(lambda p=p: len(p.text()) == 8, what="both inserts")
    texts = {p.text() for p in peers}
    assert len(texts) == 1 and texts.pop() in ("aXXXYYYb", "aYYYXXXb")
    peers[0].saved_version()
    assert source_of(db, sid)[0] == peers[2].text()


def test_a_rest_autosave_is_merged_not_lost(db: Any, rooms: Any) -> None:
    a, b, _ = rooms
    sid = new_session(db, "line1\nline2\n")
    alice = FakePeer(b).join(sid)
    saved = ss.autosave(
        db, sid, source_code="line1\nline2\nrest\n", expected_version=None, owner_id=None, max_bytes=10_000
    )
    a.merge_saved(sid, saved["version"], saved["co_edited"])  # the PATCH landed on the other process
    alice.wait_text("line1\nline2\nrest\n")
    alice.insert(0, "# ")
    alice.saved_version()
    assert source_of(db, sid)[0] == "# line1\nline2\nrest\n"


def test_a_rest_autosave_on_the_process_of_the_room(db: Any, rooms: Any) -> None:
    a, _, _ = rooms
    sid = new_session(db, "x = 1\n")
    alice = FakePeer(a).join(sid)
    alice.insert(0, "# top\n")
    alice.saved_version()  # written: an unversioned save over it is the last word
    saved = ss.autosave(db, sid, source_code="x = 2\n", expected_version=None, owner_id=None, max_bytes=10_000)
    a.merge_saved(sid, saved["version"], saved["co_edited"])
    alice.wait_text("x = 2\n")
    assert alice.saved_version() >= saved["version"]
    assert source_of(db, sid)[0] == "x = 2\n"


def test_a_viewer_receives_but_cannot_change_the_document(db: Any, rooms: Any) -> None:
    a, _, _ = rooms
    sid = new_session(db, "shared")
    editor, viewer = FakePeer(a).join(sid), FakePeer(a, can_edit=False).join(sid)
    viewer.insert(0, "evil ")
    assert viewer.notices[-1]["code"] == "READ_ONLY_MEMBER"
    editor.insert(6, "!")
    viewer.wait(lambda: viewer.text().endswith("shared!"), what="the editor's change")
    assert editor.text() == "shared!"
    editor.saved_version()
    assert source_of(db, sid)[0] == "shared!"


def test_a_document_past_the_size_limit_is_refused(db: Any, rooms: Any) -> None:
    a, b, settings = rooms
    sid = new_session(db, "small")
    alice, bob = FakePeer(a).join(sid), FakePeer(b).join(sid)
    with pytest.raises(DocumentTooLarge):
        alice.insert(0, "x" * settings.max_source_bytes)
    # Nothing of it was applied or relayed (the socket would now be closed: its client starts over).
    bob.insert(0, "ok ")
    carol = FakePeer(a).join(sid)
    carol.wait_text("ok small")
    assert bob.saved_version() >= 2
    assert source_of(db, sid)[0] == "ok small"


def test_presence_reaches_the_others_and_leaves_with_its_editor(db: Any, rooms: Any) -> None:
    a, b, _ = rooms
    sid = new_session(db)
    alice, bob = FakePeer(a, client_id=5).join(sid), FakePeer(b).join(sid)
    alice.set_presence({"user": {"name": "alice"}, "cursor": {"anchor": 1, "head": 3}})
    bob.wait(lambda: bob.awareness.get(5, {}).get("user", {}).get("name") == "alice", what="alice's presence")
    alice.leave()
    bob.wait(lambda: 5 not in bob.awareness, what="alice gone")


def test_offline_edits_converge_on_reconnect(db: Any, rooms: Any) -> None:
    a, b, _ = rooms
    sid = new_session(db, "base")
    alice, bob = FakePeer(a).join(sid), FakePeer(b).join(sid)
    alice.leave()
    alice.insert(4, " offline")
    bob.insert(0, "online ")
    alice.join(sid)
    for p in (alice, bob):
        p.wait_text("online base offline")


def test_a_multi_file_program_is_co_edited_file_by_file(db: Any, rooms: Any) -> None:
    a, b, settings = rooms
    files = [("main.py", "import util\nutil.hi()\n"), ("util.py", "def hi():\n    pass\n")]
    created = ss.create_session(
        db,
        language="python",
        source_code=None,
        files=files,
        entry="main.py",
        owner_id=None,
        max_bytes=100_000,
        settings=settings,
    )
    sid = uuid.UUID(created["session_id"])
    alice, bob = FakePeer(a).join(sid), FakePeer(b).join(sid)
    assert bob.paths() == {"main.py", "util.py"} and bob.text("util.py") == "def hi():\n    pass\n"
    alice.insert(len("def hi():\n    "), "print('hi')  # ", path="util.py")
    bob.insert(0, "# main\n", path="main.py")
    for p in (alice, bob):
        p.wait(lambda p=p: p.text("util.py").count("print") == 1 and p.text().startswith("# main"), what="both")
    alice.saved_version()
    got = ss.get_session(db, sid, None, fresh=True)
    assert got["entry"] == "main.py"
    assert [(f["path"], f["content"]) for f in got["files"]] == [
        ("main.py", "# main\nimport util\nutil.hi()\n"),
        ("util.py", "def hi():\n    print('hi')  # pass\n"),
    ]
    # A REST save of the whole set (a file added, one changed) is merged into the document.
    saved = ss.autosave_files(
        db,
        sid,
        settings=settings,
        expected_version=None,
        owner_id=None,
        files=[("main.py", "print(1)\n"), ("util.py", got["files"][1]["content"]), ("extra.py", "X = 1\n")],
    )
    b.merge_saved(sid, saved["version"], saved["co_edited"])
    alice.wait(lambda: alice.text("extra.py") == "X = 1\n" and alice.text() == "print(1)\n", what="the REST files")


def _msg(update: bytes) -> bytes:
    from pycrdt import write_message

    return write_message(update)


def test_a_member_removed_or_demoted_while_connected_loses_the_socket_or_the_right(db: Any, rooms: Any) -> None:
    from livecode.services import accounts, members

    a, _, _ = rooms
    owner = uuid.UUID(accounts.create_user(db, "owner1", "correct horse battery staple")["user_id"])
    ed = uuid.UUID(accounts.create_user(db, "editor1", "correct horse battery staple")["user_id"])
    gone = uuid.UUID(accounts.create_user(db, "leaver1", "correct horse battery staple")["user_id"])
    created = ss.create_session(db, language="python", source_code="x", owner_id=owner, max_bytes=1000)
    sid = uuid.UUID(created["session_id"])
    members.add_member(db, sid, owner, "editor1", "editor")
    members.add_member(db, sid, owner, "leaver1", "editor")
    editor, leaver = FakePeer(a), FakePeer(a)
    editor.user_id, leaver.user_id = ed, gone
    editor.join(sid)
    leaver.join(sid)
    members.add_member(db, sid, owner, "editor1", "viewer")  # demoted
    members.remove_member(db, sid, owner, gone)  # removed
    a._recheck_members()
    assert leaver.closed == (4403, "NOT_A_MEMBER")
    assert editor.closed is None and editor.can_edit is False
    editor.insert(0, "no ")
    assert editor.notices[-1]["code"] == "READ_ONLY_MEMBER"


# ---- durability: a save acknowledged with a 2xx is never overwritten by the document ---------


LOG_CALLS = ("seed", "load", "exists", "append", "notify", "read", "wake", "compact")


class LogDown:
    """A process's view of a shared log whose Redis can go away: then every call fails."""

    def __init__(self, shared: MemoryCollabLog) -> None:
        self.shared, self.down = shared, False

    def __getattr__(self, name: str) -> Any:
        if name in LOG_CALLS and self.down:
            raise ConnectionError("redis is down")
        return getattr(self.shared, name)


@pytest.mark.parametrize("told", [True, False], ids=["merge-told", "merge-never-told"])
def test_a_rest_autosave_keeps_what_editors_typed_since_the_last_write(db: Any, settings: Any, told: bool) -> None:
    """Nothing is written on its own here (a long debounce): the editor's line is in the document
    only. Told of the save (merge_saved) or not (the process that took the PATCH died first, or
    Redis lost the notice), the room's write merges the row first and keeps both."""
    slow = settings.with_overrides(collab_persist_ms=60_000)
    a = CollabRooms(db, MemoryCollabLog(3600), slow)
    try:
        sid = new_session(db, "line1\nline2\n")
        alice = FakePeer(a).join(sid)
        alice.insert(0, "# alice\n")
        saved = ss.autosave(
            db, sid, source_code="line1\nline2\nrest\n", expected_version=1, owner_id=None, max_bytes=10_000
        )
        assert saved["co_edited"] is True
        if told:
            a.merge_saved(sid, saved["version"], saved["co_edited"])
            alice.wait_text("# alice\nline1\nline2\nrest\n")
        assert alice.saved_version() == saved["version"] + 1
        assert source_of(db, sid)[0] == "# alice\nline1\nline2\nrest\n"
        alice.wait_text("# alice\nline1\nline2\nrest\n")
    finally:
        a.stop()


def test_a_save_while_nobody_hosts_the_document_is_in_it_when_it_opens_again(db: Any, rooms: Any) -> None:
    a, b, _ = rooms
    sid = new_session(db, "one\n")
    alice = FakePeer(a).join(sid)
    alice.insert(len(b"one\n"), "two\n")
    alice.saved_version()
    alice.leave()  # the last one out: the room closes; the log keeps the document
    assert a.rooms() == 0
    ss.autosave(db, sid, source_code="one\ntwo\nthree\n", expected_version=None, owner_id=None, max_bytes=10_000)
    # No merge_saved: its process died, or Redis was away then.
    bob = FakePeer(b).join(sid)
    bob.wait_text("one\ntwo\nthree\n")
    bob.insert(0, "# ")
    bob.saved_version()
    assert source_of(db, sid)[0] == "# one\ntwo\nthree\n"


def test_a_save_merged_while_redis_was_away_reaches_the_room_and_is_kept(db: Any, settings: Any) -> None:
    shared = MemoryCollabLog(3600)
    fast = settings.with_overrides(collab_persist_ms=50)
    host, rest_log = CollabRooms(db, shared, fast), LogDown(shared)
    rest = CollabRooms(db, rest_log, fast)  # type: ignore[arg-type]  # the process the PATCH lands on
    try:
        sid = new_session(db, "a\nb\n")
        alice = FakePeer(host).join(sid)
        alice.insert(0, "0\n")
        alice.saved_version()
        saved = ss.autosave(db, sid, source_code="0\na\nb\nc\n", expected_version=None, owner_id=None, max_bytes=9999)
        rest_log.down = True
        with pytest.raises(ConnectionError):  # the API logs it; the save stays acknowledged
            rest.merge_saved(sid, saved["version"], saved["co_edited"])
        host._recheck_versions()  # the room's periodic check finds the version it missed
        alice.wait_text("0\na\nb\nc\n")
        alice.insert(0, "#")
        assert alice.saved_version() > saved["version"]
        assert source_of(db, sid)[0] == "#0\na\nb\nc\n"
    finally:
        host.stop()
        rest.stop()


def test_editors_add_rename_delete_files_and_pick_the_entry_in_the_document(db: Any, rooms: Any) -> None:
    from pycrdt import Text

    a, b, _ = rooms
    sid = new_session(db, "import util\n")
    alice, bob = FakePeer(a).join(sid), FakePeer(b).join(sid)

    def add(files: Any, meta: Any) -> None:
        files["util.py"] = Text("X = 1\n")

    alice.change_files(add)
    bob.wait(lambda: bob.text("util.py") == "X = 1\n", what="the new file")
    alice.saved_version()
    got = ss.get_session(db, sid, None, fresh=True)
    assert [(f["path"], f["content"]) for f in got["files"]] == [("main.py", "import util\n"), ("util.py", "X = 1\n")]
    assert got["entry"] == "main.py"

    def rename_entry(files: Any, meta: Any) -> None:  # what the playground's Rename does
        files["app.py"] = Text(str(files["main.py"]))
        del files["main.py"]
        meta["entry"] = "app.py"

    bob.change_files(rename_entry)
    alice.wait(lambda: alice.paths() == {"app.py", "util.py"}, what="the rename")
    bob.saved_version()
    got = ss.get_session(db, sid, None, fresh=True)
    assert got["entry"] == "app.py" and {f["path"] for f in got["files"]} == {"app.py", "util.py"}

    def entry_util(files: Any, meta: Any) -> None:
        meta["entry"] = "util.py"

    alice.change_files(entry_util)
    alice.flush()
    alice.wait(lambda: ss.get_session(db, sid, None, fresh=True)["entry"] == "util.py", what="the entry written")

    def delete_util(files: Any, meta: Any) -> None:
        del files["util.py"]
        meta["entry"] = "app.py"

    bob.change_files(delete_util)
    alice.wait(lambda: alice.paths() == {"app.py"}, what="the delete")
    bob.saved_version()
    got = ss.get_session(db, sid, None, fresh=True)
    assert got["entry"] == "app.py" and [f["path"] for f in got["files"]] == ["app.py"]
    # A REST save that names another entry is merged into the document's entry.
    saved = ss.autosave_files(db, sid, settings=a.settings, expected_version=None, owner_id=None,
                              file=("b.py", "pass\n"), entry="b.py")
    b.merge_saved(sid, saved["version"], saved["co_edited"])
    alice.wait(lambda: alice.doc.get("meta", type=Map).get("entry") == "b.py" and "b.py" in alice.paths(),
               what="the REST entry")


def test_two_processes_merging_one_save_at_once_add_it_once(db: Any, rooms: Any) -> None:
    """The merge of a save into the row's state is made once (a conditional UPDATE): rooms on two
    processes catching up at the same moment merge the same update, so the text is there once."""
    import threading

    a, b, _ = rooms
    sid = new_session(db, "top\n")
    alice, bob = FakePeer(a).join(sid), FakePeer(b).join(sid)
    alice.insert(len(b"top\n"), "mid\n")
    alice.saved_version()
    bob.wait_text("top\nmid\n")
    ss.autosave(db, sid, source_code="top\nmid\nend\n", expected_version=None, owner_id=None, max_bytes=10_000)
    room_a, room_b = a._rooms[str(sid)], b._rooms[str(sid)]
    go = threading.Barrier(2)

    def catch_up(rooms_: CollabRooms, room: Any) -> None:
        go.wait()
        rooms_._catch_up(room)

    threads = [threading.Thread(target=catch_up, args=args) for args in ((a, room_a), (b, room_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for peer in (alice, bob):
        peer.wait_text("top\nmid\nend\n")
    alice.insert(0, "# ")
    alice.saved_version()
    bob.wait_text("# top\nmid\nend\n")
    assert source_of(db, sid)[0] == "# top\nmid\nend\n"
