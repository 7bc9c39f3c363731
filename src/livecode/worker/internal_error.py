"""What the user and the operator get when the sandbox failed (not the user's program)."""

from __future__ import annotations

import logging
from typing import Any

from ..errors import internal_error_message, new_error_id
from ..sandbox import RunResult

log = logging.getLogger(__name__)


def internal_error_stderr(result: RunResult, extra: dict[str, Any]) -> bytes:
    """The sandbox failed (a single run, or one of an execution's test cases): the user sees a
    generic message and an error id after the program's own stderr; what went wrong (which may
    name host paths) goes only to the operator's log."""
    error_id = new_error_id()
    log.error("sandbox internal error (error id %s): %s", error_id, result.message,
              extra={**extra, "error_id": error_id})
    notice = internal_error_message(error_id).encode()
    return (result.stderr_bytes + b"\n" if result.stderr_bytes else b"") + notice
