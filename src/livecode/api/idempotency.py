"""The `Idempotency-Key` header on the POST endpoints that create things."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import request

from ..services.idempotency import run_once
from .context import owner_id, rt


def idempotent(
    endpoint: str, body: Any, work: Callable[[], tuple[dict[str, Any], int]]
) -> tuple[dict[str, Any], int]:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return work()
    scope = f"{owner_id() or '-'}:{endpoint}:{request.path}"
    return run_once(rt().db, scope, key, body, work)
