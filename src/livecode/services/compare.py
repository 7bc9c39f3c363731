"""How a program's output is compared with a test's expected output (the compare modes).

- ``exact``: byte for byte (as text).
- ``trim`` (the default): trailing whitespace on each line and trailing newlines are ignored,
  as Judge0 compares (its ``expected_output`` check).
- ``tokens``: the whitespace-separated tokens are equal.
- ``float:EPS``: the tokens are equal, and two tokens that are both numbers are equal when they
  are within EPS of each other, absolutely or relatively.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_COMPARE = "trim"
COMPARE_MODES = ("exact", "trim", "tokens", "float:EPS")
_MAX_EPS = 1.0


class CompareModeError(ValueError):
    """An unknown compare mode, or a float mode with a bad tolerance."""


@dataclass(frozen=True)
class Comparator:
    mode: str
    matches: Callable[[str, str], bool]

    def __call__(self, actual: str, expected: str) -> bool:
        return self.matches(actual, expected)


def _trimmed(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines()).rstrip("\n")


def _trim(actual: str, expected: str) -> bool:
    return _trimmed(actual) == _trimmed(expected)


def _tokens(actual: str, expected: str) -> bool:
    return actual.split() == expected.split()


def _number(token: str) -> float | None:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _floats(eps: float) -> Callable[[str, str], bool]:
    def matches(actual: str, expected: str) -> bool:
        got, want = actual.split(), expected.split()
        if len(got) != len(want):
            return False
        for a, b in zip(got, want, strict=True):
            if a == b:
                continue
            x, y = _number(a), _number(b)
            if x is None or y is None or not math.isclose(x, y, rel_tol=eps, abs_tol=eps):
                return False
        return True

    return matches


def parse_compare(mode: str | None) -> Comparator:
    """The comparator for a request's ``compare`` field; raises CompareModeError, naming the
    accepted modes, for anything else."""
    mode = DEFAULT_COMPARE if mode is None else mode
    if not isinstance(mode, str):
        raise CompareModeError(f"compare must be a string, one of {', '.join(COMPARE_MODES)}")
    if mode == "exact":
        return Comparator(mode, lambda a, e: a == e)
    if mode == "trim":
        return Comparator(mode, _trim)
    if mode == "tokens":
        return Comparator(mode, _tokens)
    if mode.startswith("float:"):
        eps = _number(mode[len("float:") :])
        if eps is None or not 0 <= eps <= _MAX_EPS:
            raise CompareModeError(f"compare {mode!r}: EPS must be a number from 0 to {_MAX_EPS:g}, e.g. float:1e-6")
        return Comparator(mode, _floats(eps))
    raise CompareModeError(f"unknown compare mode {mode[:40]!r}: use one of {', '.join(COMPARE_MODES)}")
