"""Compiled programs cached by sha256(language, toolchain version, compile flags, source).

The cache lives in a root-owned 0700 directory that no sandbox ever sees: entries are handed to
runs as open file descriptors (bubblewrap copies them into the run's tmpfs), never bind-mounted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .hostfs import ensure_private_dir

if TYPE_CHECKING:
    from .languages import Language
    from .runner import FileSpec

_OUTPUT_NAME = "compile_output.txt"


def cache_key(lang: Language, version: str, source: str) -> str:
    material = json.dumps(
        [lang.id, version, list(lang.compile or ()), list(lang.artifacts), source],
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def valid_artifact_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\0" not in name and not name.startswith(".")


class ArtifactCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self) -> None:
        ensure_private_dir(self.root)

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> tuple[list[FileSpec], bytes] | None:
        from .runner import FileSpec

        entry = self._entry(key)
        files_dir = entry / "files"
        try:
            names = sorted(os.listdir(files_dir))
            output = (entry / _OUTPUT_NAME).read_bytes()
        except OSError:
            return None
        files: list[FileSpec] = []
        for name in names:
            path = files_dir / name
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or not valid_artifact_name(name):
                return None
            files.append(FileSpec(name, 0o755, path=path))
        return files, output

    def put(self, key: str, artifacts: dict[str, bytes], output: bytes) -> list[FileSpec]:
        from .runner import FileSpec

        self.ensure()
        shard = self.root / key[:2]
        shard.mkdir(mode=0o700, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=shard))
        try:
            (tmp / "files").mkdir()
            for name, data in artifacts.items():
                if not valid_artifact_name(name):
                    raise ValueError(f"bad artifact name {name!r}")
                fd = os.open(tmp / "files" / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            (tmp / _OUTPUT_NAME).write_bytes(output)
            try:
                os.rename(tmp, self._entry(key))  # atomic; a concurrent twin may have won
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return [FileSpec(name, 0o755, data=data) for name, data in sorted(artifacts.items())]
