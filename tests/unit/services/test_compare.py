"""The compare modes a test case's expected output is checked with."""

from __future__ import annotations

import pytest

from livecode.services.compare import CompareModeError, parse_compare


@pytest.mark.parametrize(
    ("mode", "actual", "expected", "match"),
    [
        ("exact", "1 2\n", "1 2\n", True),
        ("exact", "1 2\n", "1 2", False),
        ("trim", "1 2  \n3\n\n\n", "1 2\n3", True),  # trailing spaces and newlines: Judge0's rule
        ("trim", "1  2\n", "1 2\n", False),  # inner whitespace still counts
        ("trim", " 1\n", "1\n", False),  # leading whitespace still counts
        ("trim", "a\r\nb\r\n", "a\nb", True),
        ("tokens", "1   2\n\n3", "1 2 3", True),
        ("tokens", "1 2", "1 2 3", False),
        ("float:1e-6", "0.3333333 x\n", "0.33333333 x", True),
        ("float:1e-6", "0.333 x", "0.334 x", False),
        ("float:0.01", "100.5", "100", True),  # relative
        ("float:0.01", "nan", "nan", True),  # equal tokens, whatever they are
        ("float:0.01", "inf", "1e308", False),
        ("float:0", "1.0", "1", True),
        ("float:1e-3", "1 2", "1", False),
    ],
)
def test_modes(mode: str, actual: str, expected: str, match: bool) -> None:
    assert parse_compare(mode)(actual, expected) is match


def test_the_default_is_trim() -> None:
    assert parse_compare(None).mode == "trim"


@pytest.mark.parametrize("mode", ["", "fuzzy", "float:", "float:x", "float:-1", "float:2", "float:nan", 3])
def test_unknown_modes_are_refused_with_the_accepted_ones_named(mode: object) -> None:
    with pytest.raises(CompareModeError) as err:
        parse_compare(mode)  # type: ignore[arg-type]
    assert "float" in str(err.value)
