"""Round trips to PostgreSQL and Redis per step of an execution (issue 11), counted on the wire.

Runs a submission (the API's `submit_execution`), the execution task (as bench_worker_sections
does: Celery's `apply` in this process, the real sandbox) and a GET (`get_execution`), each step
marked, under `strace -f` attached to this process, and counts, per step, the round trips on the
sockets to PostgreSQL (port 5432) and Redis (6379): a round trip is a send on a socket that
follows a receive on it (or is its first in the step), so statements pipelined in one flush count
once, and a BEGIN or COMMIT sent on its own counts as the round trip it is. Nothing is timed
(strace slows every system call); the statements sent are printed with `--show`.

    .venv/bin/python -m bench.bench_round_trips --runs 5 --redis-url redis://127.0.0.1:6379/12

A benchmark, never a pass/fail test. Needs root (the sandbox, strace), PostgreSQL and Redis on
loopback.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.bench_cost import HELLO, add_redis_url, in_process_stack

_MARK_FD = os.open(os.devnull, os.O_WRONLY)


@contextmanager
def step(name: str) -> Iterator[None]:
    os.write(_MARK_FD, f"MARK+{name}".encode())
    try:
        yield
    finally:
        os.write(_MARK_FD, f"MARK-{name}".encode())


def marked(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with step(name):
            return fn(*args, **kwargs)

    return wrapper


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--show", action="store_true",
                   help="print the start of what each step sent to PostgreSQL in each round trip (first run)")
    add_redis_url(p)
    args = p.parse_args()

    with in_process_stack(args.redis_url):
        run(args.runs, args.show)


def run(runs: int, show: bool) -> None:
    from livecode.cli import _settings
    from livecode.logging_setup import configure_logging
    from livecode.runtime import runtime
    from livecode.services import executions as svc
    from livecode.services import sessions
    from livecode.worker import tasks
    from livecode.worker.celery_app import configure_celery
    from livecode.worker.sandbox_runner import get_process_runner

    settings = _settings("distributed")
    configure_logging(settings)
    configure_celery(settings)
    rt = runtime()
    get_process_runner(settings)
    tasks.claim_execution = marked("worker: claim", tasks.claim_execution)
    tasks._save = marked("worker: final write", tasks._save)
    sid = uuid.UUID(
        sessions.create_session(rt.db, language="python", source_code=HELLO, owner_id=None, max_bytes=1 << 20)[
            "session_id"
        ]
    )

    def one() -> None:
        with step("API: POST (submission)"):
            eid = svc.submit_execution(
                rt.db, lambda *_: None, settings, sid, owner_id=None, options=svc.ExecuteOptions(), events=rt.events
            )["execution_id"]
        with step("worker: the task in all"):
            result = tasks.execute_code_task.apply(args=[eid], task_id=eid)
        assert result.get() == "COMPLETED", result.get()
        with step("API: GET"):
            svc.get_execution(rt.db, uuid.UUID(eid), None)

    for _ in range(10):  # warm the pool, the statement caches and psycopg's prepared statements
        one()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.environ.get("BENCH_STRACE_FILE") or os.path.join(tmp, "strace")
        tracer = subprocess.Popen(
            ["strace", "-f", "-qq", "-yy", "-s", "200", "-e", "trace=sendto,recvfrom,write",
             "-o", out, "-p", str(os.getpid())],
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not (os.path.exists(out) and b"MARK+attached" in Path(out).read_bytes()):
                if time.monotonic() > deadline:
                    raise SystemExit("strace did not attach")
                with step("attached"):
                    pass
                time.sleep(0.1)
            for _ in range(runs):
                one()
        finally:
            time.sleep(0.5)
            tracer.terminate()
            tracer.wait(10)
        with open(out) as f:
            report(f.read().splitlines(), runs, show)


_CALL = re.compile(r"^(\d+)\s+(sendto|recvfrom|write)\((\d+)<(.*?)>, \"(.*?)\"")
_PORTS = {"5432": "PostgreSQL", "6379": "Redis"}


def report(lines: list[str], runs: int, show: bool) -> None:
    open_steps: list[str] = []
    trips: collections.Counter[tuple[str, str]] = collections.Counter()
    last: dict[tuple[str, str], str] = {}  # (step, socket) -> the last call on it
    sent: dict[str, list[str]] = collections.defaultdict(list)  # the first run's
    runs_done: dict[str, bool] = {}
    last_steps: set[str] = set()
    for line in lines:
        m = _CALL.match(line)
        if m is None:
            continue
        _tid, call, _fd, what, data = m.groups()
        if call == "write":
            if data.startswith("MARK+"):
                runs_done[data[5:]] = data[5:] in last_steps
                open_steps.append(data[5:])
                last = {k: v for k, v in last.items() if k[0] != data[5:]}
            elif data.startswith("MARK-") and data[5:] in open_steps:
                open_steps.remove(data[5:])
                last_steps.add(data[5:])
            continue
        port = next((name for p, name in _PORTS.items() if f":{p}]" in what), None)
        if port is None or line.endswith("= -1 EAGAIN (Resource temporarily unavailable)"):
            continue
        for s in open_steps:
            key = (s, what)
            if call == "sendto" and last.get(key) != "sendto":
                trips[(s, port)] += 1
                if show and port == "PostgreSQL" and not runs_done.get(s):
                    sent[s].append(data[:120])
            last[key] = call
    steps = sorted({s for s, _ in trips}, key=lambda s: (s.startswith("API: GET"), not s.startswith("API"), s))
    print(f"{runs} hello worlds; round trips per execution:")
    print(f"| {'step':<28} | PostgreSQL | Redis |\n|{'-' * 30}|------------|-------|")
    for s in steps:
        print(f"| {s:<28} | {trips[(s, 'PostgreSQL')] / runs:>10.1f} | {trips[(s, 'Redis')] / runs:>5.1f} |")
    if show:
        for s in steps:
            print(f"\n{s}: the PostgreSQL round trips' first bytes (first run)")
            for d in sent[s]:
                print("   ", d)


if __name__ == "__main__":
    main()
