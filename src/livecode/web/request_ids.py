"""Request ids: 32 random hex digits each, as `uuid.uuid4().hex` gave, drawn 256 at a time.

Every request that brings no X-Request-ID of its own gets one. `uuid4()` asks the kernel for
16 bytes per request (a getrandom call, during which the thread lets go of the GIL and must
then wait for it again among the others), then builds a UUID object to print it. Here one call
gives the next 256 ids. They are as random as before (the same source, 128 bits each instead of
uuid4's 122), so as unique and as unguessable; none is handed out twice: each is taken from a
list iterator, whose next() is one indivisible step under the GIL, and a process forked with
ids left over throws them away (the parent could hand out the same ones)."""

from __future__ import annotations

import os
from collections.abc import Iterator

BATCH = 256
_EMPTY: Iterator[str] = iter(())
_ids: list[Iterator[str]] = [_EMPTY]  # the current batch, replaced whole


def _draw() -> Iterator[str]:
    digits = os.urandom(16 * BATCH).hex()
    return iter([digits[i:i + 32] for i in range(0, 32 * BATCH, 32)])


def new_request_id() -> str:
    """A fresh id: 32 lowercase hex digits."""
    while True:
        try:
            return next(_ids[0])
        except StopIteration:
            # Two threads may both find the batch spent and both draw one: one batch is then
            # dropped part-used, which costs nothing; no id is given twice.
            _ids[0] = _draw()


def _forget_after_fork() -> None:
    _ids[0] = _EMPTY


os.register_at_fork(after_in_child=_forget_after_fork)
