"""Checks on user input shared by the services."""

from __future__ import annotations

from ..errors import PayloadTooLarge, ValidationError
from ..sandbox import get_language, list_languages


def available_language_ids() -> list[str]:
    return sorted(str(lang["id"]) for lang in list_languages() if lang["available"])


def check_language(language: str, *, require_available: bool = True) -> None:
    known = get_language(language)
    available = available_language_ids()
    if known is None:
        raise ValidationError(
            f"unknown language {language!r}; supported: {', '.join(available)}",
            code="UNSUPPORTED_LANGUAGE",
            details={"supported": available},
        )
    if require_available and language not in available:
        raise ValidationError(
            f"the {language} toolchain is not installed on this server; available: "
            f"{', '.join(available)}",
            code="LANGUAGE_UNAVAILABLE",
            details={"supported": available},
        )


def check_text(value: str, field: str, max_bytes: int) -> None:
    if "\x00" in value:
        raise ValidationError(f"{field} must not contain NUL bytes", code="INVALID_SOURCE")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates from a JSON \ud800 escape
        raise ValidationError(f"{field} is not valid UTF-8", code="INVALID_SOURCE") from exc
    if size > max_bytes:
        raise PayloadTooLarge(
            f"{field} is {size} bytes; the limit is {max_bytes} bytes",
            code="SOURCE_TOO_LARGE" if field == "source_code" else "INPUT_TOO_LARGE",
            details={"limit_bytes": max_bytes, "size_bytes": size},
        )


def check_source(source_code: str, max_bytes: int) -> None:
    check_text(source_code, "source_code", max_bytes)
