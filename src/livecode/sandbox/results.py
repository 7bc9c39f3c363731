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
        oom=cg.oom_killed(),
    )
    # bwrap reports its own set-up failures as exit status 1 with "bwrap: ..." on stderr.
    setup_failed = os.WIFEXITED(sup.status or 0) and os.WEXITSTATUS(sup.status or 0) == 1
    setup_failed = setup_failed and sr.stderr.startswith(b"bwrap: ") and not sr.stdout
    if (setup_failed or not any("child-pid" in s for s in status)) and sup.killed_for is None:
        sr.internal_error = "bubblewrap failed to set up the sandbox: " + sr.stderr.decode("utf-8", "replace").strip()
        return sr
    raw = sup.status or 0
    if sup.exact:  # the launcher saw the program's own wait status
        if os.WIFSIGNALED(raw):
            sr.signal = os.WTERMSIG(raw)
        else:
            sr.exit_code = os.WEXITSTATUS(raw)
    elif os.WIFSIGNALED(raw):  # bwrap itself was killed (by us)
        sr.signal = os.WTERMSIG(raw)
    else:
        code = os.WEXITSTATUS(raw)
        if code > 128 and sup.killed_for is None and code - 128 < 65:
            sr.signal = code - 128  # bwrap reports a signalled child as 128+signal
        elif sup.killed_for is not None:
            sr.signal = 9
        else:
            sr.exit_code = code
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
