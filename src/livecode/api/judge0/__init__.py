"""The Judge0 CE 1.13.1-compatible API under /judge0 (docs/compat.md): a Judge0 client works with
its base URL changed. Its errors are in Judge0's shapes: `{"error": "..."}`, and for a refused
submission `{"field": ["message", ...]}` with 422."""

from __future__ import annotations

from typing import Any

from ...errors import ApiError
from ..errors import register_error_shape

PREFIX = "/judge0"


class Judge0Error(ApiError):
    """An answer in Judge0's own shape (`body`), e.g. a 422 with errors per field."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(str(body)[:200], status=status)
        self.judge0_body = body


def _reshape(exc: BaseException, body: dict[str, Any], status: int) -> Any:
    if isinstance(exc, Judge0Error):
        return exc.judge0_body
    err = body.get("error", {})
    return {"error": err.get("message", "error") if isinstance(err, dict) else str(err)}


register_error_shape(PREFIX, _reshape)
