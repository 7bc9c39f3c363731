"""A session's program as a set of files (issue 13, part 2). No Flask here.

A program is `files` ([{path, content}], in the user's order) and `entry`, the file that runs.
`source_code` alone is the single-file form: one file at the language's default path
(languages.toml `source_file`). The rules on paths are the sandbox's own (sandbox/program.py);
this module adds the service's limits (LIVECODE_MAX_FILES, LIVECODE_MAX_FILES_BYTES) and turns
every refusal into a 4xx that names the path.

Storage (models.CodeSession): `source_code` always holds the entry's content, so every reader of
the single-file form keeps working; `files` holds the whole set with the entry's content left
out (null), and `entry` its path. A program that is just the default file is stored as a
single-file session (both NULL), whichever way it was sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..errors import PayloadTooLarge, ValidationError
from ..sandbox import SourceFile, get_language, path_problem
from ..sandbox.program import default_entry, set_problem
from .validation import check_text

_NO_BOUND = 1 << 62


@dataclass(frozen=True)
class Program:
    """A checked program: (path, content) pairs in order, and the entry (one of the paths)."""

    files: tuple[tuple[str, str], ...]
    entry: str

    def content(self, path: str) -> str | None:
        return next((c for p, c in self.files if p == path), None)

    def source_files(self) -> tuple[SourceFile, ...]:
        """The files as the sandbox's RunRequest carries them."""
        return tuple(SourceFile.text(p, c) for p, c in self.files)


def default_path(language: str) -> str:
    lang = get_language(language)
    return lang.source_file if lang is not None else "main"


def parse_files(value: object, field: str = "files") -> list[tuple[str, str]]:
    """A JSON `files` value as (path, content) pairs; 400 INVALID_FILES for a wrong shape."""
    if not isinstance(value, list) or not value:
        raise ValidationError(f"{field} must be a non-empty array of {{path, content}} objects", code="INVALID_FILES")
    return [parse_file(item, f"{field}[{i}]") for i, item in enumerate(value)]


def parse_file(item: object, where: str = "file") -> tuple[str, str]:
    """One {path, content} object; 400 INVALID_FILES for a wrong shape or an unknown key."""
    if not isinstance(item, dict):
        raise ValidationError(f"{where} must be an object with path and content", code="INVALID_FILES")
    unknown = sorted(set(item) - {"path", "content"})
    if unknown:
        raise ValidationError(f"{where} has unknown field(s): {', '.join(unknown)}", code="INVALID_FILES")
    path, content = item.get("path"), item.get("content")
    if not isinstance(path, str):
        raise ValidationError(f"{where}.path must be a string", code="INVALID_FILES")
    if not isinstance(content, str):
        raise ValidationError(
            f"{where}.content must be a string (file {path[:200]!r})",
            code="INVALID_FILES",
            details={"path": path[:1024]},
        )
    return path, content


def check_program(files: Sequence[tuple[str, str]], entry: str | None, language: str, settings: Settings) -> Program:
    """The program, or a 4xx naming what is wrong: a bad or clashing path (400 INVALID_FILE_PATH),
    too many files (400 TOO_MANY_FILES), too many bytes (413 FILES_TOO_LARGE), a content that is
    not text (400 INVALID_SOURCE), an entry that is not one of the files (400 INVALID_ENTRY)."""
    if len(files) > settings.max_files:
        raise ValidationError(
            f"a program may have at most {settings.max_files} files; this one has {len(files)}",
            code="TOO_MANY_FILES",
            details={"limit": settings.max_files, "count": len(files)},
        )
    for path, _ in files:
        why = path_problem(path)
        if why:
            raise _bad_path(path, why)
    clash = set_problem([p for p, _ in files])
    if clash:
        raise _bad_path(*clash)
    total = 0
    for path, content in files:
        check_text(content, f"file {path!r}", _NO_BOUND)  # text only: the size bound is the total's
        total += len(content.encode("utf-8"))
    if total > settings.max_files_bytes:
        raise PayloadTooLarge(
            f"the files take {total} bytes together; the limit is {settings.max_files_bytes} bytes",
            code="FILES_TOO_LARGE",
            details={"limit_bytes": settings.max_files_bytes, "size_bytes": total},
        )
    paths = [p for p, _ in files]
    if entry is None:
        entry = default_entry(paths, default_path(language))
        if entry is None:
            raise ValidationError(
                f"name the entry (the file that runs): there are {len(paths)} files and none is "
                f"{default_path(language)!r}",
                code="INVALID_ENTRY",
                details={"paths": paths},
            )
    elif entry not in paths:
        raise ValidationError(
            f"the entry {entry[:200]!r} is not one of the files",
            code="INVALID_ENTRY",
            details={"entry": entry[:1024], "paths": paths},
        )
    return Program(tuple(files), entry)


def _bad_path(path: str, why: str) -> ValidationError:
    shown = path[:200] + ("…" if len(path) > 200 else "")
    return ValidationError(f"file path {shown!r}: {why}", code="INVALID_FILE_PATH", details={"path": path[:1024]})


def with_source_code(
    files: Sequence[tuple[str, str]], entry: str | None, source_code: str, language: str
) -> tuple[list[tuple[str, str]], str]:
    """`files` given beside `source_code`: source_code is the entry's content, and files the
    others (400 when they hold the entry too)."""
    entry = entry or default_path(language)
    if any(p == entry for p, _ in files):
        raise ValidationError(
            f"{entry!r} is given twice: as source_code and in files; give it once",
            code="INVALID_FILES",
            details={"path": entry},
        )
    return [(entry, source_code), *files], entry


def session_columns(program: Program, language: str) -> dict[str, Any]:
    """The CodeSession columns (source_code, files, entry) that store `program`."""
    source_code = program.content(program.entry) or ""
    if len(program.files) == 1 and program.entry == default_path(language):
        return {"source_code": source_code, "files": None, "entry": None}
    stored = [{"path": p, "content": None if p == program.entry else c} for p, c in program.files]
    return {"source_code": source_code, "files": stored, "entry": program.entry}


def session_program(
    language: str, source_code: str, files: Sequence[Mapping[str, Any]] | None, entry: str | None
) -> Program:
    """The program a session's columns store (the inverse of session_columns)."""
    if not files or entry is None:
        return Program(((default_path(language), source_code),), default_path(language))
    pairs = tuple((str(f["path"]), source_code if f["path"] == entry else str(f.get("content") or "")) for f in files)
    return Program(pairs, entry)


def as_json(program: Program) -> dict[str, Any]:
    """The session's `files` and `entry` as the API returns them."""
    return {"files": [{"path": p, "content": c} for p, c in program.files], "entry": program.entry}


def request_columns(
    language: str,
    source_code: str | None,
    files: Sequence[tuple[str, str]] | None,
    entry: str | None,
    settings: Settings,
    max_source_bytes: int,
) -> dict[str, Any]:
    """The session columns for a create request's `source_code`, `files` and `entry` (see the
    module's docstring), or a 4xx. `source_code` alone is the single-file form (at `entry`, when
    named); beside `files` it is the entry's content."""
    if source_code is not None:
        check_text(source_code, "source_code", max_source_bytes)
    if files is None:
        if source_code is None:
            raise ValidationError(
                "give source_code (one file) or files (several)", code="MISSING_FIELD", details={"field": "source_code"}
            )
        if entry is None:
            return {"source_code": source_code, "files": None, "entry": None}
        files, entry = [(entry, source_code)], entry
    elif source_code is not None:
        files, entry = with_source_code(files, entry, source_code, language)
    return session_columns(check_program(files, entry, language, settings), language)
