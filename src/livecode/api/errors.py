"""Every error, from any layer, leaves the API in one JSON shape."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask, Response, has_request_context, jsonify, request
from kombu.exceptions import OperationalError as KombuOperationalError
from werkzeug.exceptions import HTTPException

from ..db import is_unavailable
from ..errors import ApiError, internal_error_message, new_error_id

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "UNPROCESSABLE",
    429: "RATE_LIMITED",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if details:
        err["details"] = details
    return {"error": err}


# A compatibility API answers in its original's error shape: (path prefix, reshape), where
# reshape(exc, livecode_body, status) returns the body to send instead (api/judge0).
ErrorShape = Callable[[BaseException, dict[str, Any], int], Any]
_SHAPES: list[tuple[str, ErrorShape]] = []


def register_error_shape(prefix: str, reshape: ErrorShape) -> None:
    """Errors of requests under `prefix` (e.g. "/judge0") are given in another shape."""
    if all(p != prefix for p, _ in _SHAPES):
        _SHAPES.append((prefix, reshape))


def to_response(exc: BaseException) -> tuple[Any, int, dict[str, str]]:
    """Map an exception to (body, status, headers), in the shape of the API the request is for."""
    body, status, headers = _livecode_response(exc)
    if has_request_context():
        for prefix, reshape in _SHAPES:
            if request.path == prefix or request.path.startswith(prefix + "/"):
                return reshape(exc, body, status), status, headers
    return body, status, headers


def _livecode_response(exc: BaseException) -> tuple[dict[str, Any], int, dict[str, str]]:
    if isinstance(exc, ApiError):
        return exc.body(), exc.status, exc.headers
    if isinstance(exc, HTTPException) and (exc.code or 500) == 500:
        # Flask's own 500 (e.g. an aborted request): report the exception behind it, if any.
        return internal_error(getattr(exc, "original_exception", None) or exc)
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        headers: dict[str, str] = {}
        valid_methods = getattr(exc, "valid_methods", None)
        if status == 405 and valid_methods:
            headers["Allow"] = ", ".join(valid_methods)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            headers["Retry-After"] = str(retry_after)
        message = exc.description or exc.name
        if status == 404:
            message = "no such resource; see /docs for the API"
        return error_body(HTTP_CODES.get(status, exc.name.upper().replace(" ", "_")), message), status, headers
    if is_unavailable(exc):
        log.warning("database unavailable: %s", exc)
        return (
            error_body("DATABASE_UNAVAILABLE", "the database is unavailable; try again shortly"),
            503,
            {"Retry-After": "1"},
        )
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, KombuOperationalError)):
        log.warning("redis unavailable: %s", exc)
        return (
            error_body("REDIS_UNAVAILABLE", "the broker (Redis) is unavailable; try again shortly"),
            503,
            {"Retry-After": "1"},
        )
    return internal_error(exc)


def internal_error(exc: BaseException) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A bug. The user gets a generic message and an error id; the details (traceback, SQL) go
    only to the operator's log line, which carries the same id."""
    error_id = new_error_id()
    log.error("unhandled error (error id %s)", error_id, exc_info=exc, extra={"error_id": error_id})
    return error_body("INTERNAL_ERROR", internal_error_message(error_id), {"error_id": error_id}), 500, {}


def json_error_response(exc: BaseException) -> Response:
    body, status, headers = to_response(exc)
    resp = jsonify(body)
    resp.status_code = status
    for k, v in headers.items():
        resp.headers[k] = v
    return resp


def register_error_handlers(app: Flask) -> None:
    """For routes outside Flask-RESTX (metrics, static, unknown paths)."""

    @app.errorhandler(Exception)
    def _handle(exc: Exception) -> Response:
        return json_error_response(exc)
