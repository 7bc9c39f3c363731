"""Checks on user input shared by the services."""

from __future__ import annotations

import base64

from ..errors import PayloadTooLarge, ValidationError
from ..infra.languages import LanguageCatalog, LocalLanguages
from ..sandbox import get_language
from ..sandbox.languages import all_languages


def check_language(language: str, languages: LanguageCatalog | None = None) -> None:
    """400 UNSUPPORTED_LANGUAGE for a language languages.toml does not declare, 400
    LANGUAGE_UNAVAILABLE for one no worker can run. `languages`: the runtime's catalog (the
    union of what live workers advertise, in the distributed mode); None: this host's toolchains.
    While no worker has said what it can run, a declared language is accepted (it is queued)."""
    catalog = languages or LocalLanguages()
    runnable = catalog.runnable()
    supported = sorted(runnable) if runnable is not None else sorted(lang.id for lang in all_languages())
    if get_language(language) is None:
        raise ValidationError(
            f"unknown language {language!r}; supported: {', '.join(supported)}",
            code="UNSUPPORTED_LANGUAGE",
            details={"supported": supported},
        )
    if runnable is not None and language not in runnable:
        where = "on this server" if isinstance(catalog, LocalLanguages) else "on any live worker"
        raise ValidationError(
            f"the {language} toolchain is not installed {where}; available: {', '.join(supported)}",
            code="LANGUAGE_UNAVAILABLE",
            details={"supported": supported},
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


def lenient_b64decode(text: str) -> bytes:
    """Base64 as the compatibility APIs' clients send it (Ruby's and Node's decoders take it):
    whitespace anywhere and missing padding are allowed, any other character is not.
    Raises ValueError (binascii.Error) for what is not base64."""
    cleaned = "".join(text.split())
    return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
