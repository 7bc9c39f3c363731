"""Fixtures for sandbox tests: they call the sandbox directly (no Flask, Celery or SQL)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
if str(SRC) not in sys.path:  # running without `pip install -e .`
    sys.path.insert(0, str(SRC))

from livecode.sandbox import Runner, SandboxUnavailable, get_runner  # noqa: E402
from livecode.sandbox.launcher import build_launcher  # noqa: E402
from livecode.sandbox.seccomp import build_filter  # noqa: E402
from livecode.sandbox.spawner import build_spawner  # noqa: E402

from . import helpers  # noqa: E402
from .helpers import TEST_SLOTS, TEST_UID_BASE, seed_cache  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def prebuilt_helpers(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Compile the sandbox's C helpers once for every runner of this test process (see
    helpers.PREBUILT); the runners then only check that theirs are there."""
    given = os.environ.get("LIVECODE_TEST_PREBUILT_DIR")
    if given:
        helpers.PREBUILT = Path(given)
        return
    if os.geteuid() != 0:
        return
    prebuilt = tmp_path_factory.mktemp("prebuilt")
    prebuilt.chmod(0o700)
    try:
        build_launcher(prebuilt)
        build_spawner(prebuilt)
        build_filter(prebuilt)
    except SandboxUnavailable:
        return  # the runners' own check() says why
    helpers.PREBUILT = prebuilt


@pytest.fixture(scope="session")
def sandbox_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("sandbox")
    base.chmod(0o700)
    return base / "work", base / "cache"


@pytest.fixture(scope="session")
def runner(sandbox_dirs: tuple[Path, Path]) -> Iterator[Runner]:
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        pytest.skip("needs root and bubblewrap")
    work, cache = sandbox_dirs
    seed_cache(cache)
    r = get_runner("bwrap", work_root=str(work), cache_dir=str(cache), uid_base=TEST_UID_BASE, slots=TEST_SLOTS)
    r.check()
    yield r
    r.close()


@pytest.fixture(scope="session")
def dev_runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    base = tmp_path_factory.mktemp("dev")
    r = get_runner("none", work_root=str(base / "work"), cache_dir=str(base / "cache"))
    r.check()
    return r
