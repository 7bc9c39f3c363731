"""Where a template's copy spends its CPU, phase by phase, and the template per request (issue 11).

An entered warm start's program is a copy of a template interpreter (sandbox/enter.py,
enter_template.py): forked, it enters its sandbox, waits for its source, runs it and ends. This
bench copies `src/` to a temporary directory, puts thread-CPU stamps (`CLOCK_THREAD_CPUTIME_ID`)
between the copy's phases and around the template's per-request work in that copy's
enter_template.py, runs LiveCode's runner (one spare, entered warm starts) on sequential hello
worlds, and prints the median of each phase. The copy reports its stamps on its stderr just
before it exits (so the exit's own kernel work, after the last stamp, is not in them); the
template's totals ride along (a copy inherits them at its fork).

    .venv/bin/python -m bench.bench_copy_phases [--runs 60] [--src src] [--uid 75200] [--code "import json"]

Needs root and bubblewrap. `--src` measures another tree (e.g. `git archive <commit> src`
unpacked somewhere). A stamp whose anchor is not found in that tree's enter_template.py is
reported and left out. Never a pass/fail test; phases below ~0.05 ms are within the noise.
"""

from __future__ import annotations

import argparse
import ast
import collections
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

_HELPER = (
    "\nimport time as _lc_t\n_LC_ST = []\n_LC_TS = {}\n"
    "def _lc_s(name):\n    _LC_ST.append((name, _lc_t.clock_gettime_ns(_lc_t.CLOCK_THREAD_CPUTIME_ID)))\n"
    "def _lc_now():\n    return _lc_t.clock_gettime_ns(_lc_t.CLOCK_THREAD_CPUTIME_ID)\n"
    "def _lc_ta(name, t0):\n    _LC_TS[name] = _LC_TS.get(name, 0) + _lc_now() - t0\n"
)

# (anchor text in enter_template.py, replacement): each stamp goes right after (or around) its anchor.
_EDITS = [
    ("_libc = ctypes.CDLL(None, use_errno=True)\n", "_libc = ctypes.CDLL(None, use_errno=True)\n" + _HELPER),
    ("            _keep_only({", "            _lc_s('fork (the copy side)')\n            _keep_only({"),
    ("            return _become(", "            _lc_s('descriptors closed')\n            return _become("),
    ('    os.write(ready, b"ready")',
     "    _lc_s('enters its sandbox, drops privileges')\n    os.write(ready, b\"ready\")"),
    ("_entry = _serve()\n", "_entry = _serve()\n_lc_s('ready; its source arrives')\n"),
    ("_globals = _as_main(_entry)\n", "_globals = _as_main(_entry)\n_lc_s('a fresh __main__')\n"),
    ("    _source = _f.read()\ndel _f\n", "    _source = _f.read()\ndel _f\n_lc_s('collection, source read')\n"),
    ('    _code = compile(_source, _entry, "exec")\n',
     '    _code = compile(_source, _entry, "exec")\n    _lc_s(\'compile\')\n'),
    ("        exec(_code, _globals)\n", "        exec(_code, _globals)\n        _lc_s('the program')\n"),
    ("        ready = _exit_ready()\n", "        _lc_s('after the program')\n        ready = _exit_ready()\n"),
    ("            _finalize()\n", "            _lc_s('threads, atexit, flushes')\n            _finalize()\n"
                                  "            _lc_s('finalization (the program modules)')\n"),
    ("        _c_exit(status)", "        _lc_s('last flushes')\n"
                              "        os.write(2, ('LCSTAMPS ' + repr((_LC_ST, _LC_TS)) + '\\n').encode())\n"
                              "        _c_exit(status)"),
    # The template, per request: its loop, the request (the fork's parent side), the answer, exits.
    ("    while serving or programs.by_pidfd or pending:\n",
     "    while serving or programs.by_pidfd or pending:\n        _lc_tl = _lc_now()\n"),
    ("        for fd, _ in poller.poll():\n            kind = watched.get(fd)\n",
     "        _lc_ta('template: its loop', _lc_tl)\n        for fd, _ in poller.poll():\n"
     "            _lc_tl = _lc_now()\n            kind = watched.get(fd)\n"),
    ("                programs.ended(fd)\n",
     "                programs.ended(fd)\n                _lc_ta('template: an exit reported', _lc_tl)\n"),
    ("                _ready(sock, p)\n",
     "                _ready(sock, p)\n                _lc_ta('template: an answer', _lc_tl)\n"),
    ("                    started = _request(sock, bpf, programs, own_pid_ns, self_pidfd)\n",
     "                    started = _request(sock, bpf, programs, own_pid_ns, self_pidfd)\n"
     "                    if not isinstance(started, str):\n"
     "                        _lc_ta('template: a request (the fork, its parent side)', _lc_tl)\n"),
]


def instrument(src: Path) -> tuple[Path, list[str]]:
    """A copy of `src` with the stamps in; the anchors not found."""
    tmp = Path(tempfile.mkdtemp(prefix="lc-bench-copy-"))
    shutil.copytree(src, tmp / "src", ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp / "src" / "livecode" / "sandbox" / "enter_template.py"
    text = path.read_text()
    missing = []
    for anchor, replacement in _EDITS:
        if anchor in text:
            text = text.replace(anchor, replacement, 1)
        else:
            missing.append(anchor.strip().splitlines()[0])
    path.write_text(text)
    return tmp, missing


def measure(
    tree: Path, runs: int, uid_base: int, code: str = "print('hi')"
) -> tuple[dict[str, list[float]], dict[str, float]]:
    sys.path.insert(0, str(tree / "src"))
    from livecode.sandbox import RunRequest, SandboxLimits, get_runner
    from livecode.sandbox.config import SandboxConfig

    base = Path(tempfile.mkdtemp(prefix="lc-bench-copy-run-"))
    base.chmod(0o700)
    r = get_runner("bwrap", work_root=str(base / "w"), cache_dir=str(base / "c"), uid_base=uid_base, slots=8,
                   pool_size=1, config=SandboxConfig(enter=True))
    phases: dict[str, list[float]] = collections.defaultdict(list)
    totals: list[dict[str, int]] = []
    try:
        r.check()
        hello = RunRequest("python", code, limits=SandboxLimits())
        for _ in range(5):
            r.run(hello)
            time.sleep(0.04)
        for _ in range(runs):
            res = r.run(hello)
            time.sleep(0.04)  # the spare is rebuilt, as between a user's runs
            for line in res.stderr.splitlines():
                if line.startswith("LCSTAMPS "):
                    stamps, template = ast.literal_eval(line[len("LCSTAMPS "):])
                    prev = 0
                    for name, t in stamps:
                        phases[name].append((t - prev) / 1e6)
                        prev = t
                    phases["the copy in all (to its last stamp)"].append(prev / 1e6)
                    totals.append(template)
    finally:
        r.close()
        shutil.rmtree(base, ignore_errors=True)
    # The template's totals as the copies saw them at their fork: the last minus the first,
    # over the requests in between (a copy's own additions after its fork are its, not the
    # template's: only the keys the template adds to are read).
    per_request: dict[str, float] = {}
    if len(totals) > 2:
        first, last = totals[0], totals[-1]
        for key in last:
            per_request[key] = (last[key] - first.get(key, 0)) / 1e6 / (len(totals) - 1)
    return phases, per_request


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--src", default="src", help="the source tree to measure (default %(default)s)")
    p.add_argument("--uid", type=int, default=75200, help="the runner's uid base (default %(default)s)")
    p.add_argument("--code", default="print('hi')", help="the program (default %(default)s)")
    args = p.parse_args()
    tree, missing = instrument(Path(args.src))
    compile((tree / "src/livecode/sandbox/enter_template.py").read_text(), "enter_template.py", "exec")
    try:
        phases, template = measure(tree, args.runs, args.uid, args.code)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    from bench.common import machine

    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}; tree {args.src}")
    if missing:
        print("stamps left out (anchor not found):", "; ".join(missing))
    print(f"| a template's copy running {args.code!r}, thread CPU (median) | ms |")
    print("|---|---|")
    for name, values in phases.items():
        print(f"| {name} | {statistics.median(values):.3f} |")
    for name, value in template.items():
        print(f"| {name}, per request | {value:.3f} |")


if __name__ == "__main__":
    main()
