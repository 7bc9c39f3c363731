"""An embedded-mode runtime on SQLite in a temporary folder, migrated: for in-process tests."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from livecode import migrations as migrate
from livecode.config import load_settings
from livecode.runtime import Runtime, build_runtime

DB_FILE = "livecode.db"  # the embedded mode's database in its data folder


@functools.cache
def migrated_sqlite() -> Path:
    """A SQLite file with every migration applied, made once per test process: migrating is
    0.15-0.25 s of CPU, copying the file a millisecond."""
    folder = Path(tempfile.mkdtemp(prefix="lc-sqlite-template-"))
    atexit.register(shutil.rmtree, folder, True)
    engine_owner = build_runtime(
        load_settings("embedded", data_dir=folder, database_url=f"sqlite:///{folder / DB_FILE}")
    )
    migrate.upgrade(engine_owner.db.engine)
    engine_owner.db.dispose()  # closing the last connection folds the WAL into the file
    return folder / DB_FILE


def copy_migrated_sqlite(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_sqlite(), data_dir / DB_FILE)


@contextmanager
def embedded_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Iterator[Runtime]:
    """`overrides` are settings (load_settings keywords). The runtime's database is disposed after."""
    monkeypatch.setenv("LIVECODE_DATA_DIR", str(tmp_path))
    for var in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    copy_migrated_sqlite(tmp_path)
    r = build_runtime(load_settings("embedded", **overrides))
    migrate.upgrade(r.db.engine)  # already at the head: checks it, in a few milliseconds
    try:
        yield r
    finally:
        r.db.dispose()
