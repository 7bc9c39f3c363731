"""The co-edited document and the Yjs sync protocol's framing, with pycrdt (the Yrs CRDT that Yjs
clients speak to byte for byte). No Flask, no Redis.

The document is a Y.Map named "files" of Y.Text keyed by file path: a multi-file session's
program (`files: [{path, content}]`) has one entry per path; a single-source session has one,
at its language's default path (`main.py`, ...), which is what its `source_code` holds. A Y.Map
named "meta" holds "entry", the file that runs, once anyone changed it through the document or
a save merged it (absent: the session's entry).

The server seeds a document from the session's program. Editors add, rename and delete files
in the map: two editors adding the same path at once is one key of a map, so one of the two
texts wins (the same on every peer, nothing kept twice); a rename is a new text with the old
one's content and the old key deleted, in one transaction.
"""

from __future__ import annotations

import hashlib
import json

from pycrdt import (
    Decoder,
    Doc,
    Map,
    Text,
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
    create_sync_message,
    create_update_message,
    write_message,
    write_var_uint,
)

FILES = "files"
META = "meta"
ENTRY = "entry"
EMPTY_UPDATE = b"\x00\x00"
# Our own message type beside y-protocols' sync (0), awareness (1), auth (2) and query-awareness
# (3): a JSON text. Server to client: {"type": "saved", "version"} when the document was written
# into the session's source, {"type": "error", "code", "message"} before a refusal closes the
# socket. Client to server: {"type": "flush"} (write now, e.g. before Run).
LIVECODE = 100

__all__ = [
    "EMPTY_UPDATE",
    "FILES",
    "LIVECODE",
    "YMessageType",
    "YSyncMessageType",
    "awareness_clients",
    "create_awareness_message",
    "create_sync_message",
    "create_update_message",
    "doc_bytes",
    "file_texts",
    "livecode_message",
    "new_doc",
    "read_payload",
    "seed_state",
    "set_text",
    "files_sha",
    "set_files",
    "sync_step2",
]


def new_doc() -> Doc:
    # allow_multithreading: a room's document is touched by its connections' threads, the log
    # reader and the persister, one at a time under the room's lock.
    return Doc(allow_multithreading=True)


def _files(doc: Doc) -> Map:
    return doc.get(FILES, type=Map)


def doc_entry(doc: Doc) -> str | None:
    """The entry the document names, if any."""
    value = doc.get(META, type=Map).get(ENTRY)
    return value if isinstance(value, str) and value else None


def set_entry(doc: Doc, entry: str) -> None:
    meta = doc.get(META, type=Map)
    if meta.get(ENTRY) != entry:
        meta[ENTRY] = entry


def seed_state(files: list[tuple[str, str]]) -> bytes:
    """The document of a session's program ((path, content) pairs), as one Yjs update."""
    doc = new_doc()
    with doc.transaction():
        for path, content in files:
            _files(doc)[path] = Text(content)
    return doc.get_update()


def file_texts(doc: Doc) -> dict[str, str]:
    """Every file's text, by path."""
    return {path: str(value) for path, value in _files(doc).items() if isinstance(value, Text)}


def files_sha(texts: dict[str, str]) -> str:
    """One digest of a set of files, the same on every process (which file runs is not in it)."""
    return hashlib.sha256(json.dumps(sorted(texts.items()), ensure_ascii=False).encode()).hexdigest()


def doc_bytes(doc: Doc) -> int:
    """The document's size as autosave measures a source: UTF-8 bytes (pycrdt's Text length is
    in UTF-8 bytes), summed over the files."""
    return sum(len(value) for value in _files(doc).values() if isinstance(value, Text))


def set_files(doc: Doc, files: list[tuple[str, str]]) -> bytes:
    """Make the document hold exactly `files` (each text changed as set_text does, files no
    longer there removed); returns the Yjs update."""
    before = doc.get_state()
    with doc.transaction():
        wanted = dict(files)
        for path in [p for p in list(_files(doc).keys()) if p not in wanted]:  # noqa: SIM118
            del _files(doc)[path]
        for path, content in files:
            set_text(doc, content, path)
    return doc.get_update(before)


def set_text(doc: Doc, new: str, key: str) -> bytes:
    """Make a file's text `new` with the smallest single replacement (common prefix and suffix
    kept), so what others type meanwhile outside that span survives; returns the Yjs update (empty
    update when nothing changed). Used to merge a REST autosave into the document."""
    files = _files(doc)
    text = files.get(key)
    before = doc.get_state()
    with doc.transaction():
        if not isinstance(text, Text):
            files[key] = Text(new)
        else:
            old = str(text)
            if old == new:
                return EMPTY_UPDATE
            p = 0
            limit = min(len(old), len(new))
            while p < limit and old[p] == new[p]:
                p += 1
            s = 0
            while s < limit - p and old[-1 - s] == new[-1 - s]:
                s += 1
            # pycrdt's indices are UTF-8 byte offsets.
            start = len(old[:p].encode())
            end = len(old[: len(old) - s].encode())
            if end > start:
                del text[start:end]
            middle = new[p : len(new) - s]
            if middle:
                text.insert(start, middle)
    return doc.get_update(before)


def read_payload(message: bytes, offset: int) -> bytes:
    """The length-prefixed payload at `offset` of a message (y-protocols' writeVarUint8Array)."""
    return Decoder(message[offset:]).read_message() or b""


def sync_step2(doc: Doc, state_vector: bytes) -> bytes:
    """The SYNC_STEP2 reply to a peer's state vector: what it lacks."""
    return bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP2]) + write_message(doc.get_update(state_vector))


def livecode_message(payload: str) -> bytes:
    data = payload.encode()
    return bytes([LIVECODE]) + write_var_uint(len(data)) + data


def awareness_clients(update: bytes) -> list[tuple[int, bool]]:
    """The (client id, still here) pairs an awareness update carries."""
    decoder = Decoder(update)
    out = []
    for _ in range(decoder.read_var_uint()):
        client_id = decoder.read_var_uint()
        decoder.read_var_uint()  # clock
        state = decoder.read_var_string()
        out.append((client_id, state not in ("", "null")))
    return out
