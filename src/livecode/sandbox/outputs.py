"""Files a run leaves in `out/` under its work directory (plots, CSVs), brought back to the host.

The host reads them itself, as root, from a directory descriptor it opened on the sandbox's work
directory before the program started (`hold_sandbox_dir`): the descriptor keeps the run's tmpfs
alive after its mount namespace is gone, and it is reached through the launcher's /proc/PID/root,
one component at a time with O_NOFOLLOW, so it never leads outside the sandbox's own tmpfs.
Collection (`collect`) runs only once every process of the run is dead (nothing is still writing)
and trusts nothing the program made:

- only regular files with a single link (no symlink, hard link, FIFO, device or socket is ever
  opened for reading: each is opened O_NOFOLLOW | O_NONBLOCK and checked with fstat first), on
  the work directory's own filesystem;
- names must be printable UTF-8 without backslashes; directories are walked to a bounded depth, and
  a bounded number of directories and entries is looked at;
- at most `max_files` files and `max_bytes` in all; a file that does not fit is skipped whole
  (never cut) and the run is reported `truncated`. Reads are bounded by the budget.

Knows nothing of Flask, Celery or SQL.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

OUT_DIR = "out"
MAX_DEPTH = 8  # out/a/b/... deeper directories are not walked
MAX_ENTRIES = 4096  # directory entries looked at per run, whatever they are
MAX_DIRS = 64  # directories walked per run (each holds a descriptor during the walk)
MAX_NAME = 255
MAX_PATH = 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO never waits for a writer (and fstat then refuses it); O_NOCTTY: a
# terminal device never becomes ours. Neither can happen to a regular file.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True)
class OutputLimits:
    """How much of `out/` a run may keep."""

    max_files: int = 32
    max_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class OutputFile:
    path: str  # relative to out/, "/"-separated
    data: bytes


@dataclass
class Collected:
    files: list[OutputFile] = field(default_factory=list)
    truncated: bool = False  # something was left out for a limit


def valid_name(name: str) -> bool:
    """A path component we keep: printable UTF-8, no separators or backslashes, not . or .."""
    if not name or name in (".", "..") or len(name) > MAX_NAME:
        return False
    try:
        name.encode("utf-8")  # surrogate escapes (undecodable bytes) fail here
    except UnicodeEncodeError:
        return False
    return not any(ch in "/\\" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name)


def has_entries(work_fd: int) -> bool:
    """Whether out/ holds anything (the sandbox makes it empty before the program starts)."""
    try:
        out_fd = os.open(OUT_DIR, _DIR_FLAGS, dir_fd=work_fd)
    except OSError:
        return False
    try:
        with os.scandir(out_fd) as it:
            return next(it, None) is not None
    except OSError:
        return False
    finally:
        os.close(out_fd)


def collect(work_fd: int, limits: OutputLimits) -> Collected:
    """The files under `out/` of the directory `work_fd`, within `limits`. Call it only once
    nothing can write there any more."""
    result = Collected()
    try:
        out_fd = os.open(OUT_DIR, _DIR_FLAGS, dir_fd=work_fd)
    except OSError:  # no out/, or not a directory (a symlink to one is refused too)
        return result
    walk = _Walk(os.fstat(work_fd).st_dev, result)
    walk.dir_fds.append(out_fd)
    try:
        if os.fstat(out_fd).st_dev != walk.dev:
            return result
        try:
            walk.list(out_fd, "", 0)
        except OSError:  # a directory that cannot be listed: keep what was found, say so
            result.truncated = True
        budget, count = limits.max_bytes, 0
        for path, dir_fd, name in sorted(walk.found):
            if count >= limits.max_files:
                result.truncated = True
                break
            data = _read_regular(dir_fd, name, walk.dev, budget)
            if data is None:
                continue  # not a plain file after all
            if not isinstance(data, bytes):  # _TOO_BIG
                result.truncated = True
                continue
            budget -= len(data)
            count += 1
            result.files.append(OutputFile(path, data))
    finally:
        for fd in walk.dir_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
    return result


class _Walk:
    """Regular-looking entries under out/ (by lstat: a symlink is never followed), depth-first."""

    def __init__(self, dev: int, result: Collected) -> None:
        self.dev, self.result = dev, result
        self.found: list[tuple[str, int, str]] = []  # (path, dir fd, name)
        self.dir_fds: list[int] = []
        self.entries = 0

    def list(self, dir_fd: int, prefix: str, depth: int) -> None:
        subdirs: list[str] = []
        with os.scandir(dir_fd) as it:
            for entry in it:
                self.entries += 1
                if self.entries > MAX_ENTRIES:
                    self.result.truncated = True
                    break
                name = entry.name
                path = f"{prefix}{name}"
                if not valid_name(name) or len(path) > MAX_PATH:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    self.found.append((path, dir_fd, name))
                elif stat.S_ISDIR(st.st_mode):
                    subdirs.append(name)
        for name in sorted(subdirs):
            if depth + 1 >= MAX_DEPTH or self.entries > MAX_ENTRIES or len(self.dir_fds) >= MAX_DIRS:
                self.result.truncated = True
                continue
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                continue
            self.dir_fds.append(sub)
            if os.fstat(sub).st_dev == self.dev:
                self.list(sub, f"{prefix}{name}/", depth + 1)


_TOO_BIG = object()


def _read_regular(dir_fd: int, name: str, dev: int, budget: int) -> bytes | object | None:
    """The file's bytes; None if it is not a single-link regular file of the work filesystem;
    _TOO_BIG if it does not fit in `budget` (or changed while read). Reads at most budget+1."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_dev != dev:
            return None
        if st.st_size > budget:
            return _TOO_BIG
        chunks, got = [], 0
        want = st.st_size + 1  # one byte more than fstat said tells a file that grew
        while got < want:
            chunk = os.read(fd, min(want - got, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got != st.st_size:
            return _TOO_BIG  # it changed under us: never keep part of a file
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def hold_sandbox_dir(
    pids: Callable[[], list[int]], launcher_exe: str, path: str, timeout_s: float = 10.0
) -> int | None:
    """A directory descriptor of `path` (absolute, as the sandbox sees it) inside the sandbox whose
    pid 1 is the launcher among `pids()` (the run's cgroup). Waits until the launcher runs: it is
    exec'd only once bubblewrap has set up every mount, so its root is the sandbox's final root.
    Call it before the job is sent: then no program of the run exists yet, and the cgroup holds
    only bubblewrap and the launcher. None if that does not happen in time, or if the sandbox is
    gone (its cgroup emptied again: bubblewrap failed)."""
    deadline = time.monotonic() + timeout_s
    pause = 0.0005
    seen = False  # a sandbox being built joins its cgroup a moment after it is spawned
    while True:
        running = pids()
        if seen and not running:
            return None
        seen = seen or bool(running)
        for pid in running:
            try:
                if os.readlink(f"/proc/{pid}/exe") != launcher_exe:
                    continue
                root = os.open(f"/proc/{pid}/root", _DIR_FLAGS & ~os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                return open_beneath(root, path)
            finally:
                os.close(root)
        if time.monotonic() > deadline:
            return None
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def open_beneath(root_fd: int, path: str) -> int | None:
    """Open directory `path` under root_fd one component at a time, following no symlink."""
    fd = os.dup(root_fd)
    try:
        for part in path.strip("/").split("/"):
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except OSError:
        os.close(fd)
        return None
    return fd
