"""LiveCodeFlask.ensure_sync answers once per function whether it is `async def`; an async view
or hook is still run to completion (Flask's async_to_sync), a plain one is returned as it is."""

from __future__ import annotations

from typing import Any

from livecode.app import LiveCodeFlask


class View:
    def get(self) -> str:
        return "sync"

    async def aget(self) -> str:
        return "async"


def test_plain_functions_are_returned_as_they_are_and_async_ones_still_wrapped(monkeypatch: Any) -> None:
    app = LiveCodeFlask(__name__)
    wrapped: list[Any] = []
    monkeypatch.setattr(app, "async_to_sync", lambda f: wrapped.append(f) or (lambda *a, **k: "ran"))
    for _ in range(3):  # each request binds the view anew
        view = View()
        assert app.ensure_sync(view.get) == view.get
        assert app.ensure_sync(view.aget)() == "ran"
    assert len(wrapped) == 3  # the async one is wrapped every time, never taken for a plain one
    assert View.get in app._known_sync and View.aget not in app._known_sync
