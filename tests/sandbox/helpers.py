"""Shared helpers for the sandbox tests."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from livecode.sandbox import Runner, RunRequest, RunResult, SandboxLimits, get_runner

# The tests' own uid range (see conftest), so they never collide with a worker on the host.
TEST_UID_BASE = int(os.environ.get("LIVECODE_TEST_UID_BASE", "62000"))
TEST_SLOTS = 16  # a few runners at once, each with spares and sandboxes built ahead for tests
# Wall-clock limits that only budget for the program's own start-up are multiplied by this where
# everything is slower: scripts/test-cgroup-v2 sets it for its emulated (TCG) VM. 1 elsewhere.
TIME_FACTOR = float(os.environ.get("LIVECODE_TEST_TIME_FACTOR", "1"))
REPO = Path(__file__).resolve().parents[2]

requires_bwrap = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None,
    reason="the bwrap sandbox needs root (to create cgroups and drop to per-slot uids) and "
    "bubblewrap (apt-get install bubblewrap; see scripts/install-system-deps.sh)",
)


# The sandbox's compiled C helpers (launcher, spawn helper, seccomp filter), built once per test
# process by the sandbox conftest, or by the host's gcc for scripts/test-cgroup-v2's emulated VM
# (LIVECODE_TEST_PREBUILT_DIR), where each runner's own build took 10-20 s. Copied into every new
# runner's cache dir; a copy whose source hash no longer matches is simply not used (rebuilt).
PREBUILT: Path | None = None


def seed_cache(cache: Path) -> None:
    """Put the prebuilt helpers into a runner's (new) root-only cache dir."""
    if PREBUILT is None:
        return
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    for f in PREBUILT.iterdir():
        if f.is_file() and not (cache / f.name).exists():
            shutil.copy2(f, cache / f.name)


def make_runner(base: Path, pool: int, **kw: Any) -> Runner:
    """A bubblewrap runner of the tests' own uid range in a private `base` dir, checked."""
    base.chmod(0o700)
    seed_cache(base / "cache")
    r = get_runner(
        "bwrap",
        work_root=str(base / "work"),
        cache_dir=str(base / "cache"),
        uid_base=TEST_UID_BASE,
        slots=TEST_SLOTS,
        pool_size=pool,
        **kw,
    )
    r.check()
    return r


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


IDLE_POOL_EXES = {"/usr/bin/bwrap", "/.livecode-launcher"}


def warm_idle(pid: str) -> bool:
    """A spare sandbox's warm-started program (warm.py) still waiting for its run: a child of
    the launcher (or of a template's copy outside, enter.py), blocked opening its entry FIFO
    (the kernel's wait for a FIFO's writer)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            if f.read() != "wait_for_partner":
                return False
        with open(f"/proc/{pid}/stat") as f:
            ppid = f.read().rsplit(")", 1)[1].split()[1]
        if os.readlink(f"/proc/{ppid}/exe") == "/.livecode-launcher":
            return True
        # An entered warm start (enter.py): a template's copy, its parent the copy outside that
        # waits for it (root, the template's interpreter).
        return os.stat(f"/proc/{ppid}").st_uid == 0 and os.readlink(f"/proc/{ppid}/exe").startswith("/usr/bin/python3")
    except OSError:
        return False


def leftovers() -> list[tuple[int, int, str]]:
    """Processes of the tests' uids other than idle pre-built sandboxes (bwrap and its launcher
    waiting for a job, a warm-started program waiting for its run; /proc/PID/exe and the kernel's
    wait channel cannot be faked by the program, unlike its name)."""
    found = []
    for pid, uid in processes_of_uids(TEST_UID_BASE, TEST_SLOTS):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue  # exited meanwhile, or a zombie
        if exe not in IDLE_POOL_EXES and not warm_idle(str(pid)):
            found.append((pid, uid, exe))
    return found


def no_leftovers(deadline_s: float = 3.0) -> bool:
    """No leftover process, allowing a moment for a spare sandbox being built right now (its
    forked child is briefly a copy of this interpreter before it execs bwrap). A real leftover,
    like the tests' daemons that loop forever, is still there at the deadline."""
    end = time.monotonic() + deadline_s
    while leftovers():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def host_uids_of_cmdline(token: str) -> set[int]:
    """Real uids, as the host sees them, of processes whose argv contains `token`."""
    uids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if token.encode() in argv:
            uid_line = _status_field(pid, "Uid")
            if uid_line is not None:
                uids.add(int(uid_line.split()[0]))
    return uids
