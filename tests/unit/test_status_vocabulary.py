"""ExecutionStatus is the one vocabulary of states: the API schema, the frontend and the tests'
lists must name exactly its states (and its terminal set), or a new state would go unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

from livecode.api import schemas
from livecode.models import ACTIVE_STATUSES, TERMINAL_STATUSES, ExecutionStatus
from tests.support.client import TERMINAL as TESTS_TERMINAL

ROOT = Path(__file__).resolve().parents[2]
ALL = {s.value for s in ExecutionStatus}
TERMINAL = {s.value for s in TERMINAL_STATUSES}


def test_terminal_and_active_split_the_states() -> None:
    assert TERMINAL | {s.value for s in ACTIVE_STATUSES} == ALL
    assert not TERMINAL & {s.value for s in ACTIVE_STATUSES}
    assert {s.value for s in ACTIVE_STATUSES} == {"QUEUED", "RUNNING"}
    assert all(s.terminal == (s in TERMINAL_STATUSES) for s in ExecutionStatus)


def test_the_api_schema_lists_every_state() -> None:
    assert set(schemas.execution["status"].enum) == ALL


def test_the_frontend_knows_every_state_and_which_ones_end_a_run() -> None:
    stream_js = (ROOT / "frontend/src/stream.js").read_text()
    terminal = re.search(r"const TERMINAL = new Set\(\[([^\]]*)\]\)", stream_js)
    assert terminal, "frontend/src/stream.js no longer declares its TERMINAL set"
    assert set(re.findall(r'"([A-Z]+)"', terminal.group(1))) == TERMINAL
    output_js = (ROOT / "frontend/src/output.js").read_text()
    labels = re.search(r"const labels = \{([^}]*)\}", output_js)
    assert labels, "frontend/src/output.js no longer declares its status labels"
    assert set(re.findall(r"\b([A-Z]+):", labels.group(1))) == ALL


def test_the_tests_wait_for_the_terminal_states() -> None:
    assert set(TESTS_TERMINAL) == TERMINAL
