"""Strict JSON request parsing: a clear 4xx for anything that is not the documented shape."""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import g, request
from gunicorn.http.errors import ParseException as GunicornParseError

from ..errors import ApiError, ValidationError


def json_body(*, allow_empty: bool = False) -> dict[str, Any]:
    mimetype = request.mimetype or ""
    raw = _read_body()
    if not raw and allow_empty:
        return {}
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ApiError(
            "the request body must be JSON with Content-Type: application/json",
            code="UNSUPPORTED_MEDIA_TYPE",
            status=415,
        )
    try:
        text = raw.decode("utf-8")
        body = json.loads(text)
    except UnicodeDecodeError as exc:
        raise ValidationError("the request body is not valid UTF-8", code="INVALID_JSON") from exc
    except RecursionError as exc:
        raise ValidationError("the JSON document is nested too deeply", code="INVALID_JSON") from exc
    except ValueError as exc:
        raise ValidationError(f"the request body is not valid JSON: {exc}", code="INVALID_JSON") from exc
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object", code="INVALID_JSON")
    return body


def _read_body() -> bytes:
    """The raw body, read once per request (so every reader sees the same bytes, chunked or not)."""
    cached: bytes | None = g.get("livecode_raw_body")
    if cached is not None:
        return cached
    try:
        if request.content_length is not None or request.max_content_length is None:
            raw = request.get_data(cache=True)
        else:
            # A streamed (chunked) body: werkzeug's read() stops quietly at the size limit, which
            # would turn an oversized body into a truncated one; reading in chunks raises 413 instead.
            chunks = []
            while chunk := request.stream.read(64 * 1024):
                chunks.append(chunk)
            raw = b"".join(chunks)
    except (OSError, ValueError, GunicornParseError) as exc:
        # A malformed chunked encoding or a body cut short: the server's reader raises these.
        raise ValidationError("the request body could not be read: malformed chunked encoding or a truncated body",
                              code="INVALID_BODY") from exc
    g.livecode_raw_body = raw
    return raw


def drain_unread_body() -> None:
    """After an answer given without reading the body (401, 404, 405, 429 ...): read the rest of
    an acceptable body before answering. gunicorn drains at most 64 KiB itself and then closes
    the connection with the rest unread, which resets it: a client still sending never sees its
    answer. Bounded by the request size limit (an oversized body is not read) and by the
    server's read timeouts."""
    if g.get("livecode_raw_body") is not None:
        return
    environ = request.environ
    if not environ.get("CONTENT_LENGTH") and not environ.get("HTTP_TRANSFER_ENCODING"):
        return  # no body (a GET): nothing to drain
    length = request.content_length
    chunked = "chunked" in (request.headers.get("Transfer-Encoding") or "").lower()
    limit = request.max_content_length
    if not (length or chunked) or (length and limit is not None and length > limit):
        return
    try:
        while request.stream.read(64 * 1024):
            pass
    except Exception:  # noqa: BLE001 - a broken or oversized body: the server closes the connection
        pass


def require_str(body: dict[str, Any], name: str, *, max_len: int | None = None) -> str:
    if name not in body:
        raise ValidationError(f"missing field {name!r}", code="MISSING_FIELD", details={"field": name})
    return optional_str(body, name, max_len=max_len) or ""


def optional_str(
    body: dict[str, Any], name: str, default: str | None = None, *, max_len: int | None = None
) -> str | None:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValidationError(f"field {name!r} must be a string", code="INVALID_FIELD", details={"field": name})
    if "\x00" in value:
        raise ValidationError(f"field {name!r} must not contain NUL characters", code="INVALID_FIELD",
                              details={"field": name})
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from a JSON escape like \ud800
        raise ValidationError(f"field {name!r} is not valid Unicode (a lone surrogate)", code="INVALID_FIELD",
                              details={"field": name}) from exc
    if max_len is not None and len(value) > max_len:
        raise ValidationError(f"field {name!r} is longer than {max_len} characters", code="INVALID_FIELD")
    return value


def optional_int(body: dict[str, Any], name: str, *, minimum: int = 0, maximum: int = 2**31 - 1) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"field {name!r} must be an integer", code="INVALID_FIELD", details={"field": name})
    if not minimum <= value <= maximum:
        raise ValidationError(
            f"field {name!r} must be between {minimum} and {maximum}",
            code="INVALID_FIELD",
            details={"field": name},
        )
    return value


def optional_bool(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValidationError(f"field {name!r} must be true or false", code="INVALID_FIELD", details={"field": name})
    return value


def reject_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            code="UNKNOWN_FIELD",
        )


def parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError) as exc:
        raise ValidationError(f"{what} must be a UUID, got {value[:80]!r}", code="INVALID_ID") from exc


def query_int(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValidationError(f"query parameter {name!r} must be an integer", code="INVALID_QUERY") from exc
    if not minimum <= value <= maximum:
        raise ValidationError(f"query parameter {name!r} must be between {minimum} and {maximum}", code="INVALID_QUERY")
    return value
