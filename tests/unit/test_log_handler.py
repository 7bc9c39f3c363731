"""The log handler (logging_setup.LineStreamHandler): each record's line is formatted outside the
handler's lock (the API's request threads no longer queue on it while one formats its access
line), and written whole, the same as logging.StreamHandler writes it."""

from __future__ import annotations

import io
import logging
import sys

from livecode.logging_setup import LineStreamHandler, json_formatter


def _record(msg: str = "request", exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("livecode.access", logging.INFO, __file__, 1, msg, (), exc_info)


def test_the_line_is_formatted_outside_the_lock() -> None:
    handler = LineStreamHandler(io.StringIO())
    held: list[bool] = []

    class Probe(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            held.append(handler.lock._is_owned())  # type: ignore[union-attr]
            return super().format(record)

    handler.setFormatter(Probe())
    handler.handle(_record())
    assert held == [False]  # logging.StreamHandler formats with its lock held


def test_the_lines_are_the_stdlib_handlers() -> None:
    ours, theirs = io.StringIO(), io.StringIO()
    a, b = LineStreamHandler(ours), logging.StreamHandler(theirs)
    for h in (a, b):
        h.setFormatter(json_formatter())
    for rec in (_record(), _record("with an error", exc=True), _record("second")):
        rec.request_id = "0123abcd"
        a.handle(rec)
        b.handle(rec)
    assert ours.getvalue() == theirs.getvalue() and ours.getvalue().count("\n") == 3


def test_a_filter_that_drops_the_record_writes_nothing_and_a_broken_format_is_handled(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    handler = LineStreamHandler(out)
    handler.addFilter(lambda r: r.msg != "secret")
    assert not handler.handle(_record("secret"))
    errors: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", errors.append)
    broken = logging.LogRecord("x", logging.INFO, __file__, 1, "%d", ("not a number",), None)
    handler.handle(broken)  # logging's error path, not the caller's exception
    assert out.getvalue() == "" and errors == [broken]


def test_the_services_log_through_it(monkeypatch) -> None:
    """configure_logging (the API's and the worker's start) installs this handler."""
    import livecode.logging_setup as logging_setup
    from livecode.config import Settings

    root = logging.getLogger()
    monkeypatch.setattr(logging_setup, "_configured", False)
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    logging_setup.configure_logging(Settings())
    assert type(root.handlers[0]) is LineStreamHandler
