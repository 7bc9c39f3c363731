"""The co-edited document and the Yjs sync protocol's framing, with pycrdt (the Yrs CRDT that Yjs
clients speak to byte for byte). No Flask, no Redis.

The document is a Y.Map named "files" of Y.Text keyed by file path. A session with one source
(today's sessions) has one entry, SINGLE_FILE_KEY; multi-file sessions (`files: [{path,
content}]`) will hold one entry per path: `file_texts()` and `seed_state()` are the seam.

Only the server seeds a document (from the session's source); clients never create the texts,
so two clients cannot each insert the same file (which a CRDT would keep twice).
"""

from __future__ import annotations

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
SINGLE_FILE_KEY = "source_code"
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
    "SINGLE_FILE_KEY",
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
    "single_text",
    "sync_step2",
]


def new_doc() -> Doc:
    # allow_multithreading: a room's document is touched by its connections' threads, the log
    # reader and the persister, one at a time under the room's lock.
    return Doc(allow_multithreading=True)


def _files(doc: Doc) -> Map:
    return doc.get(FILES, type=Map)


def seed_state(source_code: str) -> bytes:
    """The document of a single-source session, as one Yjs update."""
    doc = new_doc()
    _files(doc)[SINGLE_FILE_KEY] = Text(source_code)
    return doc.get_update()


def file_texts(doc: Doc) -> dict[str, str]:
    """Every file's text, by path."""
    return {path: str(value) for path, value in _files(doc).items() if isinstance(value, Text)}


def single_text(doc: Doc) -> str:
    """The single-source session's text: what is written into `source_code`."""
    return file_texts(doc).get(SINGLE_FILE_KEY, "")


def doc_bytes(doc: Doc) -> int:
    """The document's size as autosave measures a source: UTF-8 bytes (pycrdt's Text length is
    in UTF-8 bytes), summed over the files."""
    return sum(len(value) for value in _files(doc).values() if isinstance(value, Text))


def set_text(doc: Doc, new: str, key: str = SINGLE_FILE_KEY) -> bytes:
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
