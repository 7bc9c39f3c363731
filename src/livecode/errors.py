"""Errors that services raise and the API turns into one JSON shape:
`{"error": {"code": "SESSION_NOT_FOUND", "message": "...", "details": {...}}}`."""

from __future__ import annotations

import uuid
from typing import Any


def new_error_id() -> str:
    """An id for one internal error: the user is shown it with a generic message, the operator's
    log line with the details (traceback, SQL) carries it too."""
    return uuid.uuid4().hex


def internal_error_message(error_id: str) -> str:
    return f"an internal error occurred; it has been logged with error id {error_id}"


class ApiError(Exception):
    status = 400
    code = "BAD_REQUEST"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.details = details or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            err["details"] = self.details
        return {"error": err}


class ValidationError(ApiError):
    status = 400
    code = "VALIDATION_ERROR"


class NotFound(ApiError):
    status = 404
    code = "NOT_FOUND"


class Conflict(ApiError):
    status = 409
    code = "CONFLICT"


class PayloadTooLarge(ApiError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class Unprocessable(ApiError):
    status = 422
    code = "UNPROCESSABLE"


class ServiceUnavailable(ApiError):
    status = 503
    code = "SERVICE_UNAVAILABLE"


class QuotaExceeded(ApiError):
    """A storage cap was reached: waiting does not help, deleting something (or expiry) does."""

    status = 429
    code = "QUOTA_EXCEEDED"
