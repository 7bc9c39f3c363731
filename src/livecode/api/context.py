"""What a request handler needs: the runtime, the caller, the request id."""

from __future__ import annotations

import uuid
from typing import Any

from flask import current_app, g

from ..runtime import Runtime


def rt() -> Runtime:
    return current_app.extensions["livecode.runtime"]  # type: ignore[no-any-return]


def enqueue() -> Any:
    return current_app.extensions["livecode.enqueue"]


def owner_id() -> uuid.UUID | None:
    """The signed-in user, or None when the service runs without accounts (embedded)."""
    return g.get("user_id")


def request_id() -> str | None:
    return g.get("request_id")
