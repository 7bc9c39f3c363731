"""The API server's process after its app is loaded (web/server.py): what start-up made is frozen
out of the garbage collector's reach, so a full collection under load walks only what requests
made since (a 100-200 ms stall of every thread otherwise: docs/performance.md)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from livecode.web.server import GunicornServer


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_loading_the_app_freezes_what_start_up_made(unfrozen: None) -> None:
    made_at_start = [{"object": i} for i in range(1000)]
    server = GunicornServer.__new__(GunicornServer)  # load() alone: no gunicorn configuration needed
    server.app_factory = lambda: made_at_start

    assert server.load() is made_at_start
    assert gc.get_freeze_count() >= len(made_at_start)
