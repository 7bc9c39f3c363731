"""Entered warm starts (enter.py): a spare's Python is a copy of a template's started interpreter
that entered the spare's sandbox. It must have exactly the sandbox's protections (the attack
suite runs through such spares too: the session's runner has them), hold nothing of any other
run, and a template that fails must cost nothing but the spare's start-up."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from livecode.sandbox import Outcome, RunRequest, SandboxLimits, enter
from livecode.sandbox import bwrap as bwrap_module
from livecode.sandbox.bwrap import BwrapRunner

from .helpers import make_runner, no_leftovers, requires_bwrap

pytestmark = requires_bwrap


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BwrapRunner]:
    r = make_runner(tmp_path_factory.mktemp("enter"), 1)
    assert isinstance(r, BwrapRunner)
    try:
        yield r
    finally:
        r.close()


def _entered_run(r: BwrapRunner, source: str, stdin: str = "") -> tuple[str, str]:
    """A run served by a template's copy: (stdout, stderr)."""
    for _ in range(3):
        r.run(RunRequest("python", "pass"))  # the spares follow the last runs' program
    deadline = time.monotonic() + 15
    while not (r.warm_spares() and r.entered_spares):
        assert time.monotonic() < deadline, "no entered spare built"
        time.sleep(0.02)
    before = r.warm_runs
    res = r.run(RunRequest("python", source, stdin=stdin))
    assert r.warm_runs == before + 1, "the run did not take the spare's program"
    assert res.outcome is Outcome.OK, res
    return res.stdout, res.stderr


def _spare_and_templates(r: BwrapRunner) -> list[enter.Template]:
    """After an entered run, until a warm spare (a template's copy) is ready: the live templates."""
    _entered_run(r, "pass")
    deadline = time.monotonic() + 15
    while not (r.warm_spares() and r._templates is not None and r._templates.live()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert r._templates is not None
    return r._templates.live()


# What an attacker tries first, from inside a template's copy.
ATTACKS = r"""
import ctypes, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
out = {}
def attempt(name, fn):
    try:
        out[name] = ["allowed", repr(fn())]
    except OSError as e:
        out[name] = ["refused", e.errno]
attempt("inet socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
attempt("inet6 socket", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
attempt("setuid 0", lambda: os.setuid(0))
attempt("read /proc/1/environ", lambda: open("/proc/1/environ", "rb").read())
attempt("write /usr", lambda: open("/usr/evil", "w"))
def call(name, *args):
    rc = getattr(libc, name)(*args)
    if rc != 0:
        raise OSError(ctypes.get_errno(), name)
    return rc
attempt("unshare(user)", lambda: call("unshare", 0x10000000))
attempt("unshare(mount)", lambda: call("unshare", 0x00020000))
attempt("setns to pid 1's mount namespace", lambda: call("setns", os.open("/proc/1/ns/mnt", os.O_RDONLY), 0))
attempt("ptrace attach to pid 1", lambda: call("ptrace", 16, 1, None, None))
attempt("mount tmpfs", lambda: call("mount", b"none", b"/tmp", b"tmpfs", 0, None))
attempt("chroot", lambda: call("chroot", b"/tmp"))
os.kill(1, 9)  # ignored: the launcher is the namespace's init
out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
out["fds"] = sorted(os.listdir("/proc/self/fd"))
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
out["caps"] = [status[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")]
out["nnp"], out["seccomp"] = status["NoNewPrivs"], status["Seccomp"]
out["ids"] = [os.getresuid(), os.getresgid(), os.getgroups()]
out["root"] = sorted(os.listdir("/"))
out["session"] = [os.getsid(0), os.getpgrp(), os.getpid()]
import sys
outer = sys._getframe().f_back
out["outer frame"] = outer.f_code.co_filename if outer else None
attempt("open /dev/tty", lambda: open("/dev/tty", "rb"))
print(json.dumps(out))
"""


def test_a_template_copy_has_the_sandboxs_protections(runner: BwrapRunner) -> None:
    stdout, _ = _entered_run(runner, ATTACKS)
    seen = json.loads(stdout)
    for name in ("inet socket", "inet6 socket", "setuid 0", "read /proc/1/environ", "write /usr", "unshare(user)",
                 "unshare(mount)", "setns to pid 1's mount namespace", "ptrace attach to pid 1", "mount tmpfs",
                 "chroot"):
        assert seen[name][0] == "refused", (name, seen[name])
    assert seen["caps"] == ["0000000000000000"] * 5
    assert seen["nnp"] == "1" and seen["seccomp"] == "2"
    assert seen["ids"] == [[1000, 1000, 1000], [1000, 1000, 1000], []]  # the sandbox's uid, no groups
    assert seen["pids"] == [1, 2]  # the launcher and itself: nothing of the template
    assert seen["fds"] == ["0", "1", "2", "3"]  # stdio and the listing's own
    assert "sandbox" in seen["root"] and "root" not in seen["root"]
    # A session and process group of its own (bubblewrap's --new-session for a cold start): not
    # the worker's, whose terminal it could otherwise type into (TIOCSTI) or whose group signal.
    sid, pgrp, pid = seen["session"]
    assert sid == pgrp == pid
    assert seen["open /dev/tty"][0] == "refused"
    # The template's frame below the program's names no path of the host (its cache directory).
    assert seen["outer frame"] == "/tmp/main.py"


SECRET_RUN = "secret_in_source = 'zq' + 'RUN-A-SOURCE-7f3c'\nprint(input())\n"
# Patterns that match the secrets without holding them (a character class breaks each up), so
# that nothing of the scan itself is found.
SCAN = r"""
import re
wanted = [re.compile(rb"R[U]N-A-SOURCE-7f3c"), re.compile(rb"R[U]N-A-STDIN-9e2b")]
found = []
with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
    for line in maps:
        addr, perms = line.split()[:2]
        if not perms.startswith("r") or "[vvar]" in line or "[vsyscall]" in line:
            continue
        start, end = (int(x, 16) for x in addr.split("-"))
        try:
            mem.seek(start)
            chunk = mem.read(end - start)
        except OSError:
            continue
        found += [w.pattern.decode() for w in wanted if w.search(chunk)]
print(sorted(set(found)))
"""


def test_a_template_copy_holds_nothing_of_an_earlier_run(runner: BwrapRunner) -> None:
    # Run A (a copy) gets its secrets as source and stdin; run B, the next copy of the same
    # template, reads its whole address space: none of A's data may be there, since only
    # descriptors and namespaces pass through the template.
    stdout, _ = _entered_run(runner, SECRET_RUN, stdin="RUN-A-STDIN-9e2b\n")
    assert stdout == "RUN-A-STDIN-9e2b\n"
    stdout, _ = _entered_run(runner, SCAN)
    assert stdout == "[]\n"


def test_a_failing_template_leaves_spares_started_by_the_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> tuple[int, int]:
        raise enter.EnterError("refused for the test")

    monkeypatch.setattr(enter.Template, "enter", refuse)
    r = make_runner(tmp_path, 1)
    assert isinstance(r, BwrapRunner)
    try:
        for _ in range(3):
            r.run(RunRequest("python", "pass"))
        deadline = time.monotonic() + 15
        while not r.warm_spares():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        before = r.warm_runs
        res = r.run(RunRequest("python", "print('still warm')"))
        assert res.outcome is Outcome.OK and res.stdout == "still warm\n", res
        assert r.warm_runs == before + 1 and r.entered_spares == 0
    finally:
        r.close()


def test_a_template_is_replaced_after_its_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The copies of one template share its hash seed and address-space layout: a template
    # serves a bounded number of spares, then a new one (a new seed) starts.
    monkeypatch.setattr(enter, "_USES", 2)
    r = make_runner(tmp_path, 1)
    assert isinstance(r, BwrapRunner)
    try:
        seeds = set()
        for _ in range(5):
            stdout, _ = _entered_run(r, "print(hash('livecode'))")
            seeds.add(stdout)
        assert len(seeds) >= 2
    finally:
        r.close()


def test_a_template_is_replaced_when_the_site_hooks_change(tmp_path: Path) -> None:
    # A template's start-up read Python's site hooks as they were (pysite.py); once the host's
    # change (a package installed), a cold start reads the new ones, and so must a copy's template.
    r = make_runner(tmp_path, 1)
    assert isinstance(r, BwrapRunner)
    try:
        first = {t.pid for t in _spare_and_templates(r)}
        hooks = r._site_hooks.files()
        if not hooks:
            pth = Path("/usr/lib/python3/dist-packages/distutils-precedence.pth")
            if not pth.is_file():
                pytest.skip("no site hook to change on this host")
            hooks = [(str(pth), pth.read_bytes())]
        changed = [(path, data + b"\n") for path, data in hooks]  # the same hooks, new bytes
        r._site_hooks.files = lambda: changed  # type: ignore[method-assign]
        stdout, _ = _entered_run(r, "print('entered')")
        assert stdout == "entered\n"
        assert r._templates is not None
        now = {t.pid for t in r._templates.live()}
        assert now and not now & first, (first, now)
        assert all(t.view_of[1] == tuple(changed) for t in r._templates.live())
    finally:
        r.close()
    assert no_leftovers()


def test_a_template_that_died_leaves_its_spares_to_the_launcher(tmp_path: Path) -> None:
    # Its copies would have no parent to report their exit status: a run that takes one has the
    # launcher start its program, and the copy (now the worker's) is reaped with the sandbox.
    r = make_runner(tmp_path, 1)
    assert isinstance(r, BwrapRunner)
    try:
        templates = _spare_and_templates(r)
        for t in templates:
            os.kill(t.pid, signal.SIGKILL)  # the template itself (bubblewrap, its parent, then exits)
        deadline = time.monotonic() + 5
        while r._templates.live():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        res = r.run(RunRequest("python", "print('served')"))
        assert res.outcome is Outcome.OK and res.stdout == "served\n", res
        stdout, _ = _entered_run(r, "print('entered again')")  # a new template
        assert stdout == "entered again\n"
    finally:
        r.close()
    assert no_leftovers()


def test_a_worker_ignoring_sigint_does_not_pass_it_on(tmp_path: Path) -> None:
    # A worker started in the background (nohup, `&`) ignores SIGINT; a program must still see a
    # user's Ctrl-C, as the launcher's programs do (it resets every signal before exec).
    probe = "print(open('/proc/self/status').read().split('SigIgn:')[1].split()[0])"
    (tmp_path / "entered").mkdir()
    (tmp_path / "cold").mkdir()
    r = make_runner(tmp_path / "entered", 1)
    cold = make_runner(tmp_path / "cold", 0)
    assert isinstance(r, BwrapRunner)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # the template starts with the first spare built for a Python run: now
        stdout, _ = _entered_run(r, probe)
        cold_stdout = cold.run(RunRequest("python", probe)).stdout
    finally:
        signal.signal(signal.SIGINT, before)
        r.close()
        cold.close()
    assert stdout == cold_stdout
    assert int(stdout, 16) & (1 << (signal.SIGINT - 1)) == 0


def test_a_run_whose_template_dies_ends_at_once(tmp_path: Path) -> None:
    # Its exit status would have come from the template: the result pipe closes with none, and
    # the run ends then (the program dies with its parent), not at its wall time limit.
    r = make_runner(tmp_path, 1)
    assert isinstance(r, BwrapRunner)
    try:
        templates = _spare_and_templates(r)

        def kill_soon() -> None:
            time.sleep(0.5)
            for t in templates:
                os.kill(t.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_soon)
        killer.start()
        t0 = time.monotonic()
        res = r.run(RunRequest("python", "import time\nprint('started', flush=True)\ntime.sleep(30)",
                               limits=SandboxLimits(time_limit_ms=30000)))
        killer.join()
        assert time.monotonic() - t0 < 10, res
        assert res.outcome is Outcome.INTERNAL_ERROR, res
        assert "without the program's exit status" in res.message, res  # not a set-up failure
    finally:
        r.close()
    assert no_leftovers()


def test_a_source_with_a_nul_byte_starts_cold(runner: BwrapRunner) -> None:
    # The interpreter reading a script and compile() of its bytes treat one differently (the
    # first runs what comes before it): such a source gets the interpreter's own start.
    _entered_run(runner, "pass")
    before = runner.warm_runs
    res = runner.run(RunRequest("python", "print('a')\n\0\n"))
    assert runner.warm_runs == before
    assert res.outcome is Outcome.OK and res.stdout == "a\n", res


def test_a_copy_slow_to_come_up_holds_up_no_other(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One spare's copy stuck in its set-up (here: writing to a full pipe given as its cgroup file)
    # costs that spare only: the template answers the next request meanwhile.
    monkeypatch.setattr(enter, "_ANSWER_S", 1.0)
    r = make_runner(tmp_path, 1)
    assert isinstance(r, BwrapRunner)
    full_r, full_w = os.pipe()
    os.set_blocking(full_w, False)
    while True:
        try:
            os.write(full_w, b"x" * 65536)
        except BlockingIOError:
            break
    os.set_blocking(full_w, True)
    try:
        _entered_run(r, "pass")
        key = (SandboxLimits().memory_mb, SandboxLimits().max_disk_kb)
        warm = r._last_warm(key)
        assert warm is not None and r._templates is not None
        assert r._pool is not None
        deadline = time.monotonic() + 15
        while not r._pool.ready_count():  # the filler idle from here on: no request of its own
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # The runner's own template (its view: a template for another view would be a new one).
        (view,) = {t.view_of for t in r._templates.live()}
        stuck = r._prespawn(key)
        try:
            pid1 = bwrap_module._pid1(stuck)
            pipes = [os.open(os.devnull, os.O_RDWR) for _ in range(4)]
            with pytest.raises(enter.EnterError), r._templates.serving(warm, *view) as template:
                template.enter(pid1, 1000, 10, "main.py", "/sandbox/work", [full_w], pipes, [])
            for fd in pipes:
                os.close(fd)
            # Kept (one slow copy is the host's load, not the template's fault), but a run's own
            # path does not wait on it until it has answered again.
            assert template in r._templates.live()
            with pytest.raises(enter.EnterBusy), r._templates.serving(warm, *view, wait=False):
                pass
            # It answers another request, its first copy still stuck.
            other = r._prespawn(key)
            try:
                other_pid1 = bwrap_module._pid1(other)
                pipes = [os.open(os.devnull, os.O_RDWR) for _ in range(4)]
                procs = other.cg.open_procs_fds()
                try:
                    with r._templates.serving(warm, *view) as same:
                        assert same is template
                        _, pidfd = same.enter(other_pid1, 1000, 10, "main.py", "/sandbox/work", procs, pipes, [])
                    os.close(pidfd)
                finally:
                    for fd in [*pipes, *procs]:
                        os.close(fd)
            finally:
                r._discard(other)
        finally:
            r._discard(stuck)
    finally:
        os.close(full_r)
        os.close(full_w)
        r.close()
    assert no_leftovers()


def test_the_template_holds_only_the_capabilities_entering_needs(runner: BwrapRunner) -> None:
    # Root on the host, it never runs a user's code; still, only what entering a sandbox takes,
    # in every set (bubblewrap run as root keeps them all unless told to drop them).
    templates = _spare_and_templates(runner)
    keep = sum(1 << cap for cap in (6, 18, 19, 21))  # SETGID, SYS_CHROOT, SYS_PTRACE, SYS_ADMIN
    for t in templates:
        with open(f"/proc/{t.pid}/status") as f:
            status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
        for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[name], 16) & ~keep == 0, (name, status[name])
        assert int(status["CapEff"], 16) == keep


@pytest.mark.parametrize("worker_nice", [0, 5])
def test_a_run_that_finds_no_spare_ready_gets_a_copy_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker_nice: int
) -> None:
    # Runs back to back on every slot take the spares faster than they are built: a run that
    # builds its own sandbox has a template's copy entered into it (no interpreter start-up on
    # its path), when a template is up and free; the launcher starts the interpreter otherwise.
    # Also from a worker started at a nice value (its threads, the template's parent, inherit it):
    # a copy, without capabilities, could not lower its priority to a run's.
    os.setpriority(os.PRIO_PROCESS, 0, worker_nice)  # this thread: the runner's threads inherit it
    try:
        r = make_runner(tmp_path, 1)
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    assert isinstance(r, BwrapRunner)
    try:
        _entered_run(r, "pass")  # a template is up
        assert r._pool is not None
        monkeypatch.setattr(r._pool, "take", lambda *args, **kwargs: None)  # no spare ready, ever
        deadline = time.monotonic() + 15
        while not (r.warm_spares() and r._pool.ready_count()):  # the filler done: the template free
            assert time.monotonic() < deadline
            time.sleep(0.02)
        probe = "import os, sys\nprint(os.getppid(), sys.argv, __file__)\n"
        for _ in range(3):
            res = r.run(RunRequest("python", probe))
            assert res.stdout == "0 ['main.py'] /sandbox/work/main.py\n", res  # a copy's parent is outside
        templates = r._templates
        assert templates is not None
        (view,) = {t.view_of for t in templates.live()}  # the runs' template, held busy below
        with templates.serving(r._last_warm((SandboxLimits().memory_mb, SandboxLimits().max_disk_kb)), *view):
            res = r.run(RunRequest("python", probe))  # the template busy: the launcher starts it
        assert res.stdout == "1 ['main.py'] /sandbox/work/main.py\n", res
    finally:
        r.close()
    assert no_leftovers()
