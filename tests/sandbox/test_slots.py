"""Slot uids are exclusive per host uid: locks are named by uid (so workers with overlapping uid
ranges exclude each other), and a uid that owns live processes is never handed out."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from livecode.sandbox import SandboxUnavailable, hostfs
from livecode.sandbox.hostfs import SlotPool, uid_has_processes

from .helpers import TEST_SLOTS, TEST_UID_BASE, requires_bwrap

pytestmark = requires_bwrap  # root: flock in a root-only directory, processes of other uids


def drain(pool: SlotPool) -> set[int]:
    """Every uid the pool hands out until none is left."""
    uids = set()
    while True:
        try:
            uids.add(pool.uid_base + pool.acquire(timeout_s=0.2))
        except SandboxUnavailable:
            return uids


def test_overlapping_uid_ranges_never_hand_out_the_same_uid(tmp_path: Path) -> None:
    half = TEST_SLOTS // 2
    a = SlotPool(tmp_path / "locks", half, TEST_UID_BASE)
    b = SlotPool(tmp_path / "locks", half, TEST_UID_BASE + half // 2)
    got_a, got_b = drain(a), drain(b)
    assert got_a and got_b
    assert not got_a & got_b, f"uids handed out twice: {sorted(got_a & got_b)}"


def test_a_uid_with_live_processes_is_skipped(tmp_path: Path) -> None:
    free = [u for u in range(TEST_UID_BASE, TEST_UID_BASE + TEST_SLOTS) if not uid_has_processes(u)]
    if not free:
        pytest.skip("every test uid is busy")
    uid = free[-1]

    def become() -> None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)

    # A process of that uid the pool knows nothing of: a worker with another lock directory.
    foreign = subprocess.Popen(["sleep", "60"], preexec_fn=become)
    try:
        pool = SlotPool(tmp_path / "locks", TEST_SLOTS, TEST_UID_BASE)
        assert uid not in drain(pool)
    finally:
        foreign.kill()
        foreign.wait()
    assert pool.uid_base + pool.acquire(timeout_s=5) == uid  # free again once it is gone


def as_uid(uid: int) -> Callable[[], None]:
    def become() -> None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)

    return become


def test_a_slot_is_handed_out_without_a_scan_of_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan of /proc costs ~5 us per process of the host: whether a uid has processes is asked
    of the kernel instead, at every acquire."""
    def scan(uids: range) -> set[int]:
        raise AssertionError("/proc scanned")

    monkeypatch.setattr(hostfs, "uids_with_processes", scan)
    # Uids of no other test's runner: with this private lock dir, their sandboxes would look foreign.
    pool = SlotPool(tmp_path / "locks", 4, TEST_UID_BASE + TEST_SLOTS + 8)
    for clean in (True, False) * 10:
        pool.release(pool.acquire(timeout_s=1), clean=clean)


def test_a_foreign_process_on_a_uid_released_clean_is_found_at_once(tmp_path: Path) -> None:
    pool = SlotPool(tmp_path / "locks", TEST_SLOTS, TEST_UID_BASE)
    slot = pool.acquire()
    pool.release(slot, clean=True)
    uid = pool.uid_base + slot
    foreign = subprocess.Popen(["sleep", "60"], preexec_fn=as_uid(uid))  # no lock accounts for it
    try:
        assert uid not in drain(pool)
    finally:
        foreign.kill()
        foreign.wait()
