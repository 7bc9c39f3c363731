"""Where the whole machine's CPU goes while the distributed stack drains a queue (issue 11).

`bench_cost` counts the stack's processes from /proc; what it cannot split is the short-lived
ones (bubblewrap, the launcher, the template's copies: each lives a few milliseconds and its CPU
lands in its parent's children's time) and what runs outside the stack's processes (kernel
threads: a network namespace's teardown, RCU; the idle cores). This bench samples the whole
machine with `perf record -a` while one API and one worker (their defaults, as `bench_cost`
starts them) drain N hello worlds submitted at once, and prints, per execution, the CPU of each
kind of process:

    .venv/bin/python -m bench.bench_machine [--count 700] [--seconds 8] [--language python]

Needs root and `perf` (Debian's linux-perf). The sampling window starts one second into the
drain (the submissions are under way by then) and must end before the queue does: with N
too small for the window, the figures include the idle tail (the bench says so). A benchmark,
never a pass/fail test; 499 samples per second per core, so a kind below ~1 % of the machine
moves by a few tenths of a millisecond between runs.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import requests

from bench.bench_cost import HELLO, _proc_table, add_redis_url, cpu_stat, start_stack, tree_members, wait_all_done
from bench.common import machine
from tests.support.client import ApiClient

_FREQ = 499
_PERF = "perf itself (the measurement, not in the total)"
_TEMPLATE_CMDLINE = b"/usr/bin/python3\0-E\0-s\0main.py\0"


def _templates() -> set[int]:
    """The enter templates alive now. Their copies and the launchers' interpreters have their comm
    (python3) and command line too, but live in a sandbox's pid namespace (two pids in NSpid); a
    template is root in ours."""
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if f.read() != _TEMPLATE_CMDLINE:
                        continue
                with open(f"/proc/{name}/status") as f:
                    nspid = next(line.split()[1:] for line in f if line.startswith("NSpid:"))
            except (OSError, StopIteration):
                continue
            if len(nspid) == 1:
                found.add(int(name))
    return found


def kind_of(comm: str, pid: int, roles: dict[int, str], templates: set[int]) -> str:
    if pid in roles:
        return roles[pid]
    if comm == "swapper":
        return "idle"
    if comm == "perf":
        return _PERF
    if comm == "python3":
        return "enter templates (their own work: the forks, the loop)" if pid in templates else (
            "sandboxed programs (template copies, interpreters)")
    if comm == "bwrap":
        return "bubblewrap (the sandboxes' set-up)"
    if comm.startswith(".livecode-launc"):
        return "launcher (each sandbox's pid 1, its exit)"
    if comm.startswith("spawner-"):
        return "spawner (the exec helper before bubblewrap)"
    if comm == "postgres":
        return "postgresql"
    if comm == "redis-server":
        return "redis"
    if comm.startswith(("kworker", "ksoftirqd", "rcu", "migration", "kdamond", "cpuhp", "kthreadd")):
        return "kernel threads (namespace teardown, RCU, cgroups)"
    return f"other ({comm})"


def drain(count: int, seconds: float, language: str, redis_url: str, keep: str | None = None) -> dict[str, Any]:
    perf = shutil.which("perf")
    if perf is None:
        raise SystemExit("bench_machine needs perf (apt-get install linux-perf)")
    stack = start_stack(redis_url, False)
    out = tempfile.mkdtemp(prefix="lc-bench-machine-")
    data = os.path.join(out, "perf.data")
    try:
        api = ApiClient(stack.base)
        api.run(HELLO, language)  # the worker's pool and templates up
        sessions = [api.create_session(HELLO, language)["session_id"] for _ in range(count)]
        pg = psycopg.connect(stack.database_url, autocommit=True)
        # The API's processes (its server and workers: no sandboxes there); the worker's own
        # process only (its descendants are the sandboxes, templates and their copies).
        roles = {p: "api" for p in tree_members(_proc_table(), stack.api.proc.pid)}
        roles[stack.worker.proc.pid] = "worker's own Python process"
        roles[os.getpid()] = "this bench's client"
        baseline = _finished(pg)
        local = threading.local()

        def submit(sid: str) -> str:
            if not hasattr(local, "s"):
                local.s = requests.Session()
            r = local.s.post(f"{stack.base}/api/v1/executions/session/{sid}/execute", json={}, timeout=60)
            assert r.status_code == 202, r.text
            return str(r.json()["execution_id"])

        t0 = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(submit, sid) for sid in sessions]
            time.sleep(1.0)
            stat0 = cpu_stat()
            # cpu-clock: a timer's samples, whatever the CPU's counters (idle and frequency
            # scaling move a `cycles` event's rate).
            rec = subprocess.Popen(
                [perf, "record", "-a", "-g", "--no-buildid", "-e", "cpu-clock", "-F", str(_FREQ), "-o", data,
                 "--", "sleep", str(seconds)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            window = time.time()  # (perf starts sampling a few milliseconds later)
            # Templates are replaced after 256 spares: looked for through the window.
            templates: set[int] = set()
            stat1 = None
            while rec.poll() is None:
                templates |= _templates()
                if stat1 is None and time.time() >= window + seconds:
                    stat1 = cpu_stat()  # (perf goes on writing its file for a while)
                time.sleep(0.25)
            stat1 = stat1 or cpu_stat()
            ids = [f.result() for f in futures]
        # The executions that finished while perf sampled (perf writes its file after the window).
        done_in_window = _finished(pg, window, window + seconds)
        queue_outlived = _finished(pg, 0, window + seconds) < baseline + count
        wait_all_done(pg, ids)
        elapsed = time.perf_counter() - t0
        script = subprocess.run([perf, "script", "-i", data, "-F", "comm,pid"], capture_output=True, text=True,
                                check=True).stdout
        samples: collections.Counter[str] = collections.Counter()
        for line in script.splitlines():
            comm, _, pid = line.strip().rpartition(" ")
            if pid.isdigit():
                samples[kind_of(comm.strip(), int(pid), roles, templates)] += 1
        pg.close()
        return {"count": count, "elapsed": elapsed, "window_s": seconds, "finished_in_window": done_in_window,
                "samples": dict(samples), "cores": os.cpu_count() or 1,
                "idle_stat": (stat1[1] - stat0[1]) / max(1, stat1[0] - stat0[0]),
                "queue_outlived_window": queue_outlived}
    finally:
        stack.close()
        if keep and os.path.exists(data):
            shutil.move(data, keep)
        shutil.rmtree(out, ignore_errors=True)


def _finished(pg: psycopg.Connection[Any], since: float | None = None, until: float | None = None) -> int:
    """Executions finished (in [since, until], epoch seconds, if given)."""
    if since is None:
        row = pg.execute("SELECT count(*) FROM executions WHERE finished_at IS NOT NULL").fetchone()
    else:
        row = pg.execute("SELECT count(*) FROM executions WHERE finished_at BETWEEN to_timestamp(%s) AND "
                         "to_timestamp(%s)", (since, until)).fetchone()
    return int(row[0]) if row else 0


def report(r: dict[str, Any]) -> str:
    total = sum(r["samples"].values())
    per_sample_ms = 1000 / _FREQ
    runs = max(1, r["finished_in_window"])
    lines = [f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end",
             f"{r['count']} hello worlds queued at once, drained in {r['elapsed']:.1f} s "
             f"({r['count'] / r['elapsed']:.1f}/s); sampled {r['window_s']:.0f} s of it: "
             f"{r['finished_in_window']} executions finished in the window"
             + ("" if r["queue_outlived_window"] else
                " (the queue ran dry before the window ended: the idle tail is in the figures; raise --count)"),
             "", "| kind of process | share of the machine | CPU per execution |", "|---|---|---|"]
    for kind, n in sorted(r["samples"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {kind} | {100 * n / total:.1f} % | {n * per_sample_ms / runs:.2f} ms |")
    busy = total - r["samples"].get("idle", 0) - r["samples"].get(_PERF, 0)
    lines.append(f"| **all but idle and perf** | {100 * busy / total:.1f} % "
                 f"| **{busy * per_sample_ms / runs:.2f} ms** |")
    lines.append(f"\n(/proc/stat's idle share over the same window: {100 * r['idle_stat']:.0f} %)")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=700, help="executions queued at once (default %(default)s)")
    p.add_argument("--seconds", type=float, default=8, help="the sampling window (default %(default)s)")
    p.add_argument("--language", default="python")
    p.add_argument("--perf-data", metavar="PATH", help="keep perf's samples there (for perf report -i PATH)")
    add_redis_url(p)
    args = p.parse_args()
    print(report(drain(args.count, args.seconds, args.language, args.redis_url, args.perf_data)))


if __name__ == "__main__":
    main()
