"""Fixtures for the fault tests: each test module gets its own throwaway stack (PostgreSQL, Redis,
API; workers on demand), restored after every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stack import Stack


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack()
    yield s
    s.destroy()


@pytest.fixture
def restored_stack(stack: Stack) -> Iterator[Stack]:
    yield stack
    stack.restore()
