"""The JSON log lines (logging_setup.json_formatter): the same line python-json-logger writes,
with the timestamp's text made once a second and one JSON encoder for every line."""

from __future__ import annotations

import json
import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from livecode.logging_setup import json_formatter

FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s"
RENAMES = {"asctime": "ts", "levelname": "level", "name": "logger"}
ACCESS = {"method": "PATCH", "endpoint": "/api/v1/code-sessions/<string:session_id>", "status": 200,
          "duration_ms": 1.25, "user_id": None, "request_id": "0123abcd"}


def record(created: float, msg: str = "request", extra: dict[str, object] | None = None) -> logging.LogRecord:
    r = logging.getLogger("livecode.access").makeRecord("livecode.access", logging.INFO, __file__, 1, msg, (),
                                                        None, extra=extra)
    r.created, r.msecs = created, (created - int(created)) * 1000
    return r


def test_lines_are_those_of_python_json_logger() -> None:
    ours, theirs = json_formatter(), JsonFormatter(FIELDS, rename_fields=RENAMES)
    for rec in (record(1_765_000_000.25, extra=ACCESS), record(1_765_000_000.5, "é %s", {"request_id": None})):
        assert ours.format(rec) == theirs.format(rec)
    line = json.loads(ours.format(record(1_765_000_000.25, extra=ACCESS)))
    assert {k: line[k] for k in ACCESS} == ACCESS
    assert line["message"] == "request" and line["level"] == "INFO" and line["logger"] == "livecode.access"
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record(1_765_000_001.0)
        failed.exc_info = sys.exc_info()
    assert ours.format(failed) == theirs.format(failed)


def test_the_timestamp_follows_the_clock_across_seconds() -> None:
    ours, theirs = json_formatter(), JsonFormatter(FIELDS, rename_fields=RENAMES)
    for created in (1_765_000_000.999, 1_765_000_001.0, 1_765_000_001.5, 1_765_000_000.1, 1_765_003_600.0):
        rec = record(created, extra=ACCESS)
        assert json.loads(ours.format(rec))["ts"] == json.loads(theirs.format(rec))["ts"]
