"""The front worker's thread pool (web/front_worker.HandOffPool) at the worker's exit: as
gunicorn's ThreadPoolExecutor did, the requests being served and those already queued are
answered before the process ends (for at most the grace time: a request that never ends, such
as a stream a client keeps open, does not keep the process alive), and an exit that never shut
the pool down does not hang."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _run(body: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent("""
        import os, sys, time
        sys.path.insert(0, %r)
        from livecode.web.front_worker import HandOffPool

        def request(name):
            time.sleep(0.3)
            os.write(1, (name + " answered\\n").encode())
    """) % SRC + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_requests_served_and_queued_are_answered_when_the_worker_exits() -> None:
    # gthread's run() ends with shutdown(wait=False); the process then exits.
    done = _run("""
        pool = HandOffPool(1)
        pool.put(request, "in-flight")
        pool.put(request, "queued")
        time.sleep(0.1)
        pool.shutdown(wait=False)
        sys.exit(0)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["in-flight answered", "queued answered"]


def test_an_exit_without_shutting_the_pool_down_does_not_hang() -> None:
    done = _run("""
        pool = HandOffPool(2)
        pool.put(request, "in-flight")
        time.sleep(0.1)
        sys.exit(0)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["in-flight answered"]


def test_a_request_that_never_ends_holds_the_exit_for_the_grace_time_only() -> None:
    # A stream or WebSocket a client keeps open, in a worker whose arbiter is gone.
    done = _run("""
        pool = HandOffPool(2, grace_s=1.0)
        pool.put(lambda: [time.sleep(0.05) for _ in iter(int, 1)])
        pool.put(request, "short")
        time.sleep(0.1)
        pool.shutdown(wait=False)
        sys.exit(0)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["short answered"]
