"""Per-file wall and CPU times of a test run, to see which files make the run long.

    pytest -p tests.support.filetimes ...          # FILETIMES_OUT=path (default filetimes.jsonl)
    python -m tests.support.filetimes filetimes.jsonl

A file's wall time runs from its first test's start to the next file's start on the same xdist
worker (module fixtures included); its CPU is the worker's own, and that of the child processes
the worker reaped meanwhile (a stack's processes are counted when they are stopped).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

_open: dict[str, dict[str, Any]] = {}


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _close(path: str) -> None:
    started = _open.pop(path)
    own, children = _cpu()
    record = {"file": path, "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "tests": started["n"],
              "wall": round(time.time() - started["t"], 2), "cpu": round(own - started["own"], 2),
              "child_cpu": round(children - started["children"], 2)}
    with open(os.environ.get("FILETIMES_OUT", "filetimes.jsonl"), "a") as out:
        out.write(json.dumps(record) + "\n")


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    path = nodeid.split("::", 1)[0]
    for other in [p for p in _open if p != path]:
        _close(other)
    if path not in _open:
        own, children = _cpu()
        _open[path] = {"t": time.time(), "own": own, "children": children, "n": 0}
    _open[path]["n"] += 1


def pytest_sessionfinish() -> None:
    for path in list(_open):
        _close(path)


def main(path: str) -> None:
    with open(path) as f:
        records = [json.loads(line) for line in f]
    records = [r for r in records if r["worker"] != "main"] or records  # the xdist controller's are echoes
    per_worker: dict[str, float] = {}
    for r in records:
        per_worker[r["worker"]] = per_worker.get(r["worker"], 0) + r["wall"]
    print("wall per worker:", {w: round(t) for w, t in sorted(per_worker.items())})
    print(f"{'wall':>7} {'cpu':>6} {'child':>6} {'tests':>5}  file")
    for r in sorted(records, key=lambda r: -r["wall"])[:40]:
        print(f"{r['wall']:7.1f} {r['cpu']:6.1f} {r['child_cpu']:6.1f} {r['tests']:5d}  {r['file']} ({r['worker']})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "filetimes.jsonl")
