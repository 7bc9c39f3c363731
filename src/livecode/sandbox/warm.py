"""Warm starts: a spare sandbox's program started before its run, so that an interpreter's
start-up is off the run's path (Python, and Node, whose main module is one readFileSync once it
has booted: ~40 ms of a hello world's ~50).

A Python hello world spends ~12 of its ~15 ms of CPU starting the interpreter (site, encodings,
the io stack) before the first line of the script runs. An interpreter opens its script only at
the end of its start-up, and reads it through whatever file it gets. So a spare sandbox (pool.py)
can start the program of the runs that came last, with its entry file a FIFO: the interpreter
starts and blocks opening it. When a run takes the sandbox, the launcher writes the run's files,
puts the real entry file in the FIFO's place and gives the interpreter the same content through
the FIFO (launcher.py: the W, G and U records). What the program sees is what a cold start
gives: the same argv, environment, working directory, rlimits and pipes, `__file__` a regular
file with its source (tracebacks quote its lines), sys.path[0] its directory, nothing imported
that a cold start would not import. Each warm start is still one fresh process in one fresh
sandbox, used for one run and destroyed with it; it runs as the sandbox's uid, under its seccomp
filter and cgroup, from its first instruction, and holds nothing of any run until its own comes.

A run uses a spare's warm program only if everything the program was started with is what the
run would start (`WarmStart` is equal); otherwise the launcher stops it and starts the run's own
(U). Not warm-started: compile stages, languages without `warm_start` (languages.toml), runs
with arguments or an entry other than the language's `source_file` (a spare would hold one
user's arguments or file name for the next), and a source CPython reads as more than its text
(`_fifo_readable`: a non-UTF-8 encoding declaration, a zip, bytecode).

The program's start-up CPU is spent before the run's counters are reset (like the sandbox's own
set-up), so `cpu_time_ms` of a warm-started run counts from its entry file's arrival, and a
hello world reports ~1-3 ms instead of ~15.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

from .files import FileSpec

# PEP 263: an encoding declaration on line 1 or 2.
_CODING = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")
_PYC_MAGIC = importlib.util.MAGIC_NUMBER[:2]  # of the worker's Python: the sandbox's is the same /usr/bin/python3
_ZIP_END = b"PK\x05\x06"  # a zip's end of central directory record: within its last 64 KiB + 22 bytes
_ZIP_TAIL = 65536 + 22


@dataclass(frozen=True)
class WarmStart:
    """What a program was started with, ahead of its run."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    rlimits: tuple[tuple[int, int, int], ...]
    merged: bool  # stderr is the stdout pipe (2>&1)
    entry: str  # the entry file's path in the sandbox: a FIFO until the run's job comes


def warm_start(
    entry: str | None,
    work: str,
    argv: list[str],
    env: dict[str, str],
    rlimits: list[tuple[int, int, int]],
    merged: bool,
    files: list[FileSpec],
) -> WarmStart | None:
    """The warm start a run stage with these would use, or None when it cannot use one.
    `entry`: the stage's entry file (relative to `work`) when its language allows warm starts."""
    if entry is None or "/" in entry:
        return None
    source = next((f.data for f in files if f.name == entry), None)
    if source is None or not _fifo_readable(source):
        return None
    # The environment in its order: the program sees it in that order (os.environ, /proc/self/environ).
    return WarmStart(tuple(argv), tuple(env.items()), tuple(rlimits), merged, f"{work}/{entry}")


def _fifo_readable(source: bytes) -> bool:
    """Whether CPython runs this script read through a pipe as it runs the file. Not when the
    file is a zip (CPython runs a zip's __main__.py, and finds a zip only in a regular file),
    compiled bytecode (recognized by its magic number, read with a seek), or when it declares
    an encoding other than UTF-8 (the tokenizer then seeks the file)."""
    if source[:2] == _PYC_MAGIC or _ZIP_END in source[-(_ZIP_TAIL):]:
        return False
    # A NUL byte, or bytes that are not UTF-8: the interpreter's own reading and compile() of the
    # bytes (an entered warm start's, enter.py) report them differently; a cold start says it its way.
    if b"\0" in source:
        return False
    try:
        source.decode("utf-8")
    except UnicodeDecodeError:
        return False
    for line in source.split(b"\n", 2)[:2]:
        m = _CODING.match(line)
        if m:
            name = m.group(1).decode("ascii", "replace").lower().replace("_", "-")
            return name == "utf-8" or name.startswith("utf-8-")
    return True
