"""Pre-built sandboxes: used once, limits of the request applied; and the path without a pool."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import pytest

from livecode.sandbox import Outcome, Runner, SandboxLimits, bwrap, get_runner
from livecode.sandbox.bwrap import BwrapRunner
from livecode.sandbox.runner import MB, Stage

from .helpers import TEST_SLOTS, TEST_UID_BASE, leftovers, make_runner, no_leftovers, requires_bwrap, run

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

    r = make_runner(tmp_path, 2)
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


# A compile stage's script: what it finds of an earlier stage (nothing, in a fresh sandbox), then
# litter for the next one: files in /tmp, the work dir and /dev/shm, and a process left running.
LITTER_SH = (
    "echo seen $(ls /tmp /dev/shm . | grep -c mark) sleeping $(cat /proc/[0-9]*/comm | grep -c sleep)\n"
    "touch /tmp/mark-$$ mark-$$ /dev/shm/mark-$$\n"
    "setsid sleep 60 </dev/null >/dev/null 2>&1 &\n"
)


def compile_stage(script: str, memory_mb: int = SandboxLimits().compile_memory_mb) -> Stage:
    """A compile stage running `script` (its output comes back as the compiler's, on stderr)."""
    limits = SandboxLimits()
    return Stage(
        "compile", ["/bin/sh", "-c", script], {"PATH": "/usr/bin:/bin"}, [], 20_000, 20_000, memory_mb,
        limits.compile_max_processes, 1024, limits.compile_max_disk_kb, 64, 1 << 20, 1 << 16,
    )  # fmt: skip


def wait_until(check: Callable[[], bool], what: str, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)


def test_a_compile_takes_a_sandbox_built_ahead_with_nothing_of_the_compile_before(pooled_runner: Runner) -> None:
    """The next compile's sandbox is set up before it is asked for (off the request path); it is
    still built empty for that one compile and destroyed after it."""
    runner = pooled_runner
    assert isinstance(runner, BwrapRunner) and runner._compile_pool is not None
    pool = runner._compile_pool
    for _ in range(2):
        wait_until(lambda: pool.ready_count() > 0, "a compile sandbox is ready")
        served = pool.served
        sr = runner._execute(compile_stage(LITTER_SH), None)
        assert pool.served == served + 1  # it ran in the sandbox built ahead
        assert sr.stderr.decode().splitlines()[0] == "seen 0 sleeping 0", sr
    assert no_leftovers(), leftovers()


def test_a_compile_sandbox_built_for_other_limits_is_destroyed(pooled_runner: Runner) -> None:
    """A compile with other limits (memory, disk) cannot use the one built ahead: it is destroyed
    (processes and cgroup), and the next one is built for the limits the compiles now use."""
    runner = pooled_runner
    assert isinstance(runner, BwrapRunner) and runner._compile_pool is not None
    pool = runner._compile_pool
    wait_until(lambda: pool.ready_count() > 0, "a compile sandbox is ready")
    old = pool._ready[0][2]
    sr = runner._execute(compile_stage("echo ok", memory_mb=old.cg.limits[0] // MB // 2), None)
    assert sr.stderr.startswith(b"ok\n"), sr
    wait_until(
        lambda: old.proc.poll() is not None and not any(d.exists() for d in old.cg.dirs.values()),
        "the sandbox built for the old limits is gone",
    )
    new_key = (old.cg.limits[0] // MB // 2, SandboxLimits().compile_max_disk_kb)
    wait_until(lambda: pool.ready_count(new_key) == 1, "one is built for the new limits")
    assert pool.ready_count() == 1


def test_sandboxes_built_for_runs_that_will_not_come_are_destroyed(pooled_runner: Runner) -> None:
    """Runs announced (an execution's tests) and then called off (its program did not compile, or
    its time budget ran out): the sandboxes built for them are destroyed, not kept for hours."""
    runner = pooled_runner
    assert isinstance(runner, BwrapRunner) and runner._pool is not None
    pool, limits = runner._pool, SandboxLimits()
    key = (limits.memory_mb, limits.max_disk_kb)
    runner.expect(limits, 6)
    pool.running()  # as a compile that started does
    wait_until(lambda: pool.ready_count(key) >= 5, "the announced runs' sandboxes are built")
    built = [sp for _, _, sp in pool._ready]
    runner.expect(limits, 0)
    assert pool.ready_count() <= pool._size
    gone = [sp for sp in built if all(sp is not kept for _, _, kept in pool._ready)]
    assert len(gone) >= 3
    wait_until(lambda: all(sp.proc.poll() is not None for sp in gone), "their processes ended")
    wait_until(lambda: not any(d.exists() for sp in gone for d in sp.cg.dirs.values()), "their cgroups are removed")


def test_sandboxes_built_ahead_take_only_free_slots(tmp_path: Path) -> None:
    """A sandbox for an announced run takes a free slot or none: it never waits for one (and so
    never takes one that frees up after its runs were called off), so the runs that build their
    own sandbox are not kept waiting by sandboxes built ahead; and never one of the reserved slots,
    which those runs find free however many runs are announced."""
    tmp_path.chmod(0o700)
    r = get_runner("bwrap", work_root=str(tmp_path / "work"), cache_dir=str(tmp_path / "cache"),
                   uid_base=TEST_UID_BASE + TEST_SLOTS + 4, slots=4, pool_size=1)  # fmt: skip
    try:
        r.check()
        assert isinstance(r, BwrapRunner) and r._pool is not None and r._compile_pool is not None
        pool, limits = r._pool, SandboxLimits()
        wait_until(lambda: pool.ready_count() == 1 and r._compile_pool.ready_count() == 1, "the spares are built")
        r.expect(limits, 4)
        pool.running()
        wait_until(lambda: pool.ready_count() == 2, "one is built ahead, in the last unreserved slot")
        time.sleep(0.3)
        assert pool.ready_count() == 2 and pool._failures == 0  # no slot: it waits, quietly
        assert r._slots is not None and r._slots.reserved() == 1
        slot = r._slots.acquire(0.0)  # a run that builds its own sandbox finds the reserved slot free
        assert slot == 3
        r._slots.release(slot, clean=True)
        r.expect(limits, 0)  # called off: the one built ahead is destroyed and its slot freed ...
        time.sleep(0.5)
        assert pool.ready_count() == 1  # ... and no build for the called-off runs takes it back
        res = run(r, "bash", "echo cold", memory_mb=100)  # other limits: it builds its own, in that slot
        assert res.outcome is Outcome.OK and res.stdout == "cold\n", res
    finally:
        r.close()
    assert no_leftovers(), leftovers()


def test_a_spare_built_at_low_priority_runs_its_program_at_normal_priority(pooled_runner: Runner) -> None:
    runner = pooled_runner
    assert isinstance(runner, BwrapRunner) and runner._pool is not None
    wait_pool_ready(runner)
    before = runner._pool.served
    res = run(runner, "python", "import os; print(os.nice(0))")
    assert res.outcome is Outcome.OK, res
    assert runner._pool.served == before + 1  # a spare, built at nice 10
    assert res.stdout.strip() == "0"


def test_a_spare_whose_launcher_is_up_is_reniced_without_a_walk_of_the_hosts_threads(
    pooled_runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """setpriority(PRIO_USER, slot uid) makes the kernel look at every thread of the host (~0.25 ms
    of the worker's CPU inside a run on a host with 1,200 threads): a spare whose launcher is up
    is reniced one setpriority(PRIO_PROCESS) per thread of its cgroup, and its program runs at
    nice 0."""
    runner = pooled_runner
    assert isinstance(runner, BwrapRunner) and runner._pool is not None
    run(runner, "python", "pass")  # the spares follow the last run's limits
    defaults = SandboxLimits()
    deadline = time.monotonic() + 20
    while runner._pool.ready_count((defaults.memory_mb, defaults.max_disk_kb)) == 0:
        assert time.monotonic() < deadline, "no spare built"
        time.sleep(0.02)
    for _, _, sp in list(runner._pool._ready):  # each spare's launcher is up
        assert bwrap._launcher_up(sp, 2 if sp.warm is not None else 1, 10.0)
    calls: list[tuple[int, int, int]] = []
    real = os.setpriority

    def setpriority(which: int, who: int, prio: int) -> None:
        calls.append((which, who, prio))
        real(which, who, prio)

    monkeypatch.setattr(os, "setpriority", setpriority)
    before = runner._pool.served
    res = run(runner, "python", "import os; print(os.nice(0))")
    assert res.outcome is Outcome.OK, res
    assert runner._pool.served == before + 1  # a spare, built at nice 10
    assert res.stdout.strip() == "0"
    assert calls, "the spare was not reniced"
    assert {(which, prio) for which, _, prio in calls} == {(os.PRIO_PROCESS, 0)}, calls


def test_a_runs_clean_up_looks_at_its_emptied_cgroup_once(
    pooled_runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once bubblewrap is reaped nothing can join the run's cgroup any more: the clean-up's kill
    that finds it empty is its last (each look reads cgroup.procs, ~0.07 ms inside a run), and
    the slot is released clean."""
    runner = pooled_runner
    assert isinstance(runner, BwrapRunner)
    futures.wait(list(runner._finishing), timeout=10)  # earlier runs' clean-ups are over
    kills: list[int | None] = []
    released: list[bool] = []
    real_kill, real_release = bwrap.RunCgroup.kill_all, runner._slots.release  # type: ignore[union-attr]

    def kill_all(cg: bwrap.RunCgroup, exclude_reap: int | None = None, timeout_s: float = 5.0) -> bool:
        if threading.current_thread().name.startswith("sandbox-cleanup"):
            kills.append(exclude_reap)
        return real_kill(cg, exclude_reap, timeout_s)

    def release(slot: int, clean: bool = False) -> None:
        if threading.current_thread().name.startswith("sandbox-cleanup"):
            released.append(clean)
        real_release(slot, clean)

    monkeypatch.setattr(bwrap.RunCgroup, "kill_all", kill_all)
    monkeypatch.setattr(runner._slots, "release", release)
    res = run(runner, "python", "print('hi')")
    assert res.outcome is Outcome.OK, res
    futures.wait(list(runner._finishing), timeout=10)
    assert released == [True]
    assert len(kills) == 1, kills


def test_a_spare_that_died_before_its_renice_is_given_up(
    pooled_runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread of the spare left to renice (ESRCH) when its launcher has said it is up: the
    sandbox is gone. The run gets a sandbox built for it, at normal priority."""
    runner = pooled_runner
    assert isinstance(runner, BwrapRunner) and runner._pool is not None
    wait_pool_ready(runner)
    real = os.setpriority

    def setpriority(which: int, who: int, prio: int) -> None:
        if who != 0:  # every thread of a spare: none of the worker's own
            raise ProcessLookupError(3, "No such process")
        real(which, who, prio)

    monkeypatch.setattr(os, "setpriority", setpriority)
    res = run(runner, "python", "import os; print(os.nice(0))")
    assert res.outcome is Outcome.OK, res
    assert res.stdout.strip() == "0"


def test_a_run_tells_the_pool_which_passed_over_spares_no_run_wants(pooled_runner: Runner) -> None:
    # bwrap._execute's side of pool.take's `stale`: after Python runs, a spare with no warm start
    # (a worker's first ones) is stale, a Python one is not; after a C run too, neither is.
    assert isinstance(pooled_runner, BwrapRunner) and pooled_runner._pool is not None
    pool = pooled_runner._pool
    pooled_runner._recent_warm.clear()  # the runs of the tests before (bash's: no warm start) forgotten
    calls: list[tuple[Callable[..., bool], object]] = []
    take = pool.take

    def recording(key: object, ahead: int = 0, prefer: object = None, stale: object = None) -> object:
        calls.append((stale, prefer))  # type: ignore[arg-type]
        return take(key, ahead, prefer, stale)  # type: ignore[arg-type]

    pool.take = recording  # type: ignore[method-assign]
    try:
        assert run(pooled_runner, "python", "print(1)").outcome == Outcome.OK
        assert run(pooled_runner, "python", "print(2)").outcome == Outcome.OK
        stale = calls[-1][0]
        py_warm = pooled_runner._last_warm((SandboxLimits().memory_mb, SandboxLimits().max_disk_kb))
        assert py_warm is not None, "python runs warm-start"

        class Spare:
            def __init__(self, warm: object) -> None:
                self.warm = warm

        assert stale(Spare(None)) and not stale(Spare(py_warm))
        assert run(pooled_runner, "c", '#include <stdio.h>\nint main(void){puts("3");}').outcome == Outcome.OK
        stale = [s for s, _ in calls if s is not None][-1]
        assert not stale(Spare(None)) and not stale(Spare(py_warm))  # a mix keeps both
    finally:
        pool.take = take  # type: ignore[method-assign]
