"""Nothing survives a run, and nothing the program planted is followed by the runner."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from livecode.sandbox import Outcome, Runner, RunRequest

from .helpers import TEST_SLOTS, TEST_UID_BASE, host_uids_of_cmdline, leftovers, no_leftovers, requires_bwrap, run

pytestmark = [requires_bwrap, pytest.mark.sandbox, pytest.mark.timeout(60)]

ESCAPE = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
if os.fork() == 0:            # double fork + setsid: a classic daemon
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for fd in (0, 1, 2):
            os.close(fd)
        while True:
            try:
                open('/tmp/still-alive', 'w').write(str(time.time()))
            except OSError:
                pass
            time.sleep(0.05)
    os._exit(0)
if os.fork() == 0:            # a plain child that keeps stdout open and ignores SIGTERM
    while True:
        time.sleep(1)
print('parent done', flush=True)
if sys.argv[1:] == ['hang']:
    time.sleep(60)
"""


def test_daemons_gone_after_normal_exit(runner: Runner) -> None:
    start = time.monotonic()
    res = run(runner, "python", ESCAPE, time_limit_ms=60_000)
    assert res.outcome is Outcome.OK, res
    assert "parent done" in res.stdout
    assert time.monotonic() - start < 30  # the child holding stdout did not make us wait 60 s
    assert no_leftovers(), leftovers()


def test_daemons_gone_after_timeout(runner: Runner) -> None:
    res = run(runner, "python", ESCAPE, args=("hang",), time_limit_ms=1000)
    assert res.outcome is Outcome.TIME_LIMIT, res
    assert no_leftovers(), leftovers()


def test_bash_background_and_nohup_gone(runner: Runner) -> None:
    src = "nohup sleep 100 >/dev/null 2>&1 &\nsetsid sleep 100 &\n(trap '' TERM; sleep 100) &\necho started"
    res = run(runner, "bash", src)
    assert res.stdout.strip() == "started"
    assert no_leftovers()


def our_zombies() -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "Z" and f"\nPPid:\t{os.getpid()}\n" in status:
            found.append(stat[: stat.index(")") + 1])
    return found


def test_no_zombies_accumulate(runner: Runner) -> None:
    before = set(our_zombies())  # another test's leftovers (an API process it killed) are not the runs'
    for _ in range(5):
        assert run(runner, "bash", "true").outcome is Outcome.OK
    # A run's clean-up (kill, reap, cgroup removal) finishes in the background after it returns:
    # on a host at load 10 the last one took over 5 s once. A zombie that is never reaped still fails.
    end = time.monotonic() + 20
    while set(our_zombies()) - before and time.monotonic() < end:
        time.sleep(0.05)
    assert not set(our_zombies()) - before


def test_planted_symlinks_not_followed(runner: Runner, tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("original")
    canary.chmod(0o600)
    before = canary.stat()
    shadow_before = os.stat("/etc/shadow")
    names = ["main.py", "main", "compile_output.txt", "passwd", "..", "x"]
    src = (
        "\n".join(
            f"ln -sfn {target} {name} 2>/dev/null; ln -sfn {target} /tmp/{name} 2>/dev/null"
            for name in names
            for target in (canary, "/etc/shadow")
        )
        + "\nls -la . /tmp | head -50\necho planted"
    )
    res = run(runner, "bash", src)
    assert "planted" in res.stdout
    after = canary.stat()
    assert canary.read_text() == "original"
    assert (after.st_uid, after.st_gid, after.st_mode, after.st_mtime_ns) == (
        before.st_uid,
        before.st_gid,
        before.st_mode,
        before.st_mtime_ns,
    )
    sh = os.stat("/etc/shadow")
    assert (sh.st_uid, sh.st_mode, sh.st_mtime_ns) == (
        shadow_before.st_uid,
        shadow_before.st_mode,
        shadow_before.st_mtime_ns,
    )


def test_concurrent_runs_get_distinct_host_uids(runner: Runner) -> None:
    seen: dict[str, set[int]] = {}
    lock = threading.Lock()
    results = []

    def one(token: str) -> None:
        def on_output(stream: str, text: str) -> None:
            if "up" in text:  # running now (and waiting for us): look it up by its argument
                with lock:
                    seen[token] = host_uids_of_cmdline(token)

        def stdin_source() -> bytes | None:
            return b"go\n" if released.is_set() else None

        req = RunRequest("bash", "echo up; read -r x", args=(token,))
        results.append(runner.run(req, on_output=on_output, stdin_source=stdin_source))

    released = threading.Event()

    tokens = [f"tok-{uuid.uuid4()}" for _ in range(3)]
    threads = [threading.Thread(target=one, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(seen) < 3 and time.monotonic() < deadline:  # all three alive at once
        time.sleep(0.02)
    released.set()
    for t in threads:
        t.join(30)
    assert [r.outcome for r in results] == [Outcome.OK] * 3
    assert all(len(seen[t]) == 1 for t in tokens), seen  # one uid per run...
    uids = {next(iter(seen[t])) for t in tokens}
    assert len(uids) == 3, seen  # ...a different one for each concurrent run
    assert all(TEST_UID_BASE <= u < TEST_UID_BASE + TEST_SLOTS for u in uids)
    assert no_leftovers()


def test_a_run_cgroup_still_busy_at_clean_up_is_removed_later(runner: Runner) -> None:
    """A run's cgroup the kernel still holds busy when the clean-up gives up (its last process
    being released on a loaded host) is removed in the background once it can be, not leaked."""
    import subprocess

    from livecode.sandbox.bwrap import BwrapRunner

    assert isinstance(runner, BwrapRunner) and runner._cgroups is not None and runner._slots is not None
    slot = runner._slots.acquire()
    try:
        cg = runner._cgroups.create(slot)
        stuck = subprocess.Popen(["sleep", "600"])
        try:
            for d in cg.dirs.values():
                (d / "cgroup.procs").write_text(str(stuck.pid))
            busy = cg.destroy()  # a process is still in it: the kernel refuses (EBUSY)
            assert busy and all(d.exists() for d in busy)
            runner._orphans.add_cgroups(busy)
            time.sleep(0.5)
            assert all(d.exists() for d in busy)  # retried, still busy: kept
        finally:
            stuck.kill()
            stuck.wait()
        end = time.monotonic() + 10
        while any(d.exists() for d in busy) and time.monotonic() < end:
            time.sleep(0.05)
        assert not any(d.exists() for d in busy)
    finally:
        runner._slots.release(slot)
