"""A file a stage finds in its fresh work directory: bytes, a host path, or an open descriptor."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class FileSpec:
    """A file placed in the fresh work directory before the stage starts."""

    name: str
    mode: int
    data: bytes | None = None
    path: Path | None = None  # host file in the root-owned cache; opened O_NOFOLLOW
    fd: int | None = None  # an open cached file (lives on if its entry is evicted); the runner closes it

    def open(self) -> int:
        """A new read-only descriptor of a path or fd file, at offset 0 (bubblewrap and the
        launcher read from the current offset, so a retried stage needs its own)."""
        if self.fd is not None:
            return os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)
        assert self.path is not None
        return os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)

    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        if self.fd is not None:
            return os.fstat(self.fd).st_size
        assert self.path is not None
        return os.stat(self.path).st_size
