"""Attacks on resources: each is contained by a small limit and the host stays healthy."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest

from livecode.sandbox import Outcome, Runner
from tests.support.limit_programs import DEEP_RECURSION_C, SPIN_1_2_S_PY, WRITE_2_MIB_C

from .helpers import TIME_FACTOR, no_leftovers, requires_bwrap, run

pytestmark = [requires_bwrap, pytest.mark.sandbox, pytest.mark.timeout(90)]


def host_can_spawn() -> bool:
    return subprocess.run(["/bin/true"], timeout=10).returncode == 0


def test_fork_bomb_is_contained(runner: Runner) -> None:
    src = """
import os, time
n = 0
for _ in range(1000):
    try:
        if os.fork() == 0:
            time.sleep(30); os._exit(0)
        n += 1
    except OSError:
        break
print('forked', n, flush=True)
"""
    # The bomb's parent ends as soon as the limit stops it: its children, still asleep in the
    # sandbox, are killed with it (no wait for a time limit: this test also runs in the cgroup v2
    # VM, where every second is emulated).
    res = run(runner, "python", src, max_processes=16, time_limit_ms=int(5000 * TIME_FACTOR))
    assert res.outcome is Outcome.OK, res
    forked = int(res.stdout.split()[1])
    assert forked < 16
    assert host_can_spawn() and no_leftovers()


def test_bash_fork_bomb(runner: Runner) -> None:
    res = run(runner, "bash", ":(){ :|:& };:\nsleep 5", max_processes=16, time_limit_ms=2000)
    assert res.outcome in (Outcome.TIME_LIMIT, Outcome.RUNTIME_ERROR, Outcome.OK), res
    assert host_can_spawn() and no_leftovers()


def test_threads_count_as_processes(runner: Runner) -> None:
    src = """
import threading, time
n = 0
try:
    for _ in range(200):
        threading.Thread(target=time.sleep, args=(5,), daemon=True).start(); n += 1
except RuntimeError:
    pass
print(n)
"""
    res = run(runner, "python", src, max_processes=16, time_limit_ms=10000)
    assert int(res.stdout) < 16, res


def test_memory_bomb_across_process_tree(runner: Runner) -> None:
    # Four children of 24 MB each: every one is under the 64 MB limit, together they are not.
    src = """
import os, time
kids = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        block = b'x' * (24 * 1024 * 1024)
        time.sleep(3)
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
"""
    res = run(runner, "python", src, memory_mb=64, time_limit_ms=int(8000 * TIME_FACTOR))
    assert res.outcome is Outcome.MEMORY_LIMIT, res
    assert res.memory_kb is not None and res.memory_kb <= 64 * 1024 + 1024
    assert no_leftovers()


def test_single_allocation_over_limit(runner: Runner) -> None:
    res = run(runner, "python", "b = b'x' * (200 * 1024 * 1024)\nprint(len(b))", memory_mb=64)
    assert res.outcome is Outcome.MEMORY_LIMIT, res
    assert "209715200" not in res.stdout


def test_cpu_spin_is_time_limit(runner: Runner) -> None:
    start = time.monotonic()
    res = run(runner, "python", "while True: pass", cpu_time_ms=1000, time_limit_ms=60000)
    assert res.outcome is Outcome.TIME_LIMIT and res.message.startswith("CPU time"), res
    assert res.cpu_time_ms is not None and res.cpu_time_ms >= 500  # rlimit and cgroup clocks differ
    assert time.monotonic() - start < 60  # well before the wall limit, even on a busy machine


def test_cpu_spin_across_processes_counts_whole_tree(runner: Runner) -> None:
    # 8 spinners, each with RLIMIT_CPU of 2 s: only the cgroup's total can stop them at 1.5 s.
    src = "import os\nfor _ in range(3): os.fork()\nwhile True: pass"
    res = run(runner, "python", src, cpu_time_ms=1500, time_limit_ms=60000)
    assert res.outcome is Outcome.TIME_LIMIT, res
    assert res.message.startswith("CPU time"), res
    assert res.cpu_time_ms is not None and 1500 <= res.cpu_time_ms < 8000
    assert no_leftovers()


def test_wall_time_limit_on_sleep(runner: Runner) -> None:
    start = time.monotonic()
    res = run(runner, "python", "import time; time.sleep(60)", time_limit_ms=1000)
    elapsed = time.monotonic() - start
    assert res.outcome is Outcome.TIME_LIMIT, res
    assert res.wall_time_ms / 1000 >= 0.9 and elapsed < 10


def test_disk_fill_fails_and_host_unaffected(runner: Runner) -> None:
    src = """
import errno, sys
for path in sys.argv[1:]:
    total = 0
    try:
        with open(path, 'wb') as f:
            while True:
                f.write(b'x' * 65536); f.flush(); total += 65536
    except OSError as e:
        print(path, total, errno.errorcode[e.errno])
"""
    free_before = shutil.disk_usage("/").free
    res = run(runner, "python", src, args=("big", "/tmp/big"), max_disk_kb=4096, max_file_size_kb=65536)
    lines = [line.split() for line in res.stdout.splitlines()]
    assert len(lines) == 2, res
    assert lines[0][2] == "ENOSPC" and int(lines[0][1]) <= 4096 * 1024
    assert lines[1][2] == "ENOSPC" and int(lines[1][1]) <= 4096 * 1024  # shared with the work dir
    assert abs(shutil.disk_usage("/").free - free_before) < 64 * 1024 * 1024


def test_file_size_limit(runner: Runner) -> None:
    src = """
try:
    open('f', 'wb').write(b'x' * 1024 * 1024); print('wrote')
except OSError as e:
    print('refused', e.errno)
"""
    res = run(runner, "python", src, max_file_size_kb=100)
    assert res.stdout.startswith("refused 27"), res  # EFBIG


def test_file_size_limit_kills_with_sigxfsz(runner: Runner) -> None:
    """A program that does not ignore SIGXFSZ (C, unlike Python) is killed by it."""
    src = WRITE_2_MIB_C
    res = run(runner, "c", src, max_file_size_kb=256)
    assert res.outcome is Outcome.RUNTIME_ERROR and res.signal == signal.SIGXFSZ, res
    assert "wrote" not in res.stdout
    assert run(runner, "c", src, max_file_size_kb=4096).stdout == "wrote 2 MiB\n"


def test_stack_limit(runner: Runner) -> None:
    small = run(runner, "c", DEEP_RECURSION_C, stack_kb=1024)
    assert small.outcome is Outcome.RUNTIME_ERROR and small.signal == signal.SIGSEGV, small
    large = run(runner, "c", DEEP_RECURSION_C, stack_kb=16384)
    assert large.outcome is Outcome.OK and large.stdout == "1\n", large


def test_the_program_cannot_raise_its_own_stack_limit(runner: Runner) -> None:
    src = """import resource
print(*resource.getrlimit(resource.RLIMIT_STACK))
try:
    resource.setrlimit(resource.RLIMIT_STACK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    print('raised')
except (ValueError, OSError):
    print('refused')
"""
    res = run(runner, "python", src, stack_kb=2048)
    assert res.stdout.split() == [str(2048 * 1024), str(2048 * 1024), "refused"], res


def test_cpu_extra_time_lets_the_program_end_and_is_still_time_limit(runner: Runner) -> None:
    """Judge0's cpu_extra_time (isolate's --extra-time): killed at cpu_time_ms + cpu_extra_ms, and
    TIME_LIMIT whenever it used more than cpu_time_ms, with the output it wrote."""
    wall = int(30_000 * TIME_FACTOR)
    # 2 s of extra time: the interpreter's start-up counts too (hundreds of ms under emulation).
    extra = run(runner, "python", SPIN_1_2_S_PY, cpu_time_ms=1000, cpu_extra_ms=2000, time_limit_ms=wall)
    assert extra.outcome is Outcome.TIME_LIMIT and extra.message.startswith("CPU time"), extra
    assert extra.stdout == "done\n" and extra.exit_code == 0, extra  # it ended on its own
    assert extra.cpu_time_ms is not None and 1000 < extra.cpu_time_ms < 3000
    killed = run(runner, "python", SPIN_1_2_S_PY, cpu_time_ms=1000, time_limit_ms=wall)
    assert killed.outcome is Outcome.TIME_LIMIT and killed.stdout == "", killed  # killed at 1 s
    within = run(runner, "python", SPIN_1_2_S_PY, cpu_time_ms=3000, time_limit_ms=wall)
    assert within.outcome is Outcome.OK and within.stdout == "done\n", within
    forever = run(runner, "python", "while True: pass", cpu_time_ms=500, cpu_extra_ms=500, time_limit_ms=wall)
    assert forever.outcome is Outcome.TIME_LIMIT and forever.signal is not None, forever
    # Killed after the extra time, not at 500 ms (RLIMIT_CPU's clock runs ahead of the cgroup's).
    assert forever.cpu_time_ms is not None and forever.cpu_time_ms >= 700


def test_open_files_limit(runner: Runner) -> None:
    src = """
fs = []
try:
    while len(fs) < 10000:
        fs.append(open('/dev/null'))
except OSError as e:
    print(len(fs), e.errno)
"""
    res = run(runner, "python", src, max_open_files=32)
    count, err = (int(x) for x in res.stdout.split())
    assert count < 32 and err == 24, res  # EMFILE


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_flood_is_output_limit(runner: Runner, stream: str) -> None:
    src = f"import sys\nwhile True: sys.{stream}.write('y' * 4096)"
    chunks: list[str] = []
    from livecode.sandbox import RunRequest, SandboxLimits

    res = runner.run(
        RunRequest("python", src, limits=SandboxLimits(max_output_bytes=10_000, time_limit_ms=60_000)),
        on_output=lambda s, t: chunks.append(t),
    )
    assert res.outcome is Outcome.OUTPUT_LIMIT, res
    assert getattr(res, f"{stream}_truncated") is True
    assert len(getattr(res, stream)) == 10_000
    assert sum(len(c) for c in chunks) <= 10_000
    assert res.wall_time_ms < 30_000  # killed on overflow, not at the 60 s wall limit
