"""The log of a co-edited document: every Yjs update and awareness change, in order, shared by
every API process that hosts the document's editors (services/collab.py).

Distributed: one Redis stream per session. A process that opens the document reads the whole
stream (the first entry is the seed built from the session's source; compaction replaces a prefix
with a snapshot), then one reader thread per process follows every stream it hosts with a
blocking XREAD, so an update typed on one process reaches the editors on the others. Embedded:
the same interface over an in-process store (one process hosts every editor, so the log is only
the document's memory between editors).

Entry kinds: "u" a Yjs update, "s" a snapshot (the whole state, also a Yjs update), "a" an
awareness update, "p" the document was written into the session's source (data: JSON
{"version", "sha"}), "r" a REST save changed the session (data: JSON {"version"}): the
processes hosting the document merge it from the row. `origin` names the process that wrote it,
so it skips its own.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import redis

SEED = "s"
UPDATE = "u"
AWARENESS = "a"
PERSISTED = "p"
SAVED = "r"


@dataclass(frozen=True)
class LogEntry:
    session_id: str
    entry_id: str
    kind: str
    data: bytes
    origin: str


class CollabLog(Protocol):
    def seed(self, session_id: str, state: bytes, origin: str) -> bool:
        """Write `state` as the first entry if the log has none (one writer wins); True if written."""
        ...

    def load(self, session_id: str) -> list[LogEntry]:
        """Every entry, oldest first."""
        ...

    def append(self, session_id: str, kind: str, data: bytes, origin: str) -> str:
        """Add an entry; returns its id. Refreshes the log's time to live."""
        ...

    def notify(self, session_id: str, kind: str, data: bytes, origin: str) -> None:
        """Add an entry only if the log exists (someone co-edited the document lately)."""
        ...

    def read(self, cursors: dict[str, str], block_ms: int, reader: str = "") -> list[LogEntry]:
        """Entries after each session's cursor (an entry id, "0" for all), waiting up to `block_ms`
        for the first, or for wake(reader)."""
        ...

    def wake(self, reader: str) -> None:
        """End `reader`'s blocking read now (it has a new document to follow)."""
        ...

    def compact(self, session_id: str, state: bytes, through: str, origin: str) -> None:
        """Add `state` (which holds every update up to entry `through`) and drop the entries up to
        `through`: later entries, from other processes, stay."""
        ...


def _key(session_id: str) -> str:
    return f"livecode:collab:{session_id}"


def _wake_key(reader: str) -> str:
    # Not under livecode:collab: (a session's stream): a reader's own wake-up line.
    return f"livecode:collab-wake:{reader}"


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _next_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


# The seed is written only into an empty log: two processes opening a document at once must not
# both seed it (two seeds are two different insertions of the same text: it would appear twice).
_SEED_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('XADD', KEYS[1], '*', 'k', 's', 'd', ARGV[1], 'o', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


# One round trip, and no stream made for a document nobody co-edits.
_NOTIFY_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[1], '*', 'k', ARGV[1], 'd', ARGV[2], 'o', ARGV[3])
return 1
"""


class RedisCollabLog:
    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._seed = client.register_script(_SEED_SCRIPT)
        self._notify = client.register_script(_NOTIFY_SCRIPT)

    def notify(self, session_id: str, kind: str, data: bytes, origin: str) -> None:
        self._notify(keys=[_key(session_id)], args=[kind, data, origin])

    def seed(self, session_id: str, state: bytes, origin: str) -> bool:
        return bool(self._seed(keys=[_key(session_id)], args=[state, origin, self.ttl_s]))

    def load(self, session_id: str) -> list[LogEntry]:
        rows: Any = self.client.xrange(_key(session_id))
        return [self._entry(session_id, i, f) for i, f in rows]

    def append(self, session_id: str, kind: str, data: bytes, origin: str) -> str:
        key = _key(session_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(key, {"k": kind, "d": data, "o": origin})
        pipe.expire(key, self.ttl_s)
        return _text(pipe.execute()[0])

    def read(self, cursors: dict[str, str], block_ms: int, reader: str = "") -> list[LogEntry]:
        streams = {_key(sid): cursor for sid, cursor in cursors.items()}
        if reader:
            streams[_wake_key(reader)] = "$"
        if not streams:
            time.sleep(block_ms / 1000)
            return []
        got: Any = self.client.xread(streams, block=block_ms or None, count=500)  # type: ignore[arg-type]
        out = []
        for key, rows in got or []:
            name = _text(key)
            if not name.startswith("livecode:collab:"):
                continue  # the wake-up stream
            sid = name.rsplit(":", 1)[1]
            out += [self._entry(sid, i, f) for i, f in rows]
        return out

    def wake(self, reader: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(_wake_key(reader), {"w": "1"}, maxlen=10, approximate=True)
        pipe.expire(_wake_key(reader), 60)
        pipe.execute()

    def compact(self, session_id: str, state: bytes, through: str, origin: str) -> None:
        key = _key(session_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(key, {"k": SEED, "d": state, "o": origin})
        pipe.xtrim(key, minid=_next_id(through))
        pipe.expire(key, self.ttl_s)
        pipe.execute()

    @staticmethod
    def _entry(session_id: str, entry_id: bytes | str, f: dict[bytes, bytes]) -> LogEntry:
        return LogEntry(session_id, _text(entry_id), _text(f[b"k"]), f[b"d"], _text(f[b"o"]))


class MemoryCollabLog:
    """The embedded mode's log: per session a list of entries and the time of the last one."""

    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._logs: dict[str, tuple[float, list[LogEntry]]] = {}
        self._seq = 0
        self._woken: dict[str, bool] = {}
        self._cond = threading.Condition()

    def _live(self, session_id: str) -> list[LogEntry] | None:
        now = time.monotonic()
        for sid in [s for s, (t, _) in self._logs.items() if now - t > self.ttl_s]:
            del self._logs[sid]
        got = self._logs.get(session_id)
        return got[1] if got else None

    def _add(self, session_id: str, kind: str, data: bytes, origin: str) -> str:
        self._seq += 1
        entry = LogEntry(session_id, f"{self._seq}-0", kind, bytes(data), origin)
        entries = self._live(session_id) or []
        entries.append(entry)
        self._logs[session_id] = (time.monotonic(), entries)
        self._cond.notify_all()
        return entry.entry_id

    def seed(self, session_id: str, state: bytes, origin: str) -> bool:
        with self._cond:
            if self._live(session_id):
                return False
            self._add(session_id, SEED, state, origin)
            return True

    def load(self, session_id: str) -> list[LogEntry]:
        with self._cond:
            return list(self._live(session_id) or [])

    def append(self, session_id: str, kind: str, data: bytes, origin: str) -> str:
        with self._cond:
            return self._add(session_id, kind, data, origin)

    def notify(self, session_id: str, kind: str, data: bytes, origin: str) -> None:
        with self._cond:
            if self._live(session_id):
                self._add(session_id, kind, data, origin)

    def read(self, cursors: dict[str, str], block_ms: int, reader: str = "") -> list[LogEntry]:
        deadline = time.monotonic() + block_ms / 1000
        with self._cond:
            while True:
                out = [
                    e
                    for sid, cursor in cursors.items()
                    for e in self._logs.get(sid, (0.0, []))[1]
                    if _seq_of(e.entry_id) > _seq_of(cursor)
                ]
                left = deadline - time.monotonic()
                if out or left <= 0 or self._woken.pop(reader, False):
                    return sorted(out, key=lambda e: _seq_of(e.entry_id))
                self._cond.wait(left)

    def wake(self, reader: str) -> None:
        with self._cond:
            self._woken[reader] = True
            self._cond.notify_all()

    def compact(self, session_id: str, state: bytes, through: str, origin: str) -> None:
        with self._cond:
            self._add(session_id, SEED, state, origin)
            t, entries = self._logs[session_id]
            self._logs[session_id] = (t, [e for e in entries if _seq_of(e.entry_id) > _seq_of(through)])


def _seq_of(entry_id: str) -> int:
    return int(entry_id.partition("-")[0] or 0)
