"""Request ids (web/request_ids.py): drawn from the kernel 256 at a time, each still 32 random hex
digits, never the same twice, across threads and across forked processes (a gunicorn worker
inherits its parent's memory, the batch in progress included)."""

from __future__ import annotations

import os
import re
import threading

from livecode.web.request_ids import BATCH, new_request_id

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def test_ids_have_uuid4_hex_form_and_are_unique_across_threads() -> None:
    seen: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def take(mine: list[str]) -> None:
        start.wait()
        mine.extend(new_request_id() for _ in range(3 * BATCH + 7))

    threads = [threading.Thread(target=take, args=(mine,)) for mine in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for mine in seen for i in mine]
    assert all(HEX32.match(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_process_does_not_hand_out_its_parents_ids() -> None:
    new_request_id()  # a batch in progress, with ids left over, when the process forks
    children = []
    for _ in range(3):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its next ids, to the parent
            try:
                os.close(r)
                os.write(w, "".join(new_request_id() for _ in range(8)).encode())
            finally:
                os._exit(0)
        os.close(w)
        children.append((pid, r))
    ids = [new_request_id() for _ in range(8)]
    for pid, r in children:
        data = b""
        while chunk := os.read(r, 4096):
            data += chunk
        os.close(r)
        os.waitpid(pid, 0)
        text = data.decode()
        assert len(text) == 8 * 32
        ids += [text[i:i + 32] for i in range(0, len(text), 32)]
    assert len(set(ids)) == len(ids) == 32
