"""Slot uids are host-wide: two workers on one host with different data directories and TMPDIRs
(as two container replicas with their own /tmp) never run two programs as the same host uid at
once. Sharing a uid shares its process limit (RLIMIT_NPROC counts every process of the uid), and
the runs then fail with `fork: Resource temporarily unavailable`."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from tests.support.stack import Stack

pytestmark = [
    pytest.mark.integration, pytest.mark.sandbox, pytest.mark.slow, pytest.mark.usefixtures("restored_stack"),
]

MARK = b"lc-slot-"
CHILDREN = 3
# Each run keeps its slot ~2 s with CHILDREN processes named after the run (argv[0]), so the
# host can see which uid each run holds.
PROGRAM = f"""
pids=""
for i in $(seq {CHILDREN}); do (exec -a "lc-slot-$1" sleep 2) & pids="$pids $!"; done
ok=0
for p in $pids; do wait "$p" && ok=$((ok+1)); done
echo "ok=$ok"
"""


def _marked() -> dict[tuple[int, str], tuple[str, int]]:
    """(pid, start time) -> (run tag, real uid) of every host process named by a run."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        key = _identity(name)
        if key is not None:
            found[(int(name), key[0])] = (key[1], key[2])
    return found


def _identity(pid: str) -> tuple[str, str, int] | None:
    """(start time, tag, real uid) of a marked process, None for any other (or a gone) one."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
        if not argv0.startswith(MARK):
            return None
        with open(f"/proc/{pid}/stat") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]
        with open(f"/proc/{pid}/status") as f:
            uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return start, argv0[len(MARK) :].decode(), uid


class UidSampler(threading.Thread):
    """Samples which run holds which host uid. A sample counts only the processes still alive
    (same pid and start time) in a second pass after the whole first pass: two runs seen on one
    uid were then both alive at the moment the second pass began, not one after the other."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.shared: list[tuple[int, set[str]]] = []
        self.seen: dict[str, set[int]] = defaultdict(set)
        self.samples = 0

    def run(self) -> None:
        while not self.stop.is_set():
            first = _marked()
            by_uid: dict[int, set[str]] = defaultdict(set)
            for (pid, start), (tag, uid) in first.items():
                if _identity(str(pid)) == (start, tag, uid):
                    by_uid[uid].add(tag)
                    self.seen[tag].add(uid)
            self.shared += [(uid, tags) for uid, tags in by_uid.items() if len(tags) > 1]
            self.samples += 1
            time.sleep(0.02)


def test_two_workers_with_their_own_directories_never_share_a_uid(stack: Stack, tmp_path: Path) -> None:
    # Few slots, so the two workers' uids overlap fully; each worker alone could use them all
    # (3 runs + 1 pre-built sandbox = 4 slots).
    for name in ("a", "b"):
        for sub in ("tmp", "data"):
            (tmp_path / f"{sub}-{name}").mkdir()
        stack.start_worker(
            f"slots-{name}",
            concurrency=3,
            TMPDIR=str(tmp_path / f"tmp-{name}"),
            LIVECODE_DATA_DIR=str(tmp_path / f"data-{name}"),
            LIVECODE_SANDBOX_SLOTS="4",
            LIVECODE_SANDBOX_POOL="1",
        )
    api = stack.client()
    runs = 14  # more than the 6 run threads of the two workers, and than the 4 uids
    tags = [uuid.uuid4().hex[:12] for _ in range(runs)]
    sampler = UidSampler()
    sampler.start()
    t0 = time.monotonic()
    try:
        ids = []
        for tag in tags:
            session = api.create_session(PROGRAM, "bash")
            r = api.execute(session["session_id"], args=[tag], max_processes=6, time_limit_ms=30_000)
            assert r.status_code == 202, r.text
            ids.append(r.json()["execution_id"])
        results = [api.wait_execution(eid, timeout=240) for eid in ids]
    finally:
        sampler.stop.set()
        sampler.join(10)
        print(f"{runs} runs in {time.monotonic() - t0:.1f} s, {sampler.samples} samples")

    for tag, res in zip(tags, results, strict=True):
        what = (tag, res["status"], res["reason"], res["stdout"][-200:], res["stderr"][-500:])
        assert res["status"] == "COMPLETED", what
        assert "Resource temporarily unavailable" not in res["stderr"] and "fork" not in res["stderr"], what
        assert res["stdout"].strip() == f"ok={CHILDREN}", what
    assert {res["worker"] for res in results} == {"slots-a@fault", "slots-b@fault"}, "both workers must run"
    assert not sampler.shared, f"runs sharing a host uid at the same moment (uid, runs): {sampler.shared[:5]}"
    # The check above saw the runs: most of them were sampled, each on exactly one uid.
    assert len(sampler.seen) >= runs // 2, (sampler.samples, dict(sampler.seen))
    assert all(len(uids) == 1 for uids in sampler.seen.values()), dict(sampler.seen)
