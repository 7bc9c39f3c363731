"""A co-edited session's document as PostgreSQL keeps it: the truth that no Redis fault can lose.
No Flask, no Redis.

The session row holds, beside its text, `doc_state` (the document as one Yjs update) and
`doc_version` (the row version whose text that state has). A room's write sets both with the
text (services/sessions.autosave's `doc_state`); every other save (a REST autosave, a restore)
changes only the text, so `doc_version < version` says the state lacks a save. `merged()`
brings the state up to date: the change from the state's text to the row's is made on a copy of
the state (a CRDT update, services/collab_doc.set_files) and stored by an UPDATE conditional on
the row being as read, so that update is made once, by whoever comes first (a room that hosts
the document, or the next one to open it), and every room merges the same update: no text
twice. A room never writes over a version whose state it has
not merged (services/collab.py), so a save acknowledged with a 2xx is in the document's next
write, whatever happened to Redis meanwhile.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select, update

from ..db import Database
from ..models import CodeSession
from . import collab_doc as yd
from . import programs

_RACES = 8  # another save, or another merger, between a read and its conditional write


@dataclass(frozen=True)
class Stored:
    """A session's program and its document state, as of `version` (the state's texts are the
    program's files)."""

    version: int
    language: str
    program: programs.Program
    state: bytes

    @property
    def sha(self) -> str:
        return yd.files_sha(dict(self.program.files))


def _read(db: Database, session_id: uuid.UUID) -> tuple[int, str, programs.Program, bytes | None, int | None] | None:
    with db.read(fresh=True) as s:
        row = s.execute(
            select(
                CodeSession.version, CodeSession.language, CodeSession.source_code, CodeSession.files,
                CodeSession.entry, CodeSession.doc_state, CodeSession.doc_version,
            ).where(CodeSession.id == session_id)
        ).first()
    if row is None:
        return None
    program = programs.session_program(row.language, row.source_code, row.files, row.entry)
    return row.version, row.language, program, row.doc_state, row.doc_version


def _store(db: Database, session_id: uuid.UUID, version: int, seen: int | None, state: bytes) -> bool:
    """Set the state as of `version`, if the row is still at `version` and its state still as of
    `seen` (None: never co-edited)."""
    cond = CodeSession.doc_version.is_(None) if seen is None else CodeSession.doc_version == seen
    with db.write_core() as conn:
        done = conn.execute(
            update(CodeSession)
            .where(CodeSession.id == session_id, CodeSession.version == version, cond)
            .values(doc_state=state, doc_version=version)
            .returning(CodeSession.version)
        ).first()
    return done is not None


def merged(db: Database, session_id: uuid.UUID, start: bytes | None = None) -> Stored | None:
    """The session's document state with every save merged (stored first when a merge was due);
    None when the session is gone. `start`: the state to
    begin from when the session was never co-edited (the document Redis still holds from before;
    None: seeded from the text)."""
    for _ in range(_RACES):
        got = _read(db, session_id)
        if got is None:
            return None
        version, language, program, state, doc_version = got
        if state is not None and doc_version == version:
            return Stored(version, language, program, state)
        doc = yd.new_doc()
        base = state if state is not None else start
        if base is not None:
            doc.apply_update(base)
        yd.set_files(doc, list(program.files))
        if yd.doc_entry(doc) not in (None, program.entry):
            yd.set_entry(doc, program.entry)  # the save named another entry than the document's
        new_state = doc.get_update()
        if _store(db, session_id, version, doc_version if state is not None else None, new_state):
            return Stored(version, language, program, new_state)
    raise RuntimeError(f"the session {session_id} kept changing while its document was merged")


def version_of(db: Database, session_id: uuid.UUID) -> int | None:
    """The session's version (None: gone): a room's cheap check that it missed no save."""
    with db.read(fresh=True) as s:
        return s.execute(select(CodeSession.version).where(CodeSession.id == session_id)).scalar()
