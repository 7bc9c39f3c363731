"""Turning what bubblewrap and the launcher reported into a StageResult."""

from __future__ import annotations

import contextlib
import json
import os

from .cgroups import RunCgroup
from .runner import Stage, StageResult
from .supervise import Supervised


def stage_result(stage: Stage, sup: Supervised, status: list[dict[str, int]], cg: RunCgroup) -> StageResult:
    sr = StageResult(
        stdout=bytes(sup.data[0]),
        stderr=bytes(sup.data[1]),
        stdout_truncated=sup.truncated[0],
        stderr_truncated=sup.truncated[1],
        wall_ms=sup.wall_ms,
        cpu_ms=cg.cpu_ms(),
        memory_kb=cg.peak_kb(),
        killed_for=sup.killed_for,
        sent_signals=frozenset(sup.sent_signals),
        oom=cg.oom_killed(),
    )
    # The launcher's line is the only status we believe: bubblewrap's own exit code is that of
    # the sandbox's pid 1, and what a program does to itself must not change what we report.
    raw = sup.status or 0
    if sup.exact:  # the launcher saw the program's own wait status
        if os.WIFSIGNALED(raw):
            sr.signal = os.WTERMSIG(raw)
        else:
            sr.exit_code = os.WEXITSTATUS(raw)
    elif sup.killed_for is not None or sr.oom:
        sr.signal = 9  # killed by us (limits) or by the OOM killer before the launcher could tell
    elif not any("child-pid" in s for s in status):
        sr.internal_error = "bubblewrap failed to set up the sandbox"
        return sr
    else:
        sr.internal_error = "the sandbox ended without the program's exit status"
        return sr
    # A compile stage's stdout (the artifacts' tar) went to stage.stdout_file; the runner unpacks it.
    return sr


def read_status(fd: int) -> list[dict[str, int]]:
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError, OSError):
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    out: list[dict[str, int]] = []
    for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict):
                out.append(doc)
    return out
