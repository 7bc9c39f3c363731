"""A Yjs client for tests, with pycrdt: it speaks y-protocols (sync step 1 and 2, updates,
awareness) as a browser's y-websocket provider does. `FakePeer` is the same client without a
socket, for the in-process floor (services/collab.py's Peer)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from pycrdt import Decoder, Doc, Map, Text, create_awareness_message, create_sync_message, create_update_message

from livecode.services import collab_doc as yd

FILES, KEY = yd.FILES, "main.py"  # a Python session's one file


class YDocClient:
    """A document and the y-protocols handling of what arrives; `send` is where replies go."""

    def __init__(self, send: Callable[[bytes], None] | None = None, client_id: int | None = None) -> None:
        self.doc = Doc(client_id=client_id, allow_multithreading=True)
        self.lock = threading.RLock()
        self.sender = send
        self.notices: list[dict[str, Any]] = []
        self.awareness: dict[int, Any] = {}
        self.closed: tuple[int, str] | None = None
        self.synced = threading.Event()

    # ---- the document --------------------------------------------------------------------

    def text(self, path: str = KEY) -> str:
        with self.lock:
            value = self.doc.get(FILES, type=Map).get(path)
            return str(value) if isinstance(value, Text) else ""

    def paths(self) -> set[str]:
        with self.lock:
            return set(self.doc.get(FILES, type=Map).keys())

    def edit(self, fn: Callable[[Text], None], send: bool = True, path: str = KEY) -> bytes:
        """Change a file's text locally (fn gets the Y.Text); returns the update, sent unless offline."""
        with self.lock:
            before = self.doc.get_state()
            fn(self.doc.get(FILES, type=Map)[path])
            update = self.doc.get_update(before)
        if send:
            self.post(create_update_message(update))
        return update

    def insert(self, index: int, value: str, send: bool = True, path: str = KEY) -> bytes:
        return self.edit(lambda t: t.insert(index, value), send, path)

    def change_files(self, fn: Callable[[Map, Map], None]) -> bytes:
        """Change the set of files as the playground does (fn gets the files and meta maps, in
        one transaction): add, rename, delete, the entry."""
        with self.lock:
            before = self.doc.get_state()
            with self.doc.transaction():
                fn(self.doc.get(FILES, type=Map), self.doc.get(yd.META, type=Map))
            update = self.doc.get_update(before)
        self.post(create_update_message(update))
        return update

    def set_presence(self, state: dict[str, Any], clock: int = 1) -> None:
        payload = json.dumps(state).encode()
        update = bytes([1]) + _var_uint(self.doc.client_id) + _var_uint(clock) + _var_uint(len(payload)) + payload
        self.post(create_awareness_message(update))

    # ---- the protocol --------------------------------------------------------------------

    def post(self, message: bytes) -> None:
        """To the server."""
        if self.sender is not None:
            self.sender(message)

    def start_sync(self) -> None:
        with self.lock:
            self.post(create_sync_message(self.doc))

    def flush(self) -> None:
        self.post(yd.livecode_message(json.dumps({"type": "flush"})))

    def handle(self, message: bytes) -> None:
        kind = message[0]
        if kind == 0:
            step, payload = message[1], yd.read_payload(message, 2)
            with self.lock:
                if step == 0:
                    self.post(yd.sync_step2(self.doc, payload))
                else:
                    self.doc.apply_update(payload)
                    if step == 1:
                        self.synced.set()
        elif kind == 1:
            update = yd.read_payload(message, 1)
            decoder = Decoder(update)
            for _ in range(decoder.read_var_uint()):
                cid, _clock, state = decoder.read_var_uint(), decoder.read_var_uint(), decoder.read_var_string()
                if state in ("", "null"):
                    self.awareness.pop(cid, None)
                else:
                    self.awareness[cid] = json.loads(state)
        elif kind == yd.LIVECODE:
            self.notices.append(json.loads(yd.read_payload(message, 1)))

    def wait(self, predicate: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; text={self.text()!r} notices={self.notices}")
            time.sleep(0.02)

    def wait_text(self, expected: str, timeout: float = 15) -> None:
        self.wait(lambda: self.text() == expected, timeout, f"text {expected!r}")

    def saved_version(self, timeout: float = 15) -> int:
        """Ask the server to write the document now; the version it was written as."""
        seen = len(self.notices)
        self.flush()
        self.wait(lambda: any(n.get("type") == "saved" for n in self.notices[seen:]), timeout, "saved")
        return next(n["version"] for n in self.notices[seen:] if n.get("type") == "saved")


def _var_uint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


class FakePeer(YDocClient):
    """A Peer of services/collab.py without a socket: messages are handled at once, replies go
    to the room through `rooms.receive`."""

    def __init__(self, rooms: Any, can_edit: bool = True, client_id: int | None = None) -> None:
        super().__init__(None, client_id)
        self.rooms, self.can_edit = rooms, can_edit
        self.user_id: Any = None
        self.room: Any = None
        self.pending: list[bytes] = []  # what it answered while joining, before it had the room
        self.sender = self._to_room

    def _to_room(self, message: bytes) -> None:
        if self.room is None:
            self.pending.append(message)
        else:
            self.rooms.receive(self.room, self, message)

    def join(self, session_id: Any) -> FakePeer:
        self.pending = []
        self.room = self.rooms.join(session_id, self)
        for message in self.pending:
            self.rooms.receive(self.room, self, message)
        self.start_sync()
        return self

    def leave(self) -> None:
        """Go offline: edits stay local until the next join."""
        self.rooms.leave(self.room, self)
        self.room = None

    def send(self, message: bytes) -> None:
        """From the room (the Peer protocol)."""
        self.handle(message)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class WsClient(YDocClient):
    """Over a real WebSocket (websocket-client), with a reader thread."""

    def __init__(self, url: str, client_id: int | None = None) -> None:
        super().__init__(None, client_id)
        self.url = url
        self.ws: Any = None
        self.sender = self._send
        self._reader: threading.Thread | None = None
        self.connect()

    def _send(self, message: bytes) -> None:
        import websocket

        if self.ws is not None:
            self.ws.send(message, opcode=websocket.ABNF.OPCODE_BINARY)

    def connect(self) -> None:
        import websocket

        self.synced.clear()
        self.ws = websocket.create_connection(self.url, timeout=15)
        self._reader = threading.Thread(target=self._read, args=(self.ws,), daemon=True)
        self._reader.start()
        self.start_sync()
        self.wait(self.synced.is_set, what="the first sync")

    def _read(self, ws: Any) -> None:
        import websocket

        try:
            while True:
                opcode, data = ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    self.closed = (code, data[2:].decode(errors="replace"))
                    return
                if opcode in (websocket.ABNF.OPCODE_BINARY, websocket.ABNF.OPCODE_TEXT):
                    self.handle(data)
        except Exception:  # noqa: BLE001 - the socket ended
            if self.closed is None:
                self.closed = (1006, "")

    def disconnect(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            ws.close()
        if self._reader is not None:
            self._reader.join(5)
