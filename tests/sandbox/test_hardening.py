"""Issue 9: a run cannot forge its result, see host details in /proc, or take the host's ptys;
and a compiled program of any number of files runs from the cache."""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Iterator

import pytest

from livecode.sandbox import Outcome, Runner, RunRequest, SandboxLimits
from livecode.sandbox.bwrap import BwrapRunner

from .helpers import TIME_FACTOR, no_leftovers, requires_bwrap, run

pytestmark = [requires_bwrap, pytest.mark.sandbox, pytest.mark.timeout(180)]


def wait_spare(runner: BwrapRunner, key: tuple[int, int], deadline_s: float = 30.0) -> None:
    """Wait for a pre-built sandbox for runs with these (memory_mb, max_disk_kb)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert runner._pool is not None
        if runner._pool.ready_count(key):
            return
        run(runner, "bash", "true")  # a run with the default limits: the pool builds for those
        time.sleep(0.1)
    pytest.fail(f"no pre-built sandbox for {key}")


@contextlib.contextmanager
def without_pool(runner: Runner) -> Iterator[Runner]:
    """As when no spare sandbox is ready: the run builds its own (like compile stages)."""
    assert isinstance(runner, BwrapRunner)
    pool, runner._pool = runner._pool, None
    try:
        yield runner
    finally:
        runner._pool = pool


@pytest.fixture(params=["pooled", "cold"])
def any_path(request: pytest.FixtureRequest, runner: Runner) -> Iterator[Runner]:
    """The session's runner, once through a pre-built sandbox and once through the path that
    builds a sandbox for the run."""
    if request.param == "pooled":
        yield runner
        return
    with without_pool(runner):
        yield runner


@pytest.fixture(params=["pooled", "cold", "cold-unfiltered"])
def attack_path(request: pytest.FixtureRequest, runner: Runner) -> Iterator[Runner]:
    """any_path, plus a sandbox without the seccomp filter: the launcher's defences must hold
    on their own (the filter refuses ptrace and pidfd_getfd, which these attacks use)."""
    assert isinstance(runner, BwrapRunner)
    if request.param == "pooled":
        yield runner
        return
    with without_pool(runner):
        if request.param == "cold":
            yield runner
            return
        bpf, runner._seccomp = runner._seccomp, None
        try:
            yield runner
        finally:
            runner._seccomp = bpf


# -- item 7: the reported outcome is the truth ---------------------------------------------------

PTRACE_TRACEME = r"""
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
static void on_usr1(int sig) { (void)sig; }
int main(void) {
    signal(SIGUSR1, on_usr1);
    /* Make our parent our tracer, then stop: the parent's waitpid sees a ptrace-stop, not an exit. */
    long traced = ptrace(PTRACE_TRACEME, 0, 0, 0);
    raise(SIGUSR1);
    printf("traced=%ld still running\n", traced);
    fflush(stdout);
    volatile int *p = 0;
    *p = 1;
    return 0;
}
"""


def test_ptrace_traceme_cannot_forge_a_clean_exit(attack_path: Runner) -> None:
    res = run(attack_path, "c", PTRACE_TRACEME, time_limit_ms=10_000)
    assert "still running" in res.stdout, res
    if isinstance(attack_path, BwrapRunner) and attack_path._seccomp is None:
        assert "traced=0" in res.stdout, res  # the launcher really was its tracer
    assert res.outcome is Outcome.RUNTIME_ERROR, res
    assert res.signal == 11 and res.exit_code is None, res
    assert no_leftovers()


PID1_EVENTFD = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    int forged = 0;
    char cmd[256] = {0};
    int c = open("/proc/1/cmdline", O_RDONLY);
    if (c >= 0) {
        ssize_t n = read(c, cmd, sizeof cmd - 1);
        for (ssize_t i = 0; i < n; i++) if (!cmd[i]) cmd[i] = ' ';
        close(c);
    }
    printf("pid1=[%s]\n", cmd);
    fflush(stdout);
    int pidfd = (int)syscall(SYS_pidfd_open, 1, 0);
    DIR *d = opendir("/proc/1/fd");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[300], target[128];
        snprintf(path, sizeof path, "/proc/1/fd/%s", e->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = 0;
        if (!strstr(target, "eventfd")) continue;
        /* Take pid 1's eventfd (same uid), or reopen it through /proc. */
        int fd = (int)syscall(SYS_pidfd_getfd, pidfd, atoi(e->d_name), 0);
        if (fd < 0) fd = open(path, O_WRONLY);
        if (fd < 0) continue;
        uint64_t status_plus_one = 1; /* bubblewrap's monitor reads exit status + 1: "exit 0" */
        if (write(fd, &status_plus_one, sizeof status_plus_one) == 8) forged++;
        close(fd);
    }
    printf("forged=%d\n", forged);
    fflush(stdout);
    usleep(700 * 1000);
    volatile int *p = 0;
    *p = 1;
    return 0;
}
"""


def test_pid1_eventfd_cannot_forge_the_exit_status(attack_path: Runner) -> None:
    res = run(attack_path, "c", PID1_EVENTFD, time_limit_ms=10_000)
    assert res.outcome is Outcome.RUNTIME_ERROR and res.signal == 11, res
    assert "forged=0" in res.stdout, res
    assert "bwrap" not in res.stdout and "--unshare" not in res.stdout, res  # pid 1 is not bubblewrap


def test_pid1_ignores_the_programs_signals(any_path: Runner) -> None:
    src = "kill -KILL 1; kill -STOP 1; kill -TERM 1; sleep 0.3; echo alive; exit 3"
    res = run(any_path, "bash", src)
    assert res.stdout == "alive\n", res
    assert res.outcome is Outcome.RUNTIME_ERROR and res.exit_code == 3, res


def test_exact_status_on_every_path(any_path: Runner) -> None:
    # An exit status above 128 is the program's own, not a signal (bwrap used to report 128+N).
    res = run(any_path, "bash", "exit 137")
    assert res.exit_code == 137 and res.signal is None, res
    res = run(any_path, "bash", "kill -SEGV $$")
    assert res.signal == 11 and res.exit_code is None, res


def test_orphans_are_reaped_by_pid_1(any_path: Runner) -> None:
    src = "for i in 1 2 3; do (sleep 0.1 &); done; sleep 0.6; grep -l '^State:.*zombie' /proc/[0-9]*/status; echo done"
    res = run(any_path, "bash", src)
    assert res.stdout == "done\n", res  # no zombie left by the double-forked sleeps


def test_a_sandbox_that_cannot_be_set_up_is_an_internal_error(runner: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(runner, BwrapRunner)
    argv = runner._argv
    monkeypatch.setattr(runner, "_argv", lambda *a, **k: [*argv(*a, **k)[:1], "--no-such-option", *argv(*a, **k)[1:]])
    with without_pool(runner):
        res = run(runner, "bash", "echo hi")
    assert res.outcome is Outcome.INTERNAL_ERROR and "--no-such-option" in res.message, res
    assert res.exit_code is None and res.signal is None and res.stdout == ""


# -- item 8: host details in /proc ---------------------------------------------------------------

PROC_PROBE = r"""
import os, sys
def read(p):
    try:
        with open(p, 'rb') as f:
            return f.read(4096).decode('utf-8', 'replace')
    except OSError as e:
        return 'ERR ' + type(e).__name__
def listing(p):
    try:
        return ' '.join(sorted(os.listdir(p)))
    except OSError as e:
        return 'ERR ' + type(e).__name__
out = {}
for name in sys.argv[1:]:
    out[name] = listing(name) if name.endswith('/') else read(name)
out['cpu_count'] = os.cpu_count()
print(repr(out))
"""

HIDDEN_FILES = [
    "/proc/sys/kernel/random/boot_id",
    "/proc/config.gz",
    "/proc/cmdline",
    "/proc/diskstats",
    "/proc/partitions",
    "/proc/swaps",
    "/proc/interrupts",
    "/proc/locks",
    "/proc/key-users",
]
HIDDEN_DIRS = ["/proc/bus/", "/proc/pressure/", "/proc/fs/"]


def _host(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def test_host_details_in_proc_are_hidden(any_path: Runner) -> None:
    names = [*HIDDEN_FILES, *HIDDEN_DIRS, "/proc/meminfo", "/proc/loadavg", "/proc/stat", "/proc/1/cmdline"]
    res = run(any_path, "python", PROC_PROBE, args=tuple(names), memory_mb=200)
    assert res.outcome is Outcome.OK, res
    seen = eval(res.stdout)  # noqa: S307 - our own repr() from the probe above
    for name in HIDDEN_FILES:
        if os.path.exists(name):
            assert seen[name] in ("", "ERR FileNotFoundError", "ERR PermissionError"), (name, seen[name][:200])
    for name in HIDDEN_DIRS:
        assert seen[name] in ("", "ERR FileNotFoundError", "ERR PermissionError"), (name, seen[name][:200])
    assert _host("/proc/sys/kernel/random/boot_id").strip() not in res.stdout
    # Memory: the run's own limit, not the host's.
    total = re.search(r"MemTotal:\s+(\d+) kB", seen["/proc/meminfo"])
    assert total and int(total.group(1)) == 200 * 1024, seen["/proc/meminfo"]
    host_total = re.search(r"MemTotal:\s+(\d+) kB", _host("/proc/meminfo"))
    assert host_total and host_total.group(1) not in seen["/proc/meminfo"]
    # Host-wide load and CPU counters are not the host's; what runtimes need of them stays.
    assert seen["/proc/loadavg"].split()[:3] == ["0.00", "0.00", "0.00"], seen["/proc/loadavg"]
    assert re.search(r"^ctxt 0$", seen["/proc/stat"], re.M), seen["/proc/stat"]
    assert seen["cpu_count"] == os.cpu_count()
    # pid 1 is the launcher, not bubblewrap with its whole command line.
    assert "bwrap" not in seen["/proc/1/cmdline"] and "--" not in seen["/proc/1/cmdline"], seen["/proc/1/cmdline"]


def test_meminfo_follows_the_requests_limit(runner: Runner) -> None:
    src = "import re\nprint(re.search(r'MemTotal:\\s+(\\d+)', open('/proc/meminfo').read()).group(1))"
    for memory_mb in (96, 300, 96):
        res = run(runner, "python", src, memory_mb=memory_mb)
        assert res.stdout.strip() == str(memory_mb * 1024), (memory_mb, res)


def test_the_pool_follows_the_limits_runs_ask_for(runner: Runner) -> None:
    """A spare sandbox's meminfo and tmpfs are fixed when it is built: the pool builds spares
    for the limits of the latest runs, so a deployment's own defaults still get pre-built ones."""
    assert isinstance(runner, BwrapRunner) and runner._pool is not None
    limits = {"memory_mb": 320, "max_disk_kb": 32 * 1024}
    run(runner, "bash", "true", **limits)
    end = time.monotonic() + 30 * TIME_FACTOR
    while not runner._pool.ready_count((320, 32 * 1024)) and time.monotonic() < end:
        time.sleep(0.05)
    served = runner._pool.served
    res = run(runner, "bash", "grep MemTotal /proc/meminfo; df -k /tmp | tail -1", **limits)
    assert runner._pool.served == served + 1, res
    assert res.stdout.split()[1] == str(320 * 1024) and res.stdout.split()[4] == str(32 * 1024), res


def test_node_heap_can_use_the_runs_memory_limit(runner: Runner) -> None:
    # Node sizes its heap from /proc/meminfo (now the run's limit) to a quarter of it; the run's
    # NODE_OPTIONS let it use the whole limit as before.
    src = (
        "const a = [];\nfor (let mb = 0; mb < 300; mb++) a.push(new Array(1 << 17).fill(mb));\n"
        "console.log(a.length, require('os').totalmem() >> 20);"
    )
    res = run(runner, "javascript", src, memory_mb=480, time_limit_ms=30_000, cpu_time_ms=30_000)
    assert res.outcome is Outcome.OK and res.stdout == "300 480\n", res


# -- item 2 (ptys): a run cannot take the host's devpts pool -------------------------------------

PTY_GRAB = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(void) {
    int a = open("/dev/ptmx", O_RDWR | O_NOCTTY);
    int b = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY);
    int c = posix_openpt(O_RDWR | O_NOCTTY);
    int opened = 0;
    for (int i = 0; i < 200; i++) {
        if (posix_openpt(O_RDWR | O_NOCTTY) >= 0) opened++;
        if (open("/dev/pts/ptmx", O_RDWR | O_NOCTTY) >= 0) opened++;
    }
    printf("ptmx=%d pts_ptmx=%d openpt=%d opened=%d\n", a, b, c, opened);
    fflush(stdout);
    sleep(1); /* hold whatever we got while the host counts */
    return 0;
}
"""


def _host_ptys() -> int:
    return int(_host("/proc/sys/kernel/pty/nr"))


def test_no_pty_can_be_opened(any_path: Runner) -> None:
    before = _host_ptys()
    during: list[int] = []

    def on_output(stream: str, text: str) -> None:
        if stream == "stdout" and "opened=" in text:
            during.append(_host_ptys())

    req = RunRequest("c", PTY_GRAB, limits=SandboxLimits(time_limit_ms=10_000))
    res = any_path.run(req, on_output=on_output)
    assert res.outcome is Outcome.OK, res
    assert res.stdout.strip() == "ptmx=-1 pts_ptmx=-1 openpt=-1 opened=0", res
    assert during and during[0] - before < 50, (before, during)  # other processes may open a few


# -- item 11: a compiled program of many files ---------------------------------------------------


def _many_classes(n: int) -> str:
    classes = "\n".join(f"  static class C{i} {{ int v() {{ return {i}; }} }}" for i in range(n))
    calls = " + ".join(f"new C{i}().v()" for i in range(n))
    return (
        f"// {uuid.uuid4()}\npublic class Main {{\n{classes}\n"
        f"  public static void main(String[] a) {{\n    long s = {calls};\n"
        '    System.out.println("sum " + s);\n  }\n}\n'
    )


@pytest.mark.parametrize("classes", [100, 300])
def test_java_with_many_classes_runs_fresh_and_cached(
    runner: Runner, classes: int, caplog: pytest.LogCaptureFixture
) -> None:
    # 100 files: more than the launcher took in one message; 300: more than one SCM_RIGHTS
    # message can carry (253) and than the launcher's RLIMIT_NOFILE (256) at once.
    assert isinstance(runner, BwrapRunner) and runner._pool is not None
    src = _many_classes(classes)
    expected = f"sum {sum(range(classes))}\n"
    first = run(runner, "java", src, compile_time_limit_ms=120_000, time_limit_ms=20_000)
    assert first.outcome is Outcome.OK and not first.cached, first
    assert first.stdout == expected
    for _ in range(2):
        wait_spare(runner, (256, 65_536))
        served = runner._pool.served
        again = run(runner, "java", src, time_limit_ms=20_000)
        assert again.outcome is Outcome.OK and again.cached, again
        assert again.stdout == expected
        assert runner._pool.served == served + 1  # through a pre-built sandbox...
        assert "unusable" not in caplog.text  # ...that took the job (no fallback to a fresh one)
    with without_pool(runner):  # and through a sandbox built for the run
        again = run(runner, "java", src, time_limit_ms=20_000)
    assert again.outcome is Outcome.OK and again.cached and again.stdout == expected, again
    assert no_leftovers()
