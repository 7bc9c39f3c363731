"""Live co-editing: the rooms of one API process. No Flask here (api/collab.py is the WebSocket).

A room is one session's document (services/collab_doc.py) and the editors connected to it on
this process. Every update an editor sends is applied to the room's document, sent to the room's
other editors, and appended to the document's log (streaming/collab_log.py), which the other
processes hosting editors of the same session follow: so editors on different processes (and
hosts) converge. The room writes its document into the session's source, debounced, through the
same optimistic-locking UPDATE autosave uses (services/sessions.autosave), with the document's
state beside the text: REST clients, executions and history see what the editors see. A REST
autosave is durable in PostgreSQL before it is answered, and merged into the document's state
there (services/collab_store.py) by the rooms hosting the document (told through the log, or
finding the version moved on when their write conflicts or at their periodic check), or by the
next room to open it; a room never writes over a version whose state it has not merged, so no
Redis fault makes it overwrite a save.

Locking: the manager's lock guards the room table; a room's lock guards its document, its peers
and its persistence state. Network sends happen under the room's lock, so every peer receives
the room's messages in the order the document applied them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from pycrdt import Awareness, Doc

from ..config import Settings
from ..db import Database
from ..errors import ApiError, Conflict, NotFound, ValidationError
from ..streaming.collab_log import AWARENESS, PERSISTED, SAVED, SEED, UPDATE, CollabLog, LogEntry
from . import collab_doc as yd
from . import collab_store, programs
from .access import Need, grants, role_of
from .sessions import autosave, autosave_files

log = logging.getLogger(__name__)

COMPACT_EVERY = 1000  # log entries between snapshots
READ_BLOCK_MS = 250
TICK_S = 0.02
RECHECK_S = 10.0  # how soon a removed member's (or a demoted editor's) open socket notices


class Peer(Protocol):
    """One editor's connection, as the room sees it."""

    can_edit: bool
    user_id: uuid.UUID | None  # None: the one local user of a service without accounts

    def send(self, message: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class DocumentTooLarge(ApiError):
    status = 413
    code = "SOURCE_TOO_LARGE"


def _doc_sha(room: Room) -> str:
    return yd.files_sha(yd.file_texts(room.doc))


def _notice(version: int, sha: str, entry: str | None = None) -> bytes:
    """A PERSISTED log entry: the session holds `version`, of digest `sha` (and runs `entry`)."""
    return json.dumps({"version": version, "sha": sha, **({"entry": entry} if entry else {})}).encode()


@dataclass(eq=False)
class Room:
    session_id: uuid.UUID
    doc: Doc
    awareness: Awareness
    cursor: str  # the last log entry applied to `doc`
    known_version: int  # a session version whose text the document holds (it may write over it)
    persisted_sha: str  # files_sha of the program at known_version
    language: str
    entry: str  # the file that runs, as the session has it (the document's meta may name another)
    order: list[str]  # the program's file order, kept when it is written back
    lock: threading.RLock = field(default_factory=threading.RLock)
    peers: dict[Any, set[int]] = field(default_factory=dict)  # peer -> its awareness client ids
    dirty_at: float | None = None  # when to write the document into the source
    first_dirty: float | None = None
    since_snapshot: int = 0
    closed: bool = False
    behind: bool = False  # a save is to be merged from the row (by the persister thread)

    @property
    def key(self) -> str:
        return str(self.session_id)


class CollabRooms:
    """The co-editing rooms of this process, their log reader and their persister."""

    def __init__(self, db: Database, collab_log: CollabLog, settings: Settings) -> None:
        self.db, self.log, self.settings = db, collab_log, settings
        self.origin = uuid.uuid4().hex
        self.persist_s = settings.collab_persist_ms / 1000
        self._rooms: dict[str, Room] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # ---- joining and leaving ---------------------------------------------------------------

    def check_capacity(self, session_id: uuid.UUID) -> None:
        """429 before the handshake when this process holds as many editors of the session as allowed."""
        cap = self.settings.collab_clients_per_session
        with self._lock:
            room = self._rooms.get(str(session_id))
            count = len(room.peers) if room else 0
        if cap and count >= cap:
            raise ApiError(
                f"this session has {count} editors connected here, the most allowed",
                code="TOO_MANY_EDITORS",
                status=429,
            )

    def join(self, session_id: uuid.UUID, peer: Peer) -> Room:
        """Open (or find) the session's room and add `peer`; sends it the server's state vector
        and who is here. The caller checked the peer may see the session."""
        self._start_threads()
        with self._lock:
            room = self._rooms.get(str(session_id))
            opened = room is None
            if room is None:
                room = self._open(session_id)
                self._rooms[room.key] = room
            with room.lock:
                room.peers[peer] = set()
        if opened:
            self._wake_reader()  # a blocking read started before this room would hold its updates back
        with room.lock:
            peer.send(yd.create_sync_message(room.doc))
            states = list(room.awareness.states)
            if states:
                peer.send(yd.create_awareness_message(room.awareness.encode_awareness_update(states)))
        return room

    def _open(self, session_id: uuid.UUID) -> Room:
        key = str(session_id)
        legacy = self.log.load(key)  # a document of before its state was kept in the row
        start = None
        if legacy:
            old = yd.new_doc()
            for entry in legacy:
                if entry.kind in (SEED, UPDATE):
                    old.apply_update(entry.data)
            start = old.get_update()
        stored = collab_store.merged(self.db, session_id, start)
        if stored is None:
            raise NotFound(f"code session {session_id} not found", code="SESSION_NOT_FOUND")
        self.log.seed(key, stored.state, self.origin)  # an empty log (expired, flushed) starts from the row
        doc = yd.new_doc()
        room = Room(
            session_id,
            doc,
            Awareness(doc),
            "0-0",
            stored.version,
            stored.sha,
            stored.language,
            stored.program.entry,
            [p for p, _ in stored.program.files],
        )
        for entry in self.log.load(key):
            self._apply(room, entry, broadcast=False)
        self._take(room, stored)  # what the row holds and the log lacks (a save merged while Redis was away)
        return room

    def leave(self, room: Room, peer: Peer) -> None:
        """Remove `peer`: its cursors disappear for the others; the last one out writes the
        document and closes the room."""
        with room.lock:
            ids = room.peers.pop(peer, set())
            if ids:
                room.awareness.remove_awareness_states(list(ids), "leave")
                update = room.awareness.encode_awareness_update(list(ids))
                self._broadcast(room, yd.create_awareness_message(update), None)
                self._append(room, AWARENESS, update)
            empty = not room.peers
        if empty:
            self._persist(room)
            with self._lock, room.lock:
                if not room.peers and self._rooms.get(room.key) is room:
                    del self._rooms[room.key]
                    room.closed = True

    # ---- messages from editors -------------------------------------------------------------

    def receive(self, room: Room, peer: Peer, message: bytes) -> None:
        """One y-protocols message from `peer`. DocumentTooLarge refuses the update (nothing of
        it applied); a malformed message raises ValueError."""
        if not message:
            raise ValueError("empty message")
        kind = message[0]
        if kind == yd.YMessageType.SYNC:
            self._on_sync(room, peer, message)
        elif kind == yd.YMessageType.AWARENESS:
            update = yd.read_payload(message, 1)
            with room.lock:
                clients = yd.awareness_clients(update)
                mine = room.peers.get(peer)
                if mine is not None:
                    for client_id, here in clients:
                        (mine.add if here else mine.discard)(client_id)
                room.awareness.apply_awareness_update(update, "peer")
                self._broadcast(room, message, peer)
                self._append(room, AWARENESS, update)
        elif kind == 3:  # query awareness
            with room.lock:
                states = list(room.awareness.states)
                peer.send(yd.create_awareness_message(room.awareness.encode_awareness_update(states)))
        elif kind == yd.LIVECODE:
            request = json.loads(yd.read_payload(message, 1) or b"{}")
            if isinstance(request, dict) and request.get("type") == "flush":
                self._persist(room)
                with room.lock:
                    peer.send(yd.livecode_message(json.dumps({"type": "saved", "version": room.known_version})))
        # Anything else (auth, unknown types) is ignored, as y-protocols peers do.

    def _on_sync(self, room: Room, peer: Peer, message: bytes) -> None:
        step = message[1]
        payload = yd.read_payload(message, 2)
        if step == yd.YSyncMessageType.SYNC_STEP1:
            with room.lock:
                peer.send(yd.sync_step2(room.doc, payload))
            return
        if payload == yd.EMPTY_UPDATE:
            return
        if not peer.can_edit:
            peer.send(
                yd.livecode_message(
                    json.dumps(
                        {
                            "type": "error",
                            "code": "READ_ONLY_MEMBER",
                            "message": "viewers cannot edit; the change was not applied",
                        }
                    )
                )
            )
            return
        with room.lock:
            self._check_size(room, payload)
            room.doc.apply_update(payload)
            self._broadcast(room, yd.create_update_message(payload), peer)
            self._append(room, UPDATE, payload)
            self._mark_dirty(room, remote=False)

    def _check_size(self, room: Room, update: bytes) -> None:
        limit = self.settings.max_source_bytes
        # An update carries the text it inserts: when even the sum fits, the result does.
        if yd.doc_bytes(room.doc) + len(update) <= limit:
            return
        trial = yd.new_doc()
        trial.apply_update(room.doc.get_update())
        trial.apply_update(update)
        size = yd.doc_bytes(trial)
        if size > limit:
            raise DocumentTooLarge(
                f"the document would be {size} bytes; the limit is {limit}", details={"limit": limit, "size": size}
            )

    # ---- REST autosaves --------------------------------------------------------------------

    def merge_saved(self, session_id: uuid.UUID, version: int, co_edited: bool | None = None) -> None:
        """A REST save (autosave, restore) made `version`, durably. The processes that host the
        document merge it from the row (services/collab_store.py) when told through the log;
        the request does not wait for that. `co_edited`: whether the session has a document
        (False: nothing to do; None: unknown). If the notice is lost (Redis away), a room finds
        the version at its next write or its periodic check, and an opening one merges it."""
        if co_edited is False:
            return  # never co-edited: no room (one opening now reads the row after this save)
        key = str(session_id)
        with self._lock:
            room = self._rooms.get(key)
        if room is not None:
            with room.lock:
                room.behind = True  # this process's room does not wait for the log
        # Not this process's origin: its own reader must see it too (a room may open here meanwhile).
        self.log.notify(key, SAVED, json.dumps({"version": version}).encode(), self.origin + "-rest")

    def _take(self, room: Room, stored: collab_store.Stored) -> None:
        """Merge the row's document state into the room's (under the room's lock): the room
        holds that version now, and may write over it."""
        before = room.doc.get_state()
        room.doc.apply_update(stored.state)
        diff = room.doc.get_update(before)
        if diff != yd.EMPTY_UPDATE:
            self._broadcast(room, yd.create_update_message(diff), None)
            self._append(room, UPDATE, diff)
            self._append(room, PERSISTED, _notice(stored.version, stored.sha, stored.program.entry))
        room.entry, room.order = stored.program.entry, [p for p, _ in stored.program.files]
        self._on_persisted(room, stored.version, stored.sha)
        if _doc_sha(room) != room.persisted_sha:
            self._mark_dirty(room, remote=False)  # the document holds more than the row

    def _catch_up(self, room: Room) -> bool:
        """The session moved past the room's version (a save, another process's write): merge
        it. False when the session is gone (its editors are told)."""
        stored = collab_store.merged(self.db, room.session_id)
        if stored is None:
            self._close_room(room, 4404, "SESSION_NOT_FOUND", "the session was deleted")
            return False
        with room.lock:
            self._take(room, stored)
        return True

    # ---- the log ---------------------------------------------------------------------------

    def _append(self, room: Room, kind: str, data: bytes) -> None:
        try:
            self.log.append(room.key, kind, data, self.origin)
        except Exception:  # noqa: BLE001 - local editors still converge; the source keeps the text
            log.warning("collab log append failed", extra={"session_id": room.key}, exc_info=True)

    def _apply(self, room: Room, entry: LogEntry, *, broadcast: bool) -> None:
        room.cursor = entry.entry_id
        room.since_snapshot += 1
        if broadcast and entry.origin == self.origin:
            return  # applied (and sent) when it was received
        if entry.kind in (SEED, UPDATE):
            room.doc.apply_update(entry.data)
            if broadcast:
                self._broadcast(room, yd.create_update_message(entry.data), None)
                self._mark_dirty(room, remote=True)
        elif entry.kind == AWARENESS:
            room.awareness.apply_awareness_update(entry.data, "log")
            if broadcast:
                self._broadcast(room, yd.create_awareness_message(entry.data), None)
        elif entry.kind == SAVED:
            if broadcast and int(json.loads(entry.data)["version"]) > room.known_version:
                room.behind = True  # an opening room reads the row anyway
        elif entry.kind == PERSISTED:
            info = json.loads(entry.data)
            if info.get("entry"):
                room.entry = str(info["entry"])
            # Only a text the document holds: else (an update lost on the way) the room's next
            # write conflicts and merges the row's state first.
            if str(info["sha"]) == _doc_sha(room):
                self._on_persisted(room, int(info["version"]), str(info["sha"]))

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                rooms = {key: room for key, room in self._rooms.items() if not room.closed}
            try:
                entries = self.log.read({key: room.cursor for key, room in rooms.items()}, READ_BLOCK_MS, self.origin)
            except Exception:  # noqa: BLE001 - Redis away: retry; editors here still converge
                log.warning("collab log read failed", exc_info=True)
                self._stop.wait(1)
                continue
            for entry in entries:
                room = rooms.get(entry.session_id)
                if room is None:
                    continue
                with room.lock:
                    self._apply(room, entry, broadcast=True)
            for room in rooms.values():
                if room.since_snapshot >= COMPACT_EVERY:
                    with room.lock:
                        state, through = room.doc.get_update(), room.cursor
                        room.since_snapshot = 0
                    try:
                        self.log.compact(room.key, state, through, self.origin)
                    except Exception:  # noqa: BLE001 - compaction is only an economy
                        log.warning("collab log compaction failed", exc_info=True)

    # ---- writing the document into the session's source ------------------------------------

    def _mark_dirty(self, room: Room, *, remote: bool) -> None:
        now = time.monotonic()
        if remote:
            # A change from another process is written by that process; this one writes it only
            # if that one has not (it may have died), a little later.
            if room.dirty_at is None:
                room.dirty_at = now + 4 * self.persist_s
            return
        if room.first_dirty is None:
            room.first_dirty = now
        # Debounced, but written at least every few periods while typing goes on.
        room.dirty_at = min(now + self.persist_s, room.first_dirty + 4 * self.persist_s)

    def _on_persisted(self, room: Room, version: int, sha: str) -> None:
        """The session holds `version`, of digest `sha`, and the document holds its text."""
        if version >= room.known_version:
            room.known_version, room.persisted_sha = version, sha
        if _doc_sha(room) == room.persisted_sha:
            room.dirty_at = room.first_dirty = None

    def _persist_loop(self) -> None:
        next_check = time.monotonic() + RECHECK_S
        while not self._stop.wait(TICK_S):
            now = time.monotonic()
            if now >= next_check:
                next_check = now + RECHECK_S
                try:
                    self._recheck_members()
                    self._recheck_versions()
                except Exception:  # noqa: BLE001 - checked again at the next round
                    log.warning("collab membership or version check failed", exc_info=True)
            with self._lock:
                behind = [r for r in self._rooms.values() if r.behind]
                due = [r for r in self._rooms.values() if r.dirty_at is not None and r.dirty_at <= now]
            for room in behind:
                room.behind = False
                try:
                    self._catch_up(room)
                except Exception:  # noqa: BLE001 - the periodic check, or the next write, merges it
                    log.warning("collab merge of a save failed", extra={"session_id": room.key}, exc_info=True)
            for room in due:
                try:
                    self._persist(room)
                except Exception:  # noqa: BLE001 - tried again at the next change
                    log.warning("collab persist failed", extra={"session_id": room.key}, exc_info=True)
                    with room.lock:
                        room.dirty_at = time.monotonic() + 1

    def _recheck_members(self) -> None:
        """The membership rule again for every open socket: one removed from the session is
        closed (4403), one whose role changed gets its new rights. (The handshake checked it;
        this catches changes made while it is open, on any process.)"""
        with self._lock:
            rooms = list(self._rooms.values())
        for room in rooms:
            with room.lock:
                peers = [p for p in room.peers if p.user_id is not None]
            for peer in peers:
                role = role_of(self.db, room.session_id, peer.user_id)
                if role is None:
                    try:
                        peer.send(
                            yd.livecode_message(
                                json.dumps(
                                    {
                                        "type": "error",
                                        "code": "SESSION_NOT_FOUND",
                                        "message": "you are no longer a member of this session",
                                    }
                                )
                            )
                        )
                        peer.close(4403, "NOT_A_MEMBER")
                    except Exception:  # noqa: BLE001 - it is closing anyway
                        log.debug("collab close failed", exc_info=True)
                else:
                    peer.can_edit = grants(role, Need.EDIT)

    def _recheck_versions(self) -> None:
        """A save whose merge did not reach this process's rooms through the log (Redis away
        then) shows up here as a version the room has not seen: merge it from the row."""
        with self._lock:
            rooms = list(self._rooms.values())
        for room in rooms:
            version = collab_store.version_of(self.db, room.session_id)
            with room.lock:
                if version is not None and version > room.known_version:
                    room.behind = True

    def _persist(self, room: Room) -> None:
        """Write the document into the session's source (or files) if it differs, with the
        version it was last written as (optimistic locking, as autosave)."""
        for _ in range(3):
            with room.lock:
                texts = yd.file_texts(room.doc)
                sha = yd.files_sha(texts)
                state = room.doc.get_update()  # written beside the text (services/collab_store.py)
                entry = yd.doc_entry(room.doc) or room.entry
                if entry not in texts:
                    entry = room.entry  # an old client renamed the entry without naming the new one
                if sha == room.persisted_sha and entry == room.entry:
                    room.dirty_at = room.first_dirty = None
                    return
                expected = room.known_version
                known = [p for p in room.order if p in texts]
                files = [(p, texts[p]) for p in known + sorted(set(texts) - set(known))]
            try:
                saved = self._write(room, files, entry, expected, state)
            except NotFound:
                self._close_room(room, 4404, "SESSION_NOT_FOUND", "the session was deleted")
                return
            except Conflict:
                # Someone saved since the version the room holds: merge that first, then write.
                if self._catch_up(room):
                    continue
                return
            except ValidationError as exc:
                # A file set the API refuses (a client put a bad path or too much in the map):
                # say so, and write nothing until the document changes again.
                with room.lock:
                    room.dirty_at = room.first_dirty = None
                    self._broadcast(
                        room,
                        yd.livecode_message(json.dumps({"type": "error", "code": exc.code, "message": exc.message})),
                        None,
                    )
                return
            with room.lock:
                room.order = [p for p, _ in files]
                if entry in texts:
                    room.entry = entry
                self._on_persisted(room, saved["version"], sha)
                self._append(room, PERSISTED, _notice(saved["version"], sha, room.entry))
                saved_msg = yd.livecode_message(json.dumps({"type": "saved", "version": saved["version"]}))
                self._broadcast(room, saved_msg, None)
            return

    def _write(
        self, room: Room, files: list[tuple[str, str]], entry: str, expected: int, state: bytes
    ) -> dict[str, Any]:
        """One file at the language's default path is a plain source (autosave's one small
        write); anything else is a program (autosave_files)."""
        if len(files) == 1 and files[0][0] == entry == programs.default_path(room.language):
            return autosave(
                self.db,
                room.session_id,
                source_code=files[0][1],
                expected_version=expected,
                owner_id=None,
                max_bytes=self.settings.max_source_bytes,
                history_interval_s=self.settings.history_autosave_interval_s,
                doc_state=state,
            )
        return autosave_files(
            self.db,
            room.session_id,
            settings=self.settings,
            expected_version=expected,
            owner_id=None,
            files=files,
            entry=entry if any(p == entry for p, _ in files) else None,
            doc_state=state,
        )

    # ---- helpers ---------------------------------------------------------------------------

    def _broadcast(self, room: Room, message: bytes, sender: Peer | None) -> None:
        for peer in list(room.peers):
            if peer is not sender:
                try:
                    peer.send(message)
                except Exception:  # noqa: BLE001 - that peer's connection ends; the others go on
                    log.debug("collab send failed", exc_info=True)

    def _close_room(self, room: Room, code: int, error: str, message: str) -> None:
        with room.lock:
            peers = list(room.peers)
            room.dirty_at = None
        for peer in peers:
            try:
                peer.send(yd.livecode_message(json.dumps({"type": "error", "code": error, "message": message})))
                peer.close(code, error)
            except Exception:  # noqa: BLE001
                log.debug("collab close failed", exc_info=True)

    def _wake_reader(self) -> None:
        try:
            self.log.wake(self.origin)
        except Exception:  # noqa: BLE001 - the reader picks the room up at its next read anyway
            log.debug("collab reader wake-up failed", exc_info=True)

    def _start_threads(self) -> None:
        with self._lock:
            if self._threads:
                return
            for target, name in ((self._read_loop, "collab-log-reader"), (self._persist_loop, "collab-persister")):
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)

    def stop(self) -> None:
        """Write every dirty document and stop the threads (tests; process shutdown)."""
        with self._lock:
            rooms = list(self._rooms.values())
        for room in rooms:
            try:
                self._persist(room)
            except Exception:  # noqa: BLE001
                log.warning("collab persist at stop failed", exc_info=True)
        self._stop.set()
        for thread in self._threads:
            thread.join(2)

    def rooms(self) -> int:
        with self._lock:
            return len(self._rooms)
