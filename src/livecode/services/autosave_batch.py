"""Group commit for autosave (issue 11): the autosaves that arrive in one process while another
batch is being written go together in the next one: one conditional UPDATE for all of them and one
commit (one WAL flush), then each request is answered. No Flask.

Each row keeps its own condition (the session, the caller's right to edit it, the version the
client edited when it named one), so a batch changes exactly what the same saves one by one would
have changed; `RETURNING` says which rows it changed, and a save whose condition did not hold goes
to the same failure path (404, 403 or 409) as a lone one. A batch holds a session at most once:
PostgreSQL would apply only one of two rows joined to the same session, so a second save of a
session waits for the next batch (saves of one session keep their order).

No timer and no thread of its own: the first save that finds no batch in flight writes alone at
once (a lone save costs what it did); the saves that arrive meanwhile queue, and when that write
returns the oldest of them writes the next batch with all the queued ones. Under load the batch
grows by itself to what arrived during one write. A request is answered only after the statement
that holds its row returned, i.e. after the commit (autocommit; `synchronous_commit` decides the
flush, as for any write of the service).
"""

from __future__ import annotations

import functools
import threading
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, Text, any_, bindparam, case, column, func, or_, update
from sqlalchemy.dialects.postgresql import ARRAY

from ..db import Database, is_unavailable
from ..models import CodeSession, utcnow
from .access import Need, session_access

MAX_BATCH = 128  # rows in one statement (a process has at most its thread count waiting)

_SAVED = (CodeSession.version, CodeSession.updated_at, CodeSession.history_at, CodeSession.doc_version)


@dataclass(eq=False)
class Save:
    """One autosave waiting for its batch. `wake` is held while it waits: releasing it is the
    signal (the cheapest wake-up CPython has)."""

    sid: uuid.UUID
    owner: uuid.UUID | None
    expected: int | None
    source: str
    interval_s: float
    wake: Any = field(default_factory=threading.Lock)
    lead: bool = False  # woken to write the next batch, not with its answer
    answered: bool = False
    row: Any = None  # the RETURNING row; None: its condition did not hold
    error: BaseException | None = None
    now: datetime | None = None  # the time the batch wrote (updated_at; history_at when moved)


@functools.cache
def _batch_statement() -> Any:
    """The batch's UPDATE on PostgreSQL: the saves bound as arrays (unnest), each row joined to its
    session with its own condition; RETURNING names the rows it changed by their index. Built
    once: its compiled form is cached whatever the batch's size."""
    uuid_type = CodeSession.id.type
    sids = bindparam("b_sid", type_=ARRAY(uuid_type))
    rows = func.unnest(
        bindparam("b_idx", type_=ARRAY(Integer)), sids,
        bindparam("b_owner", type_=ARRAY(uuid_type)), bindparam("b_expected", type_=ARRAY(Integer)),
        bindparam("b_src", type_=ARRAY(Text)), bindparam("b_hcut", type_=ARRAY(CodeSession.history_at.type)),
    ).table_valued(
        column("idx", Integer), column("sid", uuid_type), column("owner", uuid_type), column("expected", Integer),
        column("src", Text), column("hcut", CodeSession.history_at.type),
    ).render_derived()
    due = or_(CodeSession.history_at.is_(None), CodeSession.history_at <= rows.c.hcut)
    now = bindparam("now", type_=CodeSession.updated_at.type)
    return (
        update(CodeSession)
        .where(
            # id = ANY(the ids) besides the join: the sessions are found by their key whatever the
            # table's size (joined alone, PostgreSQL read the whole table past a few dozen rows).
            CodeSession.id == any_(sids),
            CodeSession.id == rows.c.sid,
            or_(rows.c.owner.is_(None), session_access(Need.EDIT, rows.c.owner)),
            or_(rows.c.expected.is_(None), CodeSession.version == rows.c.expected),
        )
        .values(source_code=rows.c.src, version=CodeSession.version + 1, updated_at=now,
                history_at=case((due, now), else_=CodeSession.history_at))
        .returning(rows.c.idx, *_SAVED)
    )


WriteOne = Callable[[Database, Save, datetime], Any]


class AutosaveBatcher:
    """One per process and database (batcher_for). `write_one(db, save, now)` writes a lone save
    with the ordinary statement (services/sessions.py), returning its row or None."""

    def __init__(self, db: Database, write_one: WriteOne, max_batch: int = MAX_BATCH) -> None:
        self._db = db
        self._write_one = write_one
        self._max = max_batch
        self._mutex = threading.Lock()
        self._queue: list[Save] = []
        self._writing = False

    def save(self, save: Save) -> Save:
        """Write `save` (alone or in a batch) and return it answered: `row` (None when its
        condition did not hold) and `now`, or `error` (the batch's database error)."""
        with self._mutex:
            lead = not self._writing
            if lead:
                self._writing = True
            else:
                save.wake.acquire()  # held: the leader's release() wakes us
                self._queue.append(save)
        if not lead:
            save.wake.acquire()
            if not save.lead:
                return save
        self._lead(save)
        return save

    def queued(self) -> int:
        """How many saves wait for the batch in flight to end."""
        with self._mutex:
            return len(self._queue)

    def _lead(self, first: Save) -> None:
        with self._mutex:
            batch, taken = [first], {first.sid}
            rest = []
            for s in self._queue:
                if len(batch) < self._max and s.sid not in taken:
                    batch.append(s)
                    taken.add(s.sid)
                else:
                    rest.append(s)
            self._queue = rest
        try:
            self._write(batch)
        except BaseException as exc:  # a failure outside the statement: no save is left unanswered
            for s in batch:
                if not s.answered:
                    s.error, s.answered = exc, True
        finally:
            with self._mutex:
                nxt = self._queue.pop(0) if self._queue else None
                self._writing = nxt is not None
            for s in batch[1:]:
                s.wake.release()
            if nxt is not None:
                nxt.lead = True
                nxt.wake.release()

    def _write(self, batch: list[Save]) -> None:
        now = utcnow()
        for s in batch:
            s.now = now
        if len(batch) == 1 or self._db.is_sqlite:
            for s in batch:
                self._alone(s, now)
            return
        # In the sessions' order: two processes' batches lock their rows in the same order, so
        # they cannot wait on each other in a cycle.
        rows_in = sorted(range(len(batch)), key=lambda i: batch[i].sid)
        params = {
            "b_idx": rows_in, "b_sid": [batch[i].sid for i in rows_in], "b_owner": [batch[i].owner for i in rows_in],
            "b_expected": [batch[i].expected for i in rows_in], "b_src": [batch[i].source for i in rows_in],
            "b_hcut": [now - timedelta(seconds=batch[i].interval_s) for i in rows_in], "now": now,
        }
        try:
            rows = self._db.all_written(_batch_statement(), params)
        except Exception as exc:  # noqa: BLE001 - sorted below
            if not _write_alone_after(exc) and is_unavailable(exc):  # away: every save of the batch says so
                for s in batch:
                    s.error, s.answered = exc, True
                return
            # Anything else (a deadlock with another process's batch, a row PostgreSQL refused):
            # the whole statement was rolled back; each save is written alone, with its own answer.
            for s in batch:
                self._alone(s, now)
            return
        for r in rows:
            batch[r[0]].row = r
        for s in batch:
            s.answered = True

    def _alone(self, s: Save, now: datetime) -> None:
        try:
            s.row = self._write_one(self._db, s, now)
        except Exception as exc:  # noqa: BLE001 - the waiting request raises it
            s.error = exc
        s.answered = True


def _write_alone_after(exc: BaseException) -> bool:
    """A failure of the batch's statement alone, not of the database, though psycopg raises it as
    an OperationalError: a deadlock or serialization failure (SQLSTATE class 40: another writer
    locked two of the batch's rows in another order) or a statement or lock timeout (57014). Each
    save is then written alone, as for any other refused batch."""
    code = getattr(getattr(exc, "orig", None), "sqlstate", None) or ""
    return code.startswith("40") or code == "57014"


_batchers: weakref.WeakKeyDictionary[Database, AutosaveBatcher] = weakref.WeakKeyDictionary()
_batchers_lock = threading.Lock()


def batcher_for(db: Database, write_one: WriteOne) -> AutosaveBatcher:
    batcher = _batchers.get(db)
    if batcher is None:
        with _batchers_lock:
            batcher = _batchers.get(db)
            if batcher is None:
                batcher = _batchers[db] = AutosaveBatcher(db, write_one)
    return batcher
