"""Where the worker's own CPU goes, section by section, for one execution (issue 11).

Runs the execution task in this process, as a worker thread would (Celery's tracer included,
through `apply`), against a fresh database on the local PostgreSQL, a Redis database number and
the real sandbox, and times each step of the task with `time.thread_time()` (CPU of the thread
that runs it, system time included; sampling profilers misplace time on a loaded machine). The
output publisher's own thread is timed too. The Celery consumer's share (receiving the message,
the acknowledgement) is not here: bench_cost prints the worker's CPU by thread.

    .venv/bin/python -m bench.bench_worker_sections --runs 200 [--wall] --redis-url redis://127.0.0.1:6379/12

A benchmark, never a pass/fail test. Needs root (the sandbox), PostgreSQL and Redis on loopback.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.bench_cost import HELLO, add_redis_url, in_process_stack

cpu: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()
clock = time.thread_time  # --wall: time.perf_counter (where a run's latency goes, not its CPU)


def timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            with _lock:
                cpu[label] += clock() - t0

    return wrapper


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--wall", action="store_true", help="wall time per step instead of the thread's CPU")
    p.add_argument("--pause-ms", type=float, default=0, help="idle time before each run (the pool refills)")
    add_redis_url(p)
    args = p.parse_args()
    global clock
    if args.wall:
        clock = time.perf_counter

    with in_process_stack(args.redis_url):
        run(args.runs, args.pause_ms / 1000)


def run(runs: int, pause_s: float = 0.0) -> None:
    from livecode.cli import _settings
    from livecode.logging_setup import configure_logging
    from livecode.runtime import runtime
    from livecode.services import sessions
    from livecode.services.executions import ExecuteOptions, submit_execution
    from livecode.streaming import publisher
    from livecode.worker import tasks
    from livecode.worker.celery_app import configure_celery
    from livecode.worker.sandbox_runner import get_process_runner

    settings = _settings("distributed")
    configure_logging(settings)  # the worker's JSON log lines are part of its cost
    configure_celery(settings)
    rt = runtime()
    get_process_runner(settings)
    for name in ("claim_execution", "run_claimed", "_save", "publish_finished", "record_outcome"):
        setattr(tasks, name, timed(name, getattr(tasks, name)))
    tasks.log.info = timed("log lines", tasks.log.info)  # type: ignore[method-assign]
    pub = publisher.OutputPublisher
    pub.__init__ = timed("output publisher: start", pub.__init__)  # type: ignore[method-assign]
    pub._loop = timed("output publisher: its thread (RUNNING, output)", pub._loop)  # type: ignore[method-assign]
    sid = uuid.UUID(
        sessions.create_session(rt.db, language="python", source_code=HELLO, owner_id=None, max_bytes=1 << 20)[
            "session_id"
        ]
    )

    def one() -> None:
        s0 = time.thread_time()
        eid = submit_execution(
            rt.db, lambda *_: None, settings, sid, owner_id=None, options=ExecuteOptions(), events=rt.events
        )["execution_id"]
        submitting[0] += time.thread_time() - s0
        t0 = clock()
        result = tasks.execute_code_task.apply(args=[eid], task_id=eid)
        cpu["the task in all"] += clock() - t0
        assert result.get() == "COMPLETED", result.get()

    submitting = [0.0]  # the bench's own submissions, on this thread: not the worker's
    for _ in range(10):  # warm the pool, the statement caches and psycopg's prepared statements
        one()
    cpu.clear()
    time.sleep(0.5)  # the warm-up's clean-ups and refills
    submitting[0] = 0.0
    p0, switches0, threads0 = time.process_time(), _context_switches(), _thread_cpu()
    for _ in range(runs):
        time.sleep(pause_s)
        one()
    time.sleep(0.5)  # the last run's clean-up and refill
    process = time.process_time() - p0 - submitting[0]
    switches = _context_switches() - switches0
    by_name: collections.Counter[str] = collections.Counter()
    for ident, (name, seconds) in _thread_cpu().items():
        by_name[name.rstrip("0123456789_").rstrip("-_") or "?"] += seconds - threads0.get(ident, (name, 0.0))[1]
    total = cpu.pop("the task in all")
    known = sum(v for k, v in cpu.items() if not k.startswith("output publisher: its thread"))
    what = "wall time" if clock is time.perf_counter else "CPU"
    print(f"load average {os.getloadavg()[0]:.1f}; {runs} sequential hello worlds; {what} per execution:")
    print(f"| {'step':<52} | ms |\n|{'-' * 54}|----|")
    print(f"| {'the task (the thread that runs it), in all':<52} | {1000 * total / runs:.2f} |")
    for label, value in cpu.most_common():
        print(f"| {'  ' + label:<52} | {1000 * value / runs:.2f} |")
    print(f"| {'  the rest (Celery tracer, result columns, ...)':<52} | {1000 * (total - known) / runs:.2f} |")
    if clock is time.thread_time:
        print(f"| {'the process, every thread (pool refill, clean-up, publishers; not the submission)':<52} "
              f"| {1000 * process / runs:.2f} |")
        print(f"| {'  context switches of its threads, per run':<52} | {switches / runs:.1f} |")
        for name, seconds in by_name.most_common():
            if name != "MainThread":  # the task, and the submissions
                print(f"| {'  thread ' + name:<52} | {1000 * seconds / runs:.2f} |")


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """Each live Python thread's CPU time (s, from its own clock: exact, not clock ticks) and
    name, by ident."""
    out = {}
    for t in threading.enumerate():
        if t.ident is None:
            continue
        try:
            out[t.ident] = (t.name, time.clock_gettime(time.pthread_getcpuclockid(t.ident)))
        except OSError:
            continue
    return out


def _context_switches() -> int:
    """Voluntary and involuntary context switches of this process's live threads."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/status") as fh:
                total += sum(int(line.split()[1]) for line in fh if "ctxt_switches" in line)
        except OSError:
            continue
    return total


if __name__ == "__main__":
    main()
