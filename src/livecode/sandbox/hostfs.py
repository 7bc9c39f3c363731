"""Host-side helpers: private directories, uid slots, the child-subreaper flag."""

from __future__ import annotations

import ctypes
import fcntl
import os
import stat
import threading
import time
from pathlib import Path

from .types import SandboxUnavailable

_PR_SET_CHILD_SUBREAPER = 36


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (0700, owned by us) or verify an existing one; never follow a symlink."""
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise SandboxUnavailable(
            f"{path} exists but is not a directory owned by uid {os.geteuid()}; remove it or choose another directory"
        )
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def set_child_subreaper() -> None:
    """Orphans of our children (bubblewrap's helpers, daemons) are reparented to us to reap."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise SandboxUnavailable(f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(err)}")


class SlotPool:
    """Hands out run slots; slot n runs as uid base+n. flock() makes slots exclusive across
    threads and across worker processes sharing the same lock directory."""

    def __init__(self, lock_dir: Path, count: int) -> None:
        self.lock_dir = ensure_private_dir(lock_dir)
        self.count = count
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}  # slot -> fd holding the flock

    def acquire(self, timeout_s: float = 60.0) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            for slot in range(self.count):
                with self._lock:
                    if slot in self._held:
                        continue
                    fd = os.open(
                        self.lock_dir / f"slot-{slot}.lock",
                        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                        0o600,
                    )
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        os.close(fd)
                        continue
                    self._held[slot] = fd
                    return slot
            if time.monotonic() > deadline:
                raise SandboxUnavailable("no free sandbox slot (all uids busy)")
            time.sleep(0.01)

    def release(self, slot: int) -> None:
        with self._lock:
            fd = self._held.pop(slot, None)
        if fd is not None:
            os.close(fd)  # closing drops the flock


class OrphanReaper:
    """Reaps, in the background, sandbox processes that were still exiting when their run
    ended (as a child subreaper we inherit them; unreaped, their zombies would count against
    the slot uid's RLIMIT_NPROC)."""

    def __init__(self) -> None:
        self._pids: set[int] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, pids: set[int]) -> None:
        with self._lock:
            self._pids |= pids
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="sandbox-reaper", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(0.1)
            with self._lock:
                for pid in list(self._pids):
                    try:
                        done, _ = os.waitpid(pid, os.WNOHANG)
                    except ChildProcessError:
                        done = pid if not os.path.exists(f"/proc/{pid}") else 0
                    if done:
                        self._pids.discard(pid)
                if not self._pids:
                    self._thread = None
                    return
