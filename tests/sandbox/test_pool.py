"""Pre-built sandboxes: used once, limits of the request applied; and the path without a pool."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from livecode.sandbox import Outcome, Runner, get_runner
from livecode.sandbox.bwrap import BwrapRunner

from .helpers import TEST_SLOTS, TEST_UID_BASE, make_runner, no_leftovers, requires_bwrap, run

pytestmark = [requires_bwrap, pytest.mark.sandbox, pytest.mark.timeout(60)]


def wait_pool_ready(runner: BwrapRunner, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if runner._pool is not None and runner._pool.ready_count() > 0:
            return
        time.sleep(0.02)
    pytest.fail("the pool never produced a ready sandbox")


def test_pooled_sandbox_serves_one_run_each(pooled_runner: Runner) -> None:
    runner = pooled_runner
    assert isinstance(runner, BwrapRunner) and runner._pool is not None
    for _ in range(3):
        wait_pool_ready(runner)
        before = runner._pool.served
        res = run(
            runner, "bash", "touch /tmp/mark-$$; ls /tmp; cat /proc/sys/kernel/random/boot_id >/dev/null; echo $$"
        )
        assert res.outcome is Outcome.OK, res
        assert runner._pool.served == before + 1  # it really came from the pool
        assert res.stdout.count("mark-") == 1  # nothing from an earlier run
        assert int(res.stdout.split()[-1]) <= 3  # a fresh pid namespace each time


def test_pooled_sandbox_gets_request_limits(pooled_runner: Runner) -> None:
    runner = pooled_runner
    assert isinstance(runner, BwrapRunner)
    wait_pool_ready(runner)
    src = "import resource\nprint(resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_CPU))"
    res = run(runner, "python", src, max_open_files=40, cpu_time_ms=3000)
    assert res.stdout.strip() == "(40, 40) (3, 4)", res


@pytest.fixture(scope="module")
def pooled_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    r = make_runner(tmp_path_factory.mktemp("pooled"), 2)
    yield r
    r.close()


@pytest.fixture(scope="module")
def cold_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    r = make_runner(tmp_path_factory.mktemp("cold"), 0)
    yield r
    r.close()


def test_without_pool_hello_and_limits(cold_runner: Runner) -> None:
    res = run(cold_runner, "python", "print(input()[::-1])", stdin="abc\n")
    assert res.stdout == "cba\n"
    res = run(
        cold_runner,
        "python",
        "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
        max_processes=8,
        time_limit_ms=1500,
    )
    assert res.outcome is Outcome.TIME_LIMIT
    res = run(cold_runner, "python", "x = b'x' * (100 << 20)", memory_mb=48)
    assert res.outcome is Outcome.MEMORY_LIMIT
    assert no_leftovers()


def test_pooled_sandbox_can_get_more_memory_than_default(pooled_runner: Runner) -> None:
    runner = pooled_runner
    assert isinstance(runner, BwrapRunner)
    wait_pool_ready(runner)
    res = run(runner, "python", "x = b'x' * (300 << 20)\nprint(len(x) >> 20)", memory_mb=400)
    assert res.outcome is Outcome.OK and res.stdout == "300\n", res


def test_closing_the_pool_leaves_no_process_or_zombie(tmp_path: Path) -> None:
    from .test_cleanup import our_zombies

    tmp_path.chmod(0o700)
    r = get_runner(
        "bwrap",
        work_root=str(tmp_path / "work"),
        cache_dir=str(tmp_path / "cache"),
        uid_base=TEST_UID_BASE,
        slots=TEST_SLOTS,
        pool_size=2,
    )
    r.check()
    assert isinstance(r, BwrapRunner)
    wait_pool_ready(r)
    before = set(our_zombies())  # another test's leftovers are not this pool's
    assert run(r, "bash", "echo hi").stdout == "hi\n"
    r.close()
    end = time.monotonic() + 5
    while set(our_zombies()) - before and time.monotonic() < end:
        time.sleep(0.05)
    assert not set(our_zombies()) - before


def test_a_spare_sandbox_discarded_before_it_joined_its_cgroup_ends(tmp_path: Path) -> None:
    """Closing the pool right after it started a spare sandbox: the exec helper may not have joined
    the run's cgroup yet, so killing the cgroup misses it. The discard must still end it (it hung
    for ever in CI, waiting for a launcher that waited for its job)."""
    from .test_cleanup import our_zombies

    r = make_runner(tmp_path, 0)
    assert isinstance(r, BwrapRunner) and r._spawner is not None
    late = tmp_path / "late-spawner"
    late.write_text(f'#!/bin/sh\nsleep 1\nexec {r._spawner} "$@"\n')  # the real helper, a second late
    late.chmod(0o700)
    r._spawner = late
    before = set(our_zombies())  # another test's leftovers are not this sandbox's
    try:
        sp = r._prespawn((64, 1024))
        assert sp.cg.pids() == []  # not in its cgroup yet: what the cgroup kill cannot reach
        done = threading.Event()
        threading.Thread(target=lambda: (r._discard(sp), done.set()), daemon=True).start()
        assert done.wait(30), "discarding the spare sandbox hung"
        assert sp.proc.returncode is not None
        end = time.monotonic() + 5
        while set(our_zombies()) - before and time.monotonic() < end:
            time.sleep(0.05)
        assert not set(our_zombies()) - before
        assert no_leftovers()
    finally:
        r.close()


def test_a_run_cgroups_counters_are_read_and_reset_through_the_files_held_since_it_was_made(
    pooled_runner: Runner,
) -> None:
    """The cgroup files a run reads and resets are opened when its cgroup is made (off the request
    path); reading and resetting through them gives fresh figures, and they close with it."""
    import os
    import subprocess

    runner = pooled_runner
    assert isinstance(runner, BwrapRunner) and runner._cgroups is not None
    cg = runner._cgroups.create(TEST_SLOTS - 1)
    assert cg._held  # CPU, peak memory, OOM kills
    fds = cg.open_procs_fds()
    try:
        burn = "x = b'x' * (80 << 20)\nimport time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
        proc = subprocess.Popen(["python3", "-c", burn], preexec_fn=lambda: [os.write(fd, b"0") for fd in fds])
        assert proc.wait(30) == 0
        assert (cg.peak_kb() or 0) > 80 * 1024 and (cg.cpu_ms() or 0) >= 250
        assert not cg.oom_killed()
        cg.reset_counters()
        assert (cg.peak_kb() or 0) < 8 * 1024 and (cg.cpu_ms() or 0) < 50
    finally:
        for fd in fds:
            os.close(fd)
        assert cg.destroy() == []
    assert cg._held == {}  # closed with it
