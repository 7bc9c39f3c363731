"""Compiled programs cached by sha256(language, toolchain version, compile command, files).

The cache lives in a root-owned 0700 directory that no sandbox ever sees: entries are handed to
runs as open file descriptors (bubblewrap copies them into the run's tmpfs), never bind-mounted.

A compile stage's tar stream is written to an unlinked file in the cache directory as it arrives
(never held in memory), then unpacked from it, in-kernel, into a new entry. The cache is bounded
(`max_bytes`): when a put takes it over the bound, least recently used entries are evicted. Every
thread and worker process of a host may share one directory, so:
- recency is the entry directory's mtime, set on every hit (one utime, no lock);
- the running totals live in a small state file updated under an flock, and only a put that takes
  the total over the bound scans the directory (which also corrects any drift);
- an entry is evicted by renaming it away first (a lookup then misses cleanly) and deleting it
  after; a run that already holds its files' descriptors keeps them (unlinked files live on).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .files import FileSpec
from .hostfs import ensure_private_dir

if TYPE_CHECKING:
    from .languages import Language
    from .program import SourceFile

_OUTPUT_NAME = "compile_output.txt"
_STATE = ".state.json"
_LOCK = ".lock"
_INCOMING = ".incoming"
_LOW_WATER = 0.9  # evict down to this share of the bound, so scans stay rare
_STALE_S = 3600  # leftovers of a crashed put or eviction older than this are removed by a scan
DEFAULT_MAX_MB = 2048
PAGE = 4096  # a file takes whole pages of the run's tmpfs


def cache_key(lang: Language, version: str, argv: Sequence[str], files: Sequence[SourceFile]) -> str:
    """The key of a compiled program: the toolchain, the compile command as run (which names
    the files) and every file's path and content (a header changes the program too)."""
    material = json.dumps(
        [
            lang.id,
            version,
            list(argv),
            list(lang.artifacts),
            sorted((f.path, hashlib.sha256(f.data).hexdigest()) for f in files),
        ],
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def valid_artifact_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\0" not in name and not name.startswith(".")


def pages(size: int) -> int:
    """Bytes a file of `size` takes in a tmpfs."""
    return -(-size // PAGE) * PAGE


class ArtifactTooLarge(ValueError):
    """The compiled program does not fit the run's disk; `size` is its size in tmpfs pages."""

    def __init__(self, size: int) -> None:
        super().__init__(f"compiled program of {size} bytes")
        self.size = size


@dataclass
class CacheStats:
    bytes: int = 0  # content of the cached files (programs and compiler messages)
    entries: int = 0
    evictions: int = 0  # since the directory was created
    max_bytes: int = 0


class ArtifactCache:
    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_MB * 1024 * 1024) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def ensure(self) -> None:
        ensure_private_dir(self.root)
        (self.root / _INCOMING).mkdir(mode=0o700, exist_ok=True)
        if not (self.root / _STATE).exists():  # first use, or a cache from before the bound
            with self._locked():
                if not (self.root / _STATE).exists():
                    bytes_, entries = self._scan(evict_to=None)
                    self._write_state(CacheStats(bytes_, entries))

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    # -- lookups -----------------------------------------------------------------------------

    def get(self, key: str) -> tuple[list[FileSpec], bytes] | None:
        """The entry's files as open descriptors (the caller closes them), or None."""
        entry = self._entry(key)
        files_dir = entry / "files"
        try:
            names = sorted(os.listdir(files_dir))
            output = (entry / _OUTPUT_NAME).read_bytes()
        except OSError:
            return None
        files: list[FileSpec] = []
        try:
            for name in names:
                if not valid_artifact_name(name):
                    raise ValueError(name)
                # O_NONBLOCK: never hang on a FIFO planted here (it is rejected just below)
                fd = os.open(files_dir / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                files.append(FileSpec(name, 0o755, fd=fd))
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise ValueError(name)
            with contextlib.suppress(OSError):
                os.utime(entry)  # recency for eviction
        except (OSError, ValueError):  # evicted meanwhile, or not ours: a miss
            close_files(files)
            return None
        return files, output

    def stats(self) -> CacheStats:
        """Totals of the whole directory (every process sharing it), read from the state file."""
        try:
            doc = json.loads((self.root / _STATE).read_text())
            got = CacheStats(int(doc["bytes"]), int(doc["entries"]), int(doc["evictions"]))
        except (OSError, ValueError, KeyError, TypeError):
            got = CacheStats()
        got.max_bytes = self.max_bytes
        return got

    # -- adding ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def incoming(self) -> Iterator[int]:
        """An anonymous file in the cache directory (on disk, root-only) for a compile's tar."""
        self.ensure()
        fd, path = tempfile.mkstemp(prefix="tar-", dir=self.root / _INCOMING)
        os.unlink(path)  # nothing to clean up whatever happens next
        try:
            yield fd
        finally:
            os.close(fd)

    def put(self, key: str, tar_fd: int, output: bytes, max_bytes: int) -> list[FileSpec]:
        """Unpack the compile's tar (regular files with plain names only) into the entry `key`.

        Raises ArtifactTooLarge when its files take more than `max_bytes` of a tmpfs, ValueError
        or tarfile.TarError for anything but plain files. Returns the files as open descriptors.
        """
        self.ensure()
        shard = self.root / key[:2]
        shard.mkdir(mode=0o700, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=shard))
        files: list[FileSpec] = []
        try:
            sizes = _unpack(tar_fd, tmp / "files", max_bytes)
            for name in sorted(sizes):
                fd = os.open(tmp / "files" / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                files.append(FileSpec(name, 0o755, fd=fd))
            (tmp / _OUTPUT_NAME).write_bytes(output)
            size = sum(sizes.values()) + len(output)
            with self._locked():
                try:
                    os.rename(tmp, self._entry(key))  # atomic; a concurrent twin may have won
                    added = True
                except OSError:
                    added = False
                if added:
                    self._account(size)
            if not added:
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            close_files(files)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return files

    # -- the bound ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write_state(self, st: CacheStats) -> None:
        doc = asdict(st)
        doc.pop("max_bytes")
        tmp = self.root / f".state-{secrets.token_hex(4)}"
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.root / _STATE)

    def _account(self, added: int) -> None:
        """With the lock held: count a new entry, and evict if that took us over the bound."""
        st = self.stats()
        st.bytes += added
        st.entries += 1
        if st.bytes > self.max_bytes:
            before = st.entries
            st.bytes, st.entries = self._scan(evict_to=int(self.max_bytes * _LOW_WATER))
            st.evictions += max(0, before - st.entries)
        self._write_state(st)

    def _scan(self, evict_to: int | None) -> tuple[int, int]:
        """Total bytes and entries on disk; with `evict_to`, first evict least recently used
        entries until the total is at most that. Also removes stale leftovers."""
        now = time.time()
        found: list[tuple[float, int, Path]] = []  # (last use, bytes, entry)
        for shard in _subdirs(self.root):
            if len(shard.name) != 2:
                continue
            for entry in _subdirs(shard):
                if entry.name.startswith("."):  # a put or an eviction in progress, or crashed
                    with contextlib.suppress(OSError):
                        if now - entry.lstat().st_mtime > _STALE_S:
                            shutil.rmtree(entry, ignore_errors=True)
                    continue
                try:
                    found.append((entry.stat().st_mtime, _entry_bytes(entry), entry))
                except OSError:
                    continue  # evicted by someone else meanwhile
        total = sum(size for _, size, _ in found)
        count = len(found)
        if evict_to is not None:
            for _, size, entry in sorted(found, key=lambda f: f[0]):
                if total <= evict_to:
                    break
                gone = entry.with_name(f".old-{entry.name}-{secrets.token_hex(4)}")
                try:
                    os.rename(entry, gone)  # lookups miss from now on
                except OSError:
                    continue
                shutil.rmtree(gone, ignore_errors=True)
                total -= size
                count -= 1
        return total, count


def close_files(files: list[FileSpec]) -> None:
    for f in files:
        if f.fd is not None:
            with contextlib.suppress(OSError):
                os.close(f.fd)
            f.fd = None


def _subdirs(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as it:
            return [Path(e.path) for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _entry_bytes(entry: Path) -> int:
    total = (entry / _OUTPUT_NAME).stat().st_size
    with os.scandir(entry / "files") as it:
        for f in it:
            total += f.stat(follow_symlinks=False).st_size
    return total


def _unpack(tar_fd: int, dest: Path, max_bytes: int) -> dict[str, int]:
    """Check every member of the tar in `tar_fd`, then copy each into `dest` in-kernel.

    Only the headers are read into memory; a member's data is copied with sendfile from its
    offset in the tar file, so a compiled program never passes through this process."""
    os.lseek(tar_fd, 0, os.SEEK_SET)
    with os.fdopen(os.dup(tar_fd), "rb") as raw, tarfile.open(fileobj=raw, mode="r:") as tf:
        members = tf.getmembers()
    sizes: dict[str, int] = {}
    for m in members:
        if not m.isreg() or m.issparse() or not valid_artifact_name(m.name) or m.name in sizes:
            raise ValueError(f"unexpected entry {m.name!r} in compiler output")
        sizes[m.name] = m.size
    if not sizes:
        raise ValueError("the compiler produced no files")
    used = sum(pages(size) for size in sizes.values())
    if used > max_bytes:
        raise ArtifactTooLarge(used)
    dest.mkdir(mode=0o700)
    for m in members:
        out = os.open(dest / m.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            offset, left = m.offset_data, m.size
            while left:
                n = os.sendfile(out, tar_fd, offset, min(left, 1 << 30))
                if n == 0:
                    raise ValueError(f"compiler output ends inside {m.name!r}")
                offset += n
                left -= n
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOSYS):
                raise ValueError(f"could not copy {m.name!r}: {e}") from e
            raise
        finally:
            os.close(out)
    return sizes
