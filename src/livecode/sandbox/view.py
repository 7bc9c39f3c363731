"""The fixed part of every sandbox's view (/etc and /dev), prepared on the host and bound whole.

bubblewrap re-reads the whole mount table (/proc/self/mountinfo: the host's mounts and the
sandbox's so far) after every bind it makes, to remount what lies under it read-only: about a
third of its CPU per sandbox. Bound one by one, the /etc entries the toolchains need took 7 binds,
and bwrap's own `--dev` 6 device binds, a devpts instance, the empty tmpfs over it and two
remounts. Here the worker prepares both once, in a root-owned directory of its own:

- etc/: copies of the host's ETC_ENTRIES (those that exist) and the sandbox's passwd and group;
- dev/: what `--dev` made: the six device nodes (mknod, with the host's numbers and modes), its
  symlinks, an empty shm/ (a tmpfs goes there) and an empty pts/ (no ptys);

and every sandbox binds etc/ read-only on /etc and dev/ on /dev: 2 mounts and 2 reads of the
mount table instead of 16 and 15, the same entries inside. dev/ is shared by every sandbox, so it
is made read-only on the host, once, by binding it onto itself read-only (bubblewrap's own
read-only remount would add nodev, which disables the nodes): a sandbox's bind of it inherits
that, so no run can even touch a node's timestamps, which would be a mark another run could read.
Nothing in it could be created, removed, renamed or chmod'ed anyway: every entry is owned by the
host's root, which the sandbox's user namespace does not map.

In step with the host: at most every CHECK_S seconds, on a sandbox's set-up, the copy is compared
with the host (names, types, modes, sizes, mtimes; a changed symlink changes its directory's
mtime). Any difference (a package upgrade, or a tmp cleaner that touched the copy) builds a new
view for the next sandboxes. A view is removed once no sandbox built with it is left. Each
process holds an flock on its views: the views of a process that died are removed by the next
one that starts.

Where a view cannot be used the sandbox gets the binds one by one as before: the views' directory
is not reachable by the run uids (bubblewrap opens the source as the run's uid), or it cannot be
built; only /dev falls back to `--dev` where mknod or the read-only bind is refused (no
CAP_SYS_ADMIN) or the filesystem is mounted nodev.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import glob
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# fontconfig's, and Debian's matplotlib reads its defaults from /etc/matplotlibrc.
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "fonts", "matplotlibrc")
ETC_GLOBS = ("java-*-openjdk",)  # the JDK's conf/ links into here
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")  # bwrap's --dev binds these
DEV_LINKS = (
    ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
    ("fd", "/proc/self/fd"), ("core", "/proc/kcore"), ("ptmx", "pts/ptmx"),
)  # fmt: skip
DEV_DIRS = ("shm", "pts")
CHECK_S = 5.0
_PREFIX = "view-"
_ORPHAN_AGE_S = 60.0  # a view this young may be one another process is still creating and locking


def etc_sources() -> list[str]:
    """The host's /etc entries a sandbox sees: those of ETC_ENTRIES and ETC_GLOBS that exist."""
    paths = [f"/etc/{name}" for name in ETC_ENTRIES]
    paths += [p for pattern in ETC_GLOBS for p in sorted(glob.glob(f"/etc/{pattern}"))]
    return [p for p in paths if os.path.exists(p)]


def default_root() -> Path:
    """Where the views live: the temporary directory, which every uid can traverse."""
    return Path(tempfile.gettempdir()) / "livecode-views"


@dataclass(eq=False)
class View:
    path: Path
    fd: int  # the view directory, flock'd while this process may use it
    sources: list[str]  # the host paths copied into etc/
    dev: bool  # dev/ was made (else bwrap's --dev)
    users: int = 0  # sandboxes set up with it and not yet cleaned up
    mntns: int | None = None  # the lean mount namespace bubblewrap starts in (spawner.py), made with the view

    @property
    def etc(self) -> str:
        return str(self.path / "etc")

    @property
    def devdir(self) -> str:
        return str(self.path / "dev")


class HostViews:
    """This process's views; `acquire()` one per sandbox and `release()` it at its clean-up."""

    def __init__(
        self,
        root: Path,
        files: dict[str, bytes],
        *,
        sources: Callable[[], list[str]] = etc_sources,
        check_s: float = CHECK_S,
        clock: Callable[[], float] = time.monotonic,
        namespace: Callable[[Path], int | None] | None = None,
    ) -> None:
        self.root = root
        self.namespace = namespace  # a view's lean mount namespace (an fd), made once its dev/ is bound
        self.files = files  # extra files of etc/ (passwd, group)
        self.sources = sources
        self.check_s = check_s
        self.clock = clock
        self._lock = threading.Lock()
        self._current: View | None = None
        self._checked: float | None = None  # when the view was last compared with the host
        self._usable: bool | None = None  # None: not decided yet

    def acquire(self) -> View | None:
        """The view for a new sandbox (rebuilt first if the host changed), or None: bind the
        host's entries one by one."""
        with self._lock:
            if self._usable is None:
                self._usable = self._start()
            if not self._usable:
                return None
            now = self.clock()
            view = self._current
            if self._checked is None or now - self._checked >= self.check_s:
                self._checked = now
                if view is None or not _mirrors_all(view, self.sources(), self.files):
                    view = self._replace()
            if view is None:  # binding the host's entries is right whatever happened
                return None
            view.users += 1
            return view

    def release(self, view: View | None) -> None:
        if view is None:
            return
        with self._lock:
            view.users -= 1
            if view.users == 0 and view is not self._current:
                _remove(view)

    def close(self) -> None:
        """Remove the current view once no sandbox uses it; a later sandbox builds a new one."""
        with self._lock:
            view, self._current, self._checked = self._current, None, None
            if view is not None and view.users == 0:
                _remove(view)

    def _start(self) -> bool:
        try:
            _ensure_root(self.root)
        except OSError as e:
            log.warning("sandbox views unavailable (%s): /etc and /dev are bound entry by entry", e)
            return False
        unreachable = _unreachable(self.root)
        if unreachable is not None:
            log.warning(
                "%s cannot be traversed by the run uids: /etc and /dev are bound entry by entry "
                "(slower: point TMPDIR at a directory every user can traverse)",
                unreachable,
            )
            return False
        _remove_orphans(self.root)
        return True

    def _replace(self) -> View | None:
        old, self._current = self._current, None
        if old is not None and old.users == 0:
            _remove(old)  # else its last sandbox's release removes it
        try:
            self._current = _build(self.root, self.sources(), self.files)
            if self.namespace is not None:  # after dev/'s bind, which the namespace must hold
                self._current.mntns = self.namespace(self._current.path)
        except OSError:  # tried again at the next check; till then, binds entry by entry
            log.exception("could not build the sandbox's /etc and /dev view; binding entry by entry")
        return self._current


def _ensure_root(root: Path) -> None:
    """The views' directory: ours, not a symlink, writable by us only, traversable by all."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o711)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise OSError(f"{root} is not a directory owned by uid {os.geteuid()}")
    if stat.S_IMODE(st.st_mode) != 0o711:
        os.chmod(root, 0o711)


def _unreachable(path: Path) -> str | None:
    """The first directory from / down to `path` that other users cannot traverse, if any."""
    for d in [*reversed(path.parents), path]:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return str(d)
    return None


def _build(root: Path, sources: list[str], files: dict[str, bytes]) -> View:
    path = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=root))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)  # ours while we live (_remove_orphans)
    view = View(path, fd, sources, dev=False)
    try:
        os.chmod(path, 0o711)
        etc = path / "etc"
        etc.mkdir()
        for src in sources:  # the entry itself followed, as bubblewrap's bind did; links inside kept
            dest = etc / os.path.basename(src)
            if os.path.isdir(src):
                shutil.copytree(src, dest, symlinks=True, ignore=_special_files)
            else:
                shutil.copy2(src, dest)
        for name, data in files.items():
            (etc / name).write_bytes(data)
            os.chmod(etc / name, 0o644)
        os.chmod(etc, 0o755)
        view.dev = _make_dev(path / "dev")
    except BaseException:
        _remove(view)
        raise
    return view


def _make_dev(dev: Path) -> bool:
    """What bubblewrap's --dev makes, or False (then --dev is used) where nodes cannot work."""
    try:
        dev.mkdir()
        for name in DEV_NODES:
            host = os.stat(f"/dev/{name}")
            if not stat.S_ISCHR(host.st_mode):
                raise OSError(f"/dev/{name} is not a character device")
            os.mknod(dev / name, stat.S_IFCHR | stat.S_IMODE(host.st_mode), host.st_rdev)
            os.chmod(dev / name, stat.S_IMODE(host.st_mode))  # mknod's mode went through the umask
        for name, target in DEV_LINKS:
            os.symlink(target, dev / name)
        for name in DEV_DIRS:
            (dev / name).mkdir()
            os.chmod(dev / name, 0o755)
        os.chmod(dev, 0o755)
        with open(dev / "null", "wb"):  # refused on a nodev filesystem (or by a device cgroup)
            pass
        _bind_read_only(dev)
    except OSError as e:
        log.info("device nodes unusable in %s (%s): sandboxes get bubblewrap's --dev", dev, e)
        return False
    return True


_MS_RDONLY, _MS_NOSUID, _MS_REMOUNT, _MS_BIND = 0x1, 0x2, 0x20, 0x1000
_MNT_DETACH = 0x2
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _bind_read_only(path: Path) -> None:
    """`path` bound onto itself, then that bind made read-only (devices still allowed)."""
    target = os.fsencode(path)
    for flags in (_MS_BIND, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID):
        if _libc.mount(target, target, None, flags, None) != 0:
            err = ctypes.get_errno()
            if flags != _MS_BIND:
                _unmount(path)
            raise OSError(err, f"read-only bind of {path}: {os.strerror(err)}")


def _unmount(path: Path) -> None:
    """Undo _bind_read_only (nothing where it was never bound)."""
    _libc.umount2(os.fsencode(path), _MNT_DETACH)


def _special_files(directory: str, names: list[str]) -> list[str]:
    """Sockets, FIFOs and devices are not copied (a FIFO would block the copy)."""
    return [n for n in names if not _copied(os.lstat(os.path.join(directory, n)).st_mode)]


def _copied(mode: int) -> bool:
    return stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def _mirrors_all(view: View, sources: list[str], files: dict[str, bytes]) -> bool:
    """Whether the view's etc/ still mirrors the host's entries (and holds our files, and its dev/
    is intact)."""
    if sources != view.sources:
        return False
    try:
        if sorted(os.listdir(view.etc)) != sorted([*(os.path.basename(p) for p in sources), *files]):
            return False
        for src in sources:
            if not _mirrors(os.stat(src), src, os.path.join(view.etc, os.path.basename(src))):
                return False
        return not view.dev or sorted(os.listdir(view.devdir)) == _DEV_NAMES
    except OSError:
        return False


_DEV_NAMES = sorted([*DEV_NODES, *DEV_DIRS, *(name for name, _ in DEV_LINKS)])


def _mirrors(host: os.stat_result, host_path: str, copy_path: str) -> bool:
    """One entry and, for a directory, everything in it: type and mode, then a file's size and
    mtime, a directory's names and mtime (a symlink replaced or re-pointed changes it)."""
    copy = os.lstat(copy_path)
    if host.st_mode != copy.st_mode:
        return False
    if stat.S_ISLNK(host.st_mode):
        return True
    if host.st_mtime_ns != copy.st_mtime_ns:
        return False
    if stat.S_ISREG(host.st_mode):
        return host.st_size == copy.st_size
    with os.scandir(host_path) as it:
        inner = {e.name: e for e in it}
    with os.scandir(copy_path) as it:
        names = sorted(e.name for e in it)
    kept = sorted(n for n, e in inner.items() if _copied(e.stat(follow_symlinks=False).st_mode))
    if kept != names:
        return False
    for name in kept:
        entry = inner[name]
        if entry.is_symlink():
            continue
        if not _mirrors(entry.stat(follow_symlinks=False), entry.path, os.path.join(copy_path, name)):
            return False
    return True


def _remove(view: View) -> None:
    if view.mntns is not None:
        os.close(view.mntns)
        view.mntns = None
    _unmount(view.path / "dev")
    shutil.rmtree(view.path, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.close(view.fd)


def _remove_orphans(root: Path) -> None:
    """Views whose process is gone: nobody holds their flock."""
    for entry in os.scandir(root):
        if not entry.name.startswith(_PREFIX):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if time.time() - os.fstat(fd).st_mtime < _ORPHAN_AGE_S:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process's
            _unmount(Path(entry.path) / "dev")
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)
