"""A sandboxed Python's start-up CPU, with setuptools' namespace hooks rewritten (sandbox/pysite.py)
and as the host has them, against the same interpreter bare.

    .venv/bin/python -m bench.bench_python_start [--rounds 6] [--runs 10] [--uid-base 66000]

The program's first line reads its own CPU so far (`getrusage(RUSAGE_SELF)`: the interpreter's
start-up, site and its .pth files included, nothing of the sandbox's set-up). One runner, no pool;
the two sides alternate in rounds within one process (the hooks switched off by giving the runner
none), so the machine's load falls on both. Also: the same line run by the host's interpreter
bare (`/usr/bin/python3 -E -s`, as the sandbox runs it, and plain `python3 -c`, the issue's "program
itself"), and the children's CPU per whole sandboxed hello world for each side. Needs root and
bubblewrap. Never a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.common import machine
from livecode.sandbox import RunRequest, SandboxLimits, get_runner, pysite

HOST, NEW = "host's", "rewritten"
PROBE = "import resource as r; u = r.getrusage(r.RUSAGE_SELF); print((u.ru_utime + u.ru_stime) * 1000)"


def _children_ms() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (ru.ru_utime + ru.ru_stime) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--runs", type=int, default=10, help="runs per side per round")
    ap.add_argument("--uid-base", type=int, default=66000)
    args = ap.parse_args()
    hooks = pysite.find_hooks()
    base = Path(tempfile.mkdtemp(prefix="lc-pystart-"))
    base.chmod(0o700)
    runner = get_runner(
        "bwrap", work_root=str(base / "w"), cache_dir=str(base / "c"), uid_base=args.uid_base, slots=4, pool_size=0
    )
    runner.check()
    probe = RunRequest("python", PROBE, limits=SandboxLimits())
    hello = RunRequest("python", "print('hi')", limits=SandboxLimits())
    files = pysite.SiteHooks.files
    start: dict[str, list[float]] = {NEW: [], HOST: []}
    whole: dict[str, list[float]] = {NEW: [], HOST: []}
    try:
        for _ in range(3):
            runner.run(hello)
        for rnd in range(args.rounds):
            for side in (HOST, NEW) if rnd % 2 else (NEW, HOST):
                pysite.SiteHooks.files = files if side == NEW else (lambda self: [])  # type: ignore[method-assign]
                start[side] += [float(runner.run(probe).stdout) for _ in range(args.runs)]
                c0 = _children_ms()
                for _ in range(args.runs):
                    runner.run(hello)
                whole[side].append((_children_ms() - c0) / args.runs)
    finally:
        pysite.SiteHooks.files = files  # type: ignore[method-assign]
        runner.close()
    bare = {
        "-E -s": [
            float(
                subprocess.run(
                    ["/usr/bin/python3", "-E", "-s", "-c", PROBE], capture_output=True, text=True, check=True
                ).stdout
            )
            for _ in range(args.rounds * args.runs)
        ],
        "plain": [
            float(subprocess.run(["/usr/bin/python3", "-c", PROBE], capture_output=True, text=True, check=True).stdout)
            for _ in range(args.rounds * args.runs)
        ],
    }
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"hooks rewritten: {[p for p, _ in hooks] or 'none on this host'}")
    print("| figure (medians) | hooks rewritten | the host's hooks |")
    print("|---|---|---|")
    print(
        f"| sandboxed interpreter's start-up CPU | {statistics.median(start[NEW]):.2f} ms | "
        f"{statistics.median(start[HOST]):.2f} ms |"
    )
    print(
        f"| a whole sandboxed hello world, CPU of its processes (no pool) | {statistics.median(whole[NEW]):.2f} ms | "
        f"{statistics.median(whole[HOST]):.2f} ms |"
    )
    print(
        f"| bare on the host, start-up CPU: `python3 -E -s`; plain `python3` | | "
        f"{statistics.median(bare['-E -s']):.2f}; {statistics.median(bare['plain']):.2f} ms |"
    )


if __name__ == "__main__":
    main()
