"""Host-side helpers: private directories, uid slots, the child-subreaper flag."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import stat
import threading
import time
from pathlib import Path

from .types import NoFreeSlot, SandboxUnavailable

log = logging.getLogger(__name__)

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


DEFAULT_LOCK_DIR = Path("/run/livecode/slots")
_FOREIGN_RECHECK_S = 1.0  # a uid found busy with foreign processes is skipped this long
# A uid lock file's content once its last holder saw all the uid's processes gone. This code
# asks the kernel at every acquire instead; still written for the workers of the host that run
# an older version (which trust it while their last /proc scan is recent).
_CLEAN = b"c"


class SlotPool:
    """Hands out run slots; slot n runs as host uid uid_base+n.

    A uid is a host-wide resource (its RLIMIT_NPROC counts every process of that uid, whichever
    worker started it), so the lock is per uid, not per slot number, and lives in a host-wide
    directory (default /run/livecode/slots) that every worker on the host shares, whatever its
    data directory or TMPDIR. flock() makes a uid exclusive across threads, processes and
    containers that see the same directory; ranges of different workers may overlap.
    As a second guard, a uid that still owns processes (a worker using another lock directory, a
    leftover) is skipped: the kernel is asked at every acquire (uid_has_processes), which costs
    about a microsecond for a uid without processes, where a scan of /proc cost ~5 us per
    process of the host."""

    def __init__(self, lock_dir: Path, count: int, uid_base: int) -> None:
        try:
            self.lock_dir = ensure_private_dir(lock_dir)
        except OSError as e:
            raise SandboxUnavailable(
                f"cannot create the slot lock directory {lock_dir}: {e}; set LIVECODE_SANDBOX_LOCK_DIR to a "
                "writable directory shared by every worker on this host"
            ) from e
        self.count = count
        self.uid_base = uid_base
        _warn_if_container_private(self.lock_dir)
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}  # slot -> fd holding the flock
        self._warned: set[int] = set()
        self._foreign_until: dict[int, float] = {}  # uid -> when to look at its processes again

    def acquire(self, timeout_s: float = 60.0, below: int | None = None) -> int:
        """A free slot, waiting up to `timeout_s` for one. `below`: only slots under it (sandboxes
        built ahead leave the rest to the runs that build their own: see reserved())."""
        deadline = time.monotonic() + timeout_s
        while True:
            for slot in range(self.count if below is None else min(below, self.count)):
                with self._lock:
                    if slot in self._held:
                        continue
                    uid = self.uid_base + slot
                    if self._foreign_until.get(uid, 0.0) > time.monotonic():
                        continue
                    fd = os.open(
                        self.lock_dir / f"uid-{uid}.lock",
                        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                        0o600,
                    )
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        os.close(fd)
                        continue
                    if uid_has_processes(uid):
                        os.close(fd)
                        self._warn_foreign(uid)
                        self._foreign_until[uid] = time.monotonic() + _FOREIGN_RECHECK_S
                        continue
                    os.pwrite(fd, b"-", 0)  # in use: until its release, its processes may be around
                    self._held[slot] = fd
                    return slot
            if time.monotonic() >= deadline:
                raise NoFreeSlot(
                    f"no free sandbox slot: uids {self.uid_base}..{self.uid_base + self.count - 1} are all busy on "
                    "this host (every worker on a host shares them: raise LIVECODE_SANDBOX_SLOTS)"
                )
            time.sleep(0.01)

    def reserved(self) -> int:
        """Slots (the highest) that sandboxes built ahead never take: however many a compile's
        tests or the spares announce, on every worker of the host, a run that builds its own
        sandbox finds one of these free rather than waiting for a built-ahead one to be used."""
        return max(1, self.count // 4)

    def release(self, slot: int, clean: bool = False) -> None:
        """`clean`: every process the holder started as the slot's uid is gone (killed and reaped).
        Written for workers of older versions sharing the lock directory, which then need not look
        for them in /proc; this version asks the kernel at every acquire."""
        with self._lock:
            fd = self._held.pop(slot, None)
        if fd is not None:
            if clean:
                with contextlib.suppress(OSError):
                    os.pwrite(fd, _CLEAN, 0)
            os.close(fd)  # closing drops the flock

    def _warn_foreign(self, uid: int) -> None:
        if uid not in self._warned:
            self._warned.add(uid)
            log.warning(
                "sandbox uid %d owns processes this worker did not start (another worker with a different "
                "LIVECODE_SANDBOX_LOCK_DIR, or a leftover); skipping it while they live",
                uid,
            )


def _warn_if_container_private(lock_dir: Path) -> None:
    """In a container, a lock directory on the container's own root file system is seen by no
    other container of the host (each replica would hand out the same uids): say so."""
    in_container = (
        os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv") or "KUBERNETES_SERVICE_HOST" in os.environ
    )
    if in_container and os.stat(lock_dir).st_dev == os.stat("/").st_dev:
        log.warning(
            "slot lock directory %s is private to this container: mount the host's directory there (a bind mount "
            "or hostPath shared by every worker on the host), or give each replica its own LIVECODE_SANDBOX_UID_BASE "
            "range; otherwise two replicas run programs as the same uid",
            lock_dir,
        )


def uid_has_processes(uid: int) -> bool:
    """Whether a process (or zombie, or thread) whose real uid is `uid` exists in our pid
    namespace, as the kernel sees it: getpriority(PRIO_USER) fails with ESRCH when there is none.
    ~1 us when the kernel holds nothing of the uid (no user_struct: the usual case for a free
    slot); otherwise it looks at every thread of the host (~20 us hot for 1,200), in C. A scan of
    /proc (uids_with_processes, ~5 us per process of the host) is the fallback where the call is
    refused."""
    try:
        os.getpriority(os.PRIO_USER, uid)
    except ProcessLookupError:
        return False
    except OSError:  # refused (a seccomp profile): look through /proc
        return bool(uids_with_processes(range(uid, uid + 1)))
    return True


def uids_with_processes(uids: range) -> set[int]:
    """The uids of `uids` that own a process (or zombie) visible in /proc. The owner of /proc/PID
    is the process's effective uid (root for one that made itself non-dumpable), which for
    sandbox processes is also their real uid; one stat per process (~5 us each)."""
    found: set[int] = set()
    with os.scandir("/proc") as it:
        for entry in it:
            if entry.name.isdigit():
                try:
                    owner = entry.stat(follow_symlinks=False).st_uid
                except OSError:
                    continue  # exited meanwhile
                if owner in uids:
                    found.add(owner)
    return found


class OrphanReaper:
    """Finishes, in the background, what a run's clean-up could not: reaps sandbox processes that
    were still exiting when their run ended (as a child subreaper we inherit them; unreaped, their
    zombies would count against the slot uid's RLIMIT_NPROC), and removes run cgroups the kernel
    still held busy (their last processes being released) for up to CGROUP_RETRY_S."""

    CGROUP_RETRY_S = 300.0

    def __init__(self) -> None:
        self._pids: set[int] = set()
        self._dirs: dict[Path, float] = {}  # cgroup directory -> give up at (monotonic)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, pids: set[int]) -> None:
        with self._lock:
            self._pids |= pids
            self._start()

    def add_cgroups(self, dirs: list[Path]) -> None:
        with self._lock:
            until = time.monotonic() + self.CGROUP_RETRY_S
            self._dirs.update((d, until) for d in dirs)
            self._start()

    def _start(self) -> None:
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
                for d, until in list(self._dirs.items()):
                    try:
                        os.rmdir(d)
                    except FileNotFoundError:
                        pass
                    except OSError as e:
                        if e.errno == errno.EBUSY and time.monotonic() < until:
                            continue
                        log.warning("cannot remove cgroup %s: %s", d, e)
                    del self._dirs[d]
                if not self._pids and not self._dirs:
                    self._thread = None
                    return
