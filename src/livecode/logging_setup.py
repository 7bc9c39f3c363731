"""Structured JSON logs with the request id; secrets and source code are never logged."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
from typing import Any

from .config import Settings

_configured = False

# Secrets that can reach a log line inside text we do not control: a request line gunicorn could
# not parse (with ?access_token=), a header it refused, an exception message. Each pattern keeps
# its first group (the name) and replaces the value.
_SECRET_PATTERNS = (
    re.compile(r"((?:access|refresh)_token\W{0,3}[=:]\W{0,3})[^&\s'\",;}]+", re.IGNORECASE),
    re.compile(r"((?:authorization|x-api-key|x-auth-token|proxy-authorization)\W{0,3}[=:,]\W{0,3})"
               r"(?:(?:bearer|basic|token)\s+)?[^\s'\",;}]+", re.IGNORECASE),
    re.compile(r"()\blc_[A-Za-z0-9_-]{16,}"),  # an API key wherever it appears
    re.compile(r"()\bwhsec_[A-Za-z0-9_-]{16,}"),  # a webhook signing secret
    re.compile(r"()\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # a JWT
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class RedactSecretsFilter(logging.Filter):
    """Takes tokens, API keys and Authorization values out of a record's message and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is logged as it is
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[0] is not None:
            # Formatters render exc_text when exc_info is gone; render it here, redacted.
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
            record.exc_info = None
        return True


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            try:
                from flask import g, has_request_context

                record.request_id = g.get("request_id") if has_request_context() else None
            except Exception:  # noqa: BLE001
                record.request_id = None
        return True


def json_formatter() -> logging.Formatter:
    """The JSON lines' formatter: python-json-logger's, with what it redoes for every line done once.

    Every API request writes one access line through it (api/metrics.py): its timestamp's
    strftime is made once a second, not per line, and its JSON encoder is built once, not per
    line (json.dumps with an encoder class builds one at each call). The lines are the same."""
    from pythonjsonlogger.json import JsonFormatter

    class Formatter(JsonFormatter):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._second: tuple[int, str] = (-1, "")
            encoder = self.json_encoder or json.JSONEncoder  # what json.dumps takes for cls=None
            self._encoder = encoder(default=self.json_default, indent=self.json_indent,
                                    ensure_ascii=self.json_ensure_ascii)

        def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
            msec_format = self.default_msec_format
            if datefmt or self.converter is not time.localtime or not msec_format:
                return str(super().formatTime(record, datefmt))
            second = int(record.created)
            cached = self._second  # one tuple, read and replaced whole: safe across threads
            if cached[0] != second:
                cached = self._second = (second, time.strftime(self.default_time_format, time.localtime(second)))
            return msec_format % (cached[1], record.msecs)

        def jsonify_log_record(self, log_data: Any) -> str:
            return str(self._encoder.encode(log_data))

    return Formatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
        rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
    )


class LineStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """logging.StreamHandler, formatting its line outside its lock.

    The stdlib's handler takes its lock, then formats the record, then writes: every API request's
    access line (api/metrics.py) was formatted to JSON with the lock held, and a thread made to
    give up the GIL meanwhile (the write, a switch interval) left the other request threads
    blocked on the lock, each with a futex call and a switch. Here only the write and the flush
    are under the lock: the same line, whole, one write per record, as before. The formatter
    keeps no state between records (the JSON formatter's cached second is replaced whole)."""

    def handle(self, record: logging.LogRecord) -> Any:
        rv = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # Python 3.12: a filter may return a new record
            record = rv
        if rv:
            try:
                line = self.format(record) + self.terminator
            except RecursionError:  # as StreamHandler.emit: see issue 36272
                raise
            except Exception:  # noqa: BLE001 - logging's own error path, as emit() has
                with self.lock:  # type: ignore[union-attr]  # its traceback whole, as the stdlib's
                    self.handleError(record)
                return rv
            with self.lock:  # type: ignore[union-attr]
                try:
                    self.stream.write(line)
                    self.flush()
                except RecursionError:
                    raise
                except Exception:  # noqa: BLE001
                    self.handleError(record)
        return rv


def configure_logging(settings: Settings) -> None:
    global _configured
    if _configured:
        return
    _configured = True
    handler = LineStreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(json_formatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactSecretsFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("celery.worker.strategy", "celery.app.trace", "kombu", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
