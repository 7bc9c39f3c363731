"""Fixtures of the in-process floor (tests/support/inprocess.py), imported by the conftest.py of
tests/api and tests/unit/services: `live` is an app with sign-in off (the embedded default),
`secure` one with sign-in required, `make_live(**settings)` builds one with other settings, and
`db` is the database layer alone on a fresh migrated SQLite file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.embedded import migrated_sqlite
from tests.support.inprocess import (
    DB_FILE,
    LiveApp,
    clean_env,
    close_live_app,
    embedded_settings,
    make_live_app,
)

# The fixtures the in-process floor (tests/api, tests/unit/services) takes in its conftest files.
__all__ = ["db", "db_template", "live", "make_live", "secure", "settings"]


@pytest.fixture(scope="session")
def db_template() -> Path:
    return migrated_sqlite()


@pytest.fixture
def make_live(db_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., LiveApp]]:
    made: list[LiveApp] = []

    def make(**overrides: Any) -> LiveApp:
        live = make_live_app(db_template, tmp_path / f"app{len(made)}", monkeypatch, **overrides)
        made.append(live)
        return live

    yield make
    for live in made:
        close_live_app(live)
    from livecode.runtime import reset_runtime

    reset_runtime()


@pytest.fixture
def live(make_live: Callable[..., LiveApp]) -> LiveApp:
    return make_live()


@pytest.fixture
def secure(make_live: Callable[..., LiveApp]) -> LiveApp:
    """Sign-in required, as in the distributed mode."""
    return make_live(auth_required=True)


@pytest.fixture
def settings(db_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Embedded settings on a fresh copy of the migrated database."""
    import shutil

    clean_env(monkeypatch, tmp_path)
    shutil.copy(db_template, tmp_path / DB_FILE)
    return embedded_settings(tmp_path)


@pytest.fixture
def db(settings: Any) -> Iterator[Any]:
    from livecode.db import Database

    database = Database(settings)
    yield database
    database.dispose()
