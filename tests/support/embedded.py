"""An embedded-mode runtime on SQLite in a temporary folder, migrated: for in-process tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from livecode import migrations as migrate
from livecode.config import load_settings
from livecode.runtime import Runtime, build_runtime


@contextmanager
def embedded_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Iterator[Runtime]:
    """`overrides` are settings (load_settings keywords). The runtime's database is disposed after."""
    monkeypatch.setenv("LIVECODE_DATA_DIR", str(tmp_path))
    for var in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    r = build_runtime(load_settings("embedded", **overrides))
    migrate.upgrade(r.db.engine)
    try:
        yield r
    finally:
        r.db.dispose()
