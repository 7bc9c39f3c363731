"""Shared helpers for the sandbox tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from livecode.sandbox import Runner, RunRequest, RunResult, SandboxLimits

# The tests' own uid range (see conftest), so they never collide with a worker on the host.
TEST_UID_BASE = 62000
TEST_SLOTS = 8
REPO = Path(__file__).resolve().parents[2]

requires_bwrap = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None,
    reason="the bwrap sandbox needs root (to create cgroups and drop to per-slot uids) and "
    "bubblewrap (apt-get install bubblewrap; see scripts/install-system-deps.sh)",
)


def run(
    runner: Runner, lang: str, source: str, *, stdin: str = "", args: tuple[str, ...] = (), **limits: int
) -> RunResult:
    return runner.run(RunRequest(lang, source, stdin=stdin, args=args, limits=SandboxLimits(**limits)))


def _status_field(pid: str, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def processes_of_uids(first: int, count: int) -> list[tuple[int, int]]:
    """(pid, real uid) of every host process whose real uid is in [first, first+count)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        uid_line = _status_field(pid, "Uid")
        if uid_line is None:
            continue
        uid = int(uid_line.split()[0])
        if first <= uid < first + count:
            found.append((int(pid), uid))
    return found


def sandboxed_processes() -> list[tuple[int, int]]:
    """(pid, real uid) of host processes inside a run's cgroup (…/livecode/run-*)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                text = f.read()
        except OSError:
            continue
        if "/livecode/run-" in text:
            uid_line = _status_field(pid, "Uid")
            if uid_line is not None:
                found.append((int(pid), int(uid_line.split()[0])))
    return found


def no_leftovers() -> bool:
    return not processes_of_uids(TEST_UID_BASE, TEST_SLOTS)
