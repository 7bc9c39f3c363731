"""A program as a set of files: the paths allowed in a work directory, and how a language's
commands name them.

A request carries `files` (SourceFile: a relative path and its bytes) and `entry` (the file that
runs). The single-file form (RunRequest.source) is the set of one file at the language's default
path. Every path is checked here, once, by the rules the API also applies (services call
`path_problem`), so that a path can never leave the run's work directory: relative, no `..` or
`.` component, no empty component, no NUL, backslash or control character, no component that a
command could take for an option (a leading `-`), and bounded in length and depth.

languages.toml commands may name the program's files:
  {entry}       the entry's path ("main.py", "app/run.py")
  {entry_stem}  the entry's file name without its extension ("Main" for Java's class)
  {sources}     one argv entry per file matching the language's `sources` globs, in path order
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_PATH_BYTES = 1024
MAX_NAME_BYTES = 255  # NAME_MAX of the run's tmpfs
MAX_DEPTH = 16  # directories a path may go down


@dataclass(frozen=True)
class SourceFile:
    """One file of a program: `path` relative to the work directory, `data` its exact bytes."""

    path: str
    data: bytes

    @classmethod
    def text(cls, path: str, content: str) -> SourceFile:
        return cls(path, content.encode("utf-8", "surrogatepass"))


OUTPUT_DIR = "out"  # every sandbox starts with it (outputs.py): the files a run leaves there are kept


class InvalidProgram(ValueError):
    """The file set breaks a rule; the message names the path."""


def path_problem(path: object) -> str | None:
    """Why `path` cannot be a program file's path, or None when it can."""
    if not isinstance(path, str) or not path:
        return "a path must be a non-empty string"
    if "\0" in path:
        return "a path must not contain NUL"
    if "\\" in path:
        return "a path must not contain a backslash (use /)"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "a path must not contain control characters"
    if path.startswith("/"):
        return "a path must be relative (no leading /)"
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        return "a path must be valid UTF-8"
    if size > MAX_PATH_BYTES:
        return f"a path may be at most {MAX_PATH_BYTES} bytes"
    parts = path.split("/")
    if len(parts) > MAX_DEPTH + 1:
        return f"a path may go at most {MAX_DEPTH} directories deep"
    for part in parts:
        if part == "":
            return "a path must not have an empty component (// or a trailing /)"
        if part in (".", ".."):
            return "a path must not contain . or .. components"
        if part.startswith("-"):
            return "a path component must not start with - (a command would take it for an option)"
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            return f"a path component may be at most {MAX_NAME_BYTES} bytes"
    if path == OUTPUT_DIR:
        return f"{OUTPUT_DIR}/ is the directory a run's output files go to: a file cannot take its name"
    return None


def set_problem(paths: Sequence[str]) -> tuple[str, str] | None:
    """(path, why) for the first path that clashes with another one: a duplicate, or a file
    that another path needs as its directory. None when the set is consistent."""
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            return path, "the path is given twice"
        seen.add(path)
    for path in paths:
        parent = posixpath.dirname(path)
        while parent:
            if parent in seen:
                return path, f"{parent!r} is a file, so it cannot be a directory too"
            parent = posixpath.dirname(parent)
    return None


def check_program(files: Sequence[SourceFile], entry: str) -> None:
    """Raise InvalidProgram unless every path is allowed, the set is consistent and the entry
    is one of its files."""
    for f in files:
        why = path_problem(f.path)
        if why:
            raise InvalidProgram(f"{f.path!r}: {why}")
    clash = set_problem([f.path for f in files])
    if clash:
        raise InvalidProgram(f"{clash[0]!r}: {clash[1]}")
    if entry not in {f.path for f in files}:
        raise InvalidProgram(f"the entry {entry!r} is not one of the files")


def parent_dirs(paths: Iterable[str]) -> list[str]:
    """Every directory the paths need, parents before children."""
    dirs: set[str] = set()
    for path in paths:
        parent = posixpath.dirname(path)
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    return sorted(dirs, key=lambda d: (d.count("/"), d))


def matches(path: str, pattern: str) -> bool:
    """A `sources` glob: "*.c" matches files at the top of the work directory only; "**/*.c"
    matches at any depth (the file name against "*.c")."""
    if pattern.startswith("**/"):
        return fnmatch.fnmatchcase(posixpath.basename(path), pattern[3:])
    return "/" not in path and fnmatch.fnmatchcase(path, pattern)


def expand(argv: Sequence[str], entry: str, paths: Sequence[str], sources: Sequence[str]) -> list[str]:
    """A languages.toml command with the program's files put in (see the module's docstring)."""
    stem = posixpath.basename(entry).rsplit(".", 1)[0]
    out: list[str] = []
    for arg in argv:
        if arg == "{sources}":
            out += sorted(p for p in paths if any(matches(p, g) for g in sources))
        else:
            out.append(arg.replace("{entry_stem}", stem).replace("{entry}", entry))
    return out


def default_entry(paths: Sequence[str], default: str) -> str | None:
    """The entry when none is named: the language's default path if it is there, else the only
    file; None when that leaves a choice."""
    if default in paths:
        return default
    return paths[0] if len(paths) == 1 else None


def resolve(source: str, files: Sequence[SourceFile], entry: str | None, default: str) -> tuple[list[SourceFile], str]:
    """The program's files and entry: `source` alone is one file at `default`. Raises
    InvalidProgram for a set that breaks a rule or an entry that cannot be chosen."""
    if not files:
        return [SourceFile.text(default, source)], default
    if entry is None:
        entry = default_entry([f.path for f in files], default)
        if entry is None:
            raise InvalidProgram(f"name the entry: there are several files and none is {default!r}")
    check_program(files, entry)
    return list(files), entry
