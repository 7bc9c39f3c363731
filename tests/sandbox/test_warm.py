"""Warm starts (warm.py): a spare sandbox's Python started before its run, its script a FIFO
until the run's code comes. A program must not be able to tell: everything it can observe of
its start is what a cold start gives it. And a sandbox whose program was started for other runs
serves any run correctly."""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from livecode.sandbox import Outcome, RunRequest, SandboxLimits, bwrap
from livecode.sandbox.bwrap import BwrapRunner
from livecode.sandbox.config import SandboxConfig
from livecode.sandbox.outputs import OutputLimits
from livecode.sandbox.program import SourceFile

from .helpers import (
    TEST_SLOTS,
    TEST_UID_BASE,
    host_uids_of_cmdline,
    make_runner,
    no_leftovers,
    processes_of_uids,
    requires_bwrap,
    run,
    warm_idle,
)

pytestmark = requires_bwrap

# What a program can see of how it was started.
PROBE = r"""
import json, os, resource, signal, sys
fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
print(json.dumps({
    "argv": sys.argv, "orig_argv": sys.orig_argv, "path": sys.path, "file": __file__,
    "isfile": os.path.isfile(__file__), "source": open(__file__).read(), "main": sorted(dir()),
    "loader": type(__loader__).__name__, "spec": repr(__spec__), "modules": sorted(sys.modules),
    "finders": [(path, type(finder).__name__, getattr(finder, "_path_mtime", None) if path != os.getcwd() else 0,
                 sorted(getattr(finder, "_path_cache", None) or ()))
                for path, finder in sys.path_importer_cache.items()],  # (the run's own dir: made when it started)
    "flags": repr(sys.flags), "cwd": os.getcwd(), "env": list(os.environ.items()),
    "environ": open("/proc/self/environ", "rb").read().decode(),
    "rlimits": [resource.getrlimit(r) for r in range(16)],
    "fds": fds, "box": os.listdir("/sandbox"), "work": os.listdir("."), "tmp": sorted(os.listdir("/tmp")),
    "pid": os.getpid(), "ppid": os.getppid(), "stdin": sys.stdin.read(),
    "stdout": [sys.stdout.isatty(), sys.stdout.encoding, sys.stdout.line_buffering],
    "seekable": [sys.stdin.seekable(), sys.stdout.seekable(), sys.stderr.seekable()],
    "priority": os.getpriority(os.PRIO_PROCESS, 0),
    "status": [line for line in open("/proc/self/status").read().splitlines()
               if line.split(":")[0] in ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                                         "NoNewPrivs", "Seccomp", "Seccomp_filters", "Cpus_allowed_list")],
    "cgroup": open("/proc/self/cgroup").read(), "mounts": open("/proc/self/mountinfo").read().count("\n"),
    "dumpable": open("/proc/self/environ", "rb").read() != b"" and os.access("/proc/self/mem", os.R_OK),
    "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    "handlers": [repr(signal.getsignal(s)) for s in signal.valid_signals() if s not in (9, 19)],
}))
"""

TRACEBACK = "def f():\n    return 1 / 0\n\nprint('before')\nf()\n"


@pytest.fixture(scope="module")
def runners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BwrapRunner, BwrapRunner]]:
    # One spare: after _wait_warm it is the one a run takes (with two, a run that cannot use a
    # warm start would take the other, if it was built for such runs). Python's warm starts are
    # copies of a template's interpreter (enter.py); launcher_started() gives the other kind.
    warm = make_runner(tmp_path_factory.mktemp("warm"), 1)
    cold = make_runner(tmp_path_factory.mktemp("cold"), 2, config=SandboxConfig(warm_start=False))
    assert isinstance(warm, BwrapRunner) and isinstance(cold, BwrapRunner)
    try:
        yield warm, cold
    finally:
        warm.close()
        cold.close()


@pytest.fixture
def launcher_started(tmp_path: Path) -> Iterator[BwrapRunner]:
    """Warm starts forked by the launcher (no template: LIVECODE_SANDBOX_ENTER=false). Not kept
    for the module: each runner holds slots for its spares, and the tests' range is small."""
    r = make_runner(tmp_path, 1, config=SandboxConfig(enter=False))
    assert isinstance(r, BwrapRunner)
    try:
        yield r
    finally:
        r.close()


def _wait_warm(r: BwrapRunner, every: bool = False, language: str = "python", source: str = "pass") -> None:
    """Until a spare with `language`'s interpreter started in it is ready (the last runs were in
    that language); `every`: until every spare is."""
    for _ in range(3):
        run(r, language, source)  # the spares follow the last run's program
    deadline = time.monotonic() + 15
    again = time.monotonic() + 1
    while r.warm_spares() < (r.pool_size if every else 1):
        assert time.monotonic() < deadline, "no warm spare built"
        if time.monotonic() > again:
            # A spare built before the runs (for none) is replaced when a run passes it over for
            # a warm one (pool.take's `stale`): one more run, if the last ones took it in turn.
            run(r, language, source)
            again = time.monotonic() + 1
        time.sleep(0.02)


def _served_warm(r: BwrapRunner, req: RunRequest) -> Any:
    _wait_warm(r)
    before = r.warm_runs
    res = r.run(req)
    assert r.warm_runs == before + 1, "the run did not take the program started ahead"
    return res


def _cold(r: BwrapRunner, req: RunRequest) -> Any:
    before = r.warm_runs
    res = r.run(req)
    assert r.warm_runs == before
    return res


@pytest.mark.parametrize("entered", [True, False], ids=["template-copy", "launcher-started"])
def test_a_warm_started_program_sees_what_a_cold_start_gives_it(
    runners: tuple[BwrapRunner, BwrapRunner], request: pytest.FixtureRequest, entered: bool
) -> None:
    warm, cold = runners
    if not entered:
        warm = request.getfixturevalue("launcher_started")
    req = RunRequest("python", PROBE, stdin="line one\nline two\n")
    spares = warm.entered_spares
    w = _served_warm(warm, req)
    assert (warm.entered_spares > spares) is entered
    c = _cold(cold, req)
    assert w.outcome is Outcome.OK and c.outcome is Outcome.OK, (w, c)
    seen_warm, seen_cold = json.loads(w.stdout_bytes), json.loads(c.stdout_bytes)
    # Its privileges, ids, cgroup, mounts and filter are a cold start's (the "status" lines):
    # what may differ is its parent, outside the sandbox for a template's copy (enter.py).
    assert seen_cold["ppid"] == 1
    assert seen_warm.pop("ppid") == (0 if entered else 1)
    seen_cold.pop("ppid")
    assert seen_warm == seen_cold
    # and what a cold start gives is what `python3 -E -s main.py` gives:
    assert seen_warm["argv"] == ["main.py"] and seen_warm["file"] == "/sandbox/work/main.py"
    assert seen_warm["isfile"] and seen_warm["source"] == PROBE
    assert seen_warm["fds"] == [0, 1, 2, 3]  # stdio and the listing's own: nothing of the launcher's
    assert seen_warm["box"] == ["tmp", "work"] and seen_warm["work"] == ["main.py", "out"]
    assert seen_warm["stdin"] == "line one\nline two\n"


@pytest.mark.parametrize("started_ahead", [True, False], ids=["warm-start", "launcher-only"])
def test_a_spare_taken_during_its_set_up_ends_with_every_process_at_normal_priority(
    runners: tuple[BwrapRunner, BwrapRunner], monkeypatch: pytest.MonkeyPatch, started_ahead: bool
) -> None:
    """A spare is built at nice 10 and reniced to 0 when a run takes it. A renice misses a process
    being forked at that moment (bubblewrap's clone of the launcher, the launcher's fork of the
    program started ahead): that one, and what it forks, keep nice 10. So the renice that counts
    comes once the launcher has said it is up. Here a spare is taken the moment it is built, and
    every renice made before its launcher is up misses everything."""
    warm, _ = runners
    _wait_warm(warm)  # the spares start Python for the runs to come
    limits = SandboxLimits()
    key = (limits.memory_mb, limits.max_disk_kb)
    sp = warm._prespawn_run(key) if started_ahead else warm._prespawn(key)
    try:
        assert sp.nice == 10 and (sp.warm is not None) is started_ahead
        want = 2 if started_ahead else 1
        real = os.setpriority

        def missing_during_set_up(which: int, who: int, prio: int) -> None:
            if sp.ups >= want:
                real(which, who, prio)

        monkeypatch.setattr(os, "setpriority", missing_during_set_up)
        assert warm._back_to_normal_priority(sp)
        nices = {pid: os.getpriority(os.PRIO_PROCESS, pid) for pid in sp.cg.pids()}
        assert len(nices) == 2 + started_ahead, nices  # bubblewrap's monitor, the launcher, the program
        assert set(nices.values()) == {0}, nices
    finally:
        warm._discard(sp)


def test_threads_a_program_started_ahead_starts_as_it_is_reniced_get_normal_priority(
    runners: tuple[BwrapRunner, BwrapRunner], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm start's program may still be starting threads (Node's) when its spare is taken: a
    thread made during the renice is not in the list it read. The list is read again until no
    thread is new. Here the first read sees only the first thread."""
    warm, _ = runners
    _wait_warm(warm)
    limits = SandboxLimits()
    sp = warm._prespawn_run((limits.memory_mb, limits.max_disk_kb))
    try:
        assert sp.warm is not None and sp.nice == 10
        assert bwrap._launcher_up(sp, 2, 10.0)
        real_threads = type(sp.cg).threads
        reads: list[int] = []

        def threads(cg: Any) -> list[int]:
            reads.append(1)
            seen = real_threads(cg)
            return seen[:1] if len(reads) == 1 else seen

        monkeypatch.setattr(type(sp.cg), "threads", threads)
        assert warm._back_to_normal_priority(sp)
        monkeypatch.undo()
        nices = {tid: os.getpriority(os.PRIO_PROCESS, tid) for tid in sp.cg.threads()}
        assert len(nices) >= 3 and set(nices.values()) == {0}, nices
    finally:
        warm._discard(sp)


def test_a_spare_taken_before_its_helper_dropped_root_is_reniced_as_soon_as_it_has(
    runners: tuple[BwrapRunner, BwrapRunner], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken the moment it was built, a spare's helper may still be root, before its nice 10: a
    renice then finds nothing of the slot uid (ESRCH). It is tried again while the launcher comes
    up, so that the set-up does not go on at nice 10 while the run waits for it."""
    warm, _ = runners
    limits = SandboxLimits()
    sp = warm._prespawn(limits_key := (limits.memory_mb, limits.max_disk_kb))
    assert limits_key and sp.nice == 10
    try:
        real_set, real_up = os.setpriority, bwrap._launcher_up
        user_calls: list[str] = []

        def setpriority(which: int, who: int, prio: int) -> None:
            if which != os.PRIO_USER:
                real_set(which, who, prio)
                return
            if len(user_calls) < 2:  # the helper is still root
                user_calls.append("ESRCH")
                raise ProcessLookupError(3, "No such process")
            try:
                real_set(which, who, prio)
            except ProcessLookupError:  # really still root
                user_calls.append("ESRCH")
                raise
            user_calls.append("done")

        def launcher_up(spawned: Any, want: int, wait_s: float) -> bool | None:
            if "done" not in user_calls:  # a set-up slower than the helper's drop
                return False
            return real_up(spawned, want, wait_s)

        monkeypatch.setattr(os, "setpriority", setpriority)
        monkeypatch.setattr(bwrap, "_launcher_up", launcher_up)
        assert warm._back_to_normal_priority(sp)
        assert user_calls[:2] == ["ESRCH", "ESRCH"] and user_calls[2:].count("done") == 1, user_calls
        assert user_calls[-1] == "done", user_calls  # tried until it found the helper dropped, then no more
    finally:
        warm._discard(sp)


def test_a_spare_discarded_with_its_up_bytes_unread_ends_quietly(runners: tuple[BwrapRunner, BwrapRunner]) -> None:
    """The host reads a spare's UP bytes only when a run takes it. A spare discarded with them
    unread (its socket closed: ECONNRESET on the launcher's side) ends as a discarded spare
    does: exit 0, nothing on its diagnostics."""
    warm, _ = runners
    limits = SandboxLimits()
    sp = warm._prespawn((limits.memory_mb, limits.max_disk_kb))
    try:
        poller = select.poll()
        poller.register(sp.sock.fileno(), select.POLLIN)
        assert poller.poll(10_000), "the launcher never said it is up"
        sp.sock.close()
        assert sp.proc.wait(10) == 0
        os.set_blocking(sp.diag_r, False)
        try:
            said = os.read(sp.diag_r, 4096)
        except BlockingIOError:
            said = b""
        assert said == b"", said
    finally:
        warm._discard(sp)


@pytest.mark.parametrize(
    ("source", "outcome", "exit_code", "sig"),
    [
        (TRACEBACK, Outcome.RUNTIME_ERROR, 1, None),
        ("import sys\nprint('x', file=sys.stderr)\nsys.exit(3)\n", Outcome.RUNTIME_ERROR, 3, None),
        ("print('interrupted')\nraise KeyboardInterrupt\n", Outcome.RUNTIME_ERROR, None, signal.SIGINT),
        ("print('unclosed'\n", Outcome.RUNTIME_ERROR, 1, None),
    ],
    ids=["traceback", "exit-status", "keyboard-interrupt", "syntax-error"],
)
def test_errors_and_exits_are_those_of_a_cold_start(
    runners: tuple[BwrapRunner, BwrapRunner], source: str, outcome: Outcome, exit_code: int | None, sig: int | None,
) -> None:
    warm, cold = runners
    w = _served_warm(warm, RunRequest("python", source))
    c = _cold(cold, RunRequest("python", source))
    assert (w.outcome, w.exit_code, w.signal) == (outcome, exit_code, sig), w
    assert (w.stdout_bytes, w.stderr_bytes) == (c.stdout_bytes, c.stderr_bytes)
    if source == TRACEBACK:  # the traceback quotes the lines of main.py: a regular file by then
        assert 'File "/sandbox/work/main.py", line 2, in f\n    return 1 / 0' in w.stderr


# How a program ends, as a program can see it: a template's copy does the interpreter's exit
# itself (enter_template._end, without finalizing what it shares with the template) unless the
# program leaves something unusual, when the interpreter's own finalization does it.
FINALIZERS = """\
import atexit, sys, types


class Noisy:
    def __init__(self, name):
        self.name = name

    def __del__(self):
        print("finalized", self.name)


left_open = open("out/left-open.txt", "w")
left_open.write("written, never closed")
n = Noisy("in __main__")
helper = types.ModuleType("helper")
helper.obj = Noisy("in a module of the program")
sys.modules["helper"] = helper
atexit.register(print, "atexit handler")
print("end of the program")
"""
COUNTER = """\
class Person:
    count = 0

    def __init__(self, name):
        self.name = name
        Person.count += 1

    def __del__(self):
        Person.count -= 1
        print(f"{self.name} deleted, {Person.count} left")


ann = Person("Ann")
bob = Person("Bob")
print("people:", Person.count)
"""
EXITS = {
    # (source, what the run must show: in stdout, stderr or out/, and its exit status)
    "finalizers": (FINALIZERS, ("atexit handler\nfinalized in __main__\nfinalized in a module of the program",
                                "written, never closed"), 0),
    "stdout-redirected": ("import sys\nsys.stdout = open('out/log.txt', 'w')\nprint('to the file')\n",
                          ("to the file\n",), 0),
    "exit-message": ("import sys\nprint('x')\nsys.exit('bye')\n", ("bye\n",), 1),
    "exit-status": ("import sys\nsys.exit(300)\n", (), 300 & 0xFF),
    "c-stdio": ("import ctypes\nctypes.CDLL(None).printf(b'from C\\n')\nprint('from Python')\n",
                ("from Python\nfrom C\n",), 0),
    "threads": ("import threading, time\n"
                "threading.Thread(target=lambda: (time.sleep(0.3), print('joined'))).start()\n"
                "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\nprint('main')\n",
                ("main\njoined\n",), 0),
    "executor": ("from concurrent.futures import ThreadPoolExecutor\n"
                 "ThreadPoolExecutor(1).submit(print, 'from the pool')\n", ("from the pool\n",), 0),
    "atexit-raises": ("import atexit\natexit.register(lambda: 1 / 0)\nprint('ok')\n",
                      ("Exception ignored in atexit callback", "ZeroDivisionError"), 0),
    "stdout-closed": ("import os\nprint('lost')\nos.close(1)\n", ("Bad file descriptor",), 120),
    # A __del__ sees its module's names still bound (a finalization that cleared them first
    # would print AttributeErrors instead).
    "del-uses-globals": (COUNTER, ("Ann deleted, 1 left\nBob deleted, 0 left\n",), 0),
    "file-in-a-cycle": ("class Log:\n    def __init__(self):\n        self.me = self\n"
                        "        self.f = open('out/cycle.txt', 'w')\n        self.f.write('kept')\n\n\nlog = Log()\n",
                        ("kept",), 0),
    "output-order": ("import atexit, os\nprint('first')\natexit.register(os.system, 'echo second')\n",
                     ("first\nsecond\n",), 0),
    "del-prints-to-stdout": ("import sys\nclass T:\n    def __del__(self):\n        print('to stdout again')\n\n\n"
                             "t = T()\nsys.stdout = open('out/log.txt', 'w')\nprint('to the file')\n",
                             ("to stdout again\n", "to the file\n"), 0),
    "excepthook-raises": ("import sys\ndef hook(*args):\n    raise RuntimeError('the hook broke')\n\n\n"
                          "sys.excepthook = hook\n1 / 0\n",
                          ("Error in sys.excepthook:", "the hook broke", "Original exception was:",
                           "ZeroDivisionError"), 1),
}
# (interrupted: the run ends by SIGINT, its exit status None)
INTERRUPTED = ("import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
               "f = open('out/partial.txt', 'w')\nf.write('partial results')\nraise KeyboardInterrupt\n")
EXITS["interrupted-with-a-thread"] = (INTERRUPTED, ("partial results", "KeyboardInterrupt"), None)
EXITS["interrupted"] = (INTERRUPTED.split("\n", 2)[2], ("partial results", "KeyboardInterrupt"), None)
LAZY = """\
import importlib.util, sys
spec = importlib.util.find_spec("this")
spec.loader = loader = importlib.util.LazyLoader(spec.loader)
sys.modules["this"] = module = importlib.util.module_from_spec(spec)
loader.exec_module(module)
f = open("out/x.txt", "w")
f.write("data")
print("hi")
"""
EXITS.update({
    # a lazily loaded module the program never used: not loaded by the exit (nor its output)
    "lazy-module": (LAZY, ("hi\n", "data"), 0),
    "interrupt-subclass": ("class Stop(KeyboardInterrupt):\n    pass\n\n\nraise Stop\n", ("Stop",), 1),
    "interrupt-blocked": ("import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
                          "raise KeyboardInterrupt\n", ("KeyboardInterrupt",), 130),
    "late-write-error": ("class D:\n    def __del__(self):\n        print('bye')\n\n\nd = D()\nout = open(1, 'w')\n",
                         (), 0),
    "c-stdio-exit": ("import atexit, ctypes, sys\nctypes.CDLL(None).printf(b'from C\\n')\n"
                     "atexit.register(print, 'py atexit')\nsys.exit(0)\n", ("from C\npy atexit\n",), 0),
    "compile-error": ("x = " + "-" * 100_000 + "1\n", ("MemoryError",), 1),  # (the parser runs out)
})


@pytest.mark.parametrize("case", EXITS)
def test_a_program_ends_as_a_cold_start_ends(runners: tuple[BwrapRunner, BwrapRunner], case: str) -> None:
    source, shown, status = EXITS[case]
    warm, cold = runners
    req = RunRequest("python", source, outputs=OutputLimits())
    w, c = _served_warm(warm, req), _cold(cold, req)
    assert w.exit_code == status, w
    seen = w.stdout + w.stderr + "".join(f.data.decode() for f in w.files)
    for part in shown:
        assert part in seen, (part, w)
    assert (w.outcome, w.exit_code, w.signal) == (c.outcome, c.exit_code, c.signal)
    # (an object's address differs between any two runs)
    assert (w.stdout_bytes, w.files) == (c.stdout_bytes, c.files)
    assert _no_address(w.stderr_bytes) == _no_address(c.stderr_bytes)


def test_a_stack_limit_of_its_own_gives_a_run_a_cold_starts_stacks(runners: tuple[BwrapRunner, BwrapRunner]) -> None:
    # The C library sizes threads' stacks from the stack limit a process starts with: a copy of
    # the template (started with the worker's) that set the run's after its start would give a
    # thread 8 MB where the run asked for 64 (it crashed here). Such runs are not copies.
    source = ("import functools, sys, threading\nsys.setrecursionlimit(10**6)\n\n\n@functools.lru_cache(None)\n"
              "def f(n):\n    return f(n - 1) + 1 if n else 0\n\n\n"
              "t = threading.Thread(target=lambda: print(f(60000)))\nt.start()\nt.join()\n")
    warm, cold = runners
    req = RunRequest("python", source, limits=SandboxLimits(stack_kb=65536))
    assert cold.run(req).stdout == "60000\n"
    for _ in range(3):  # the spares follow the last runs: these, after the first
        res = warm.run(req)
        assert (res.outcome, res.stdout) == (Outcome.OK, "60000\n"), res


def _no_address(text: bytes) -> bytes:
    return re.sub(rb" at 0x[0-9a-f]+", b" at 0x...", text)


def test_a_program_of_several_files_finds_them_all(runners: tuple[BwrapRunner, BwrapRunner]) -> None:
    warm, cold = runners
    files = (
        SourceFile.text("main.py",
            "import os, helper\nfrom pkg import mod\nprint(helper.NAME, mod.VALUE, os.listdir())"),
        SourceFile.text("helper.py", "NAME = 'helper'\n"),
        SourceFile.text("z.py", ""),
        SourceFile.text("pkg/__init__.py", ""),
        SourceFile.text("pkg/mod.py", "VALUE = 42\n"),
        SourceFile.text("b.py", ""),
    )
    req = RunRequest("python", "", files=files, entry="main.py")
    res = _served_warm(warm, req)
    assert res.outcome is Outcome.OK, res
    assert res.stdout.startswith("helper 42 [")
    # The directory lists the entry where a cold start's would (it took the FIFO's place at its turn).
    assert res.stdout == _cold(cold, req).stdout


def test_a_source_larger_than_a_pipe_arrives_whole(runners: tuple[BwrapRunner, BwrapRunner]) -> None:
    warm, _ = runners
    filler = "".join(f"# line {i} {'x' * 60}\n" for i in range(4000))  # ~290 KB through the FIFO
    src = filler + "import hashlib\ndata = open(__file__, 'rb').read()\n"
    src += "print(len(data), hashlib.sha256(data).hexdigest())\n"
    res = _served_warm(warm, RunRequest("python", src))
    assert res.outcome is Outcome.OK, res
    assert res.stdout == f"{len(src)} {hashlib.sha256(src.encode()).hexdigest()}\n"


def test_a_source_declaring_another_encoding_starts_cold_and_runs(runners: tuple[BwrapRunner, BwrapRunner]) -> None:
    # CPython seeks a script that declares a non-UTF-8 encoding, which a FIFO cannot do.
    warm, _ = runners
    files = (SourceFile("main.py", b'# -*- coding: latin-1 -*-\nprint("caf\xe9")\n'),)
    _wait_warm(warm)
    res = _cold(warm, RunRequest("python", "", files=files, entry="main.py"))
    assert res.outcome is Outcome.OK, res
    assert res.stdout == "café\n"


def test_a_zip_application_starts_cold_and_runs_its_main(runners: tuple[BwrapRunner, BwrapRunner]) -> None:
    # CPython runs a zip's __main__.py, and recognizes a zip only in a regular file.
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("__main__.py", "print('from the zip')\n")
    warm, _ = runners
    _wait_warm(warm)
    res = _cold(warm, RunRequest("python", "", files=(SourceFile("main.py", buf.getvalue()),), entry="main.py"))
    assert res.outcome is Outcome.OK, res
    assert res.stdout == "from the zip\n"


def test_a_run_of_another_program_stops_the_one_started_ahead(runners: tuple[BwrapRunner, BwrapRunner]) -> None:
    # Another language, Python with arguments, merged stderr: each takes a spare whose Python was
    # started for the runs before, and runs its own program.
    warm, _ = runners
    for req, out in (
        (RunRequest("bash", "echo $0"), "main.sh\n"),
        (RunRequest("python", "import sys; print(sys.argv[1:])", args=("a", "b")), "['a', 'b']\n"),
        (RunRequest("python", "import sys; print('out', flush=True); print('err', file=sys.stderr)", merge_stderr=True),
         "out\nerr\n"),
    ):
        _wait_warm(warm, every=True)
        stopped = warm.unwarmed_runs
        res = _cold(warm, req)
        assert res.outcome is Outcome.OK and res.stdout == out, res
        assert warm.unwarmed_runs == stopped + 1, "the run did not take a spare started for others"
    assert no_leftovers()


def test_a_signal_reaches_a_program_started_after_a_stopped_warm_start(
    runners: tuple[BwrapRunner, BwrapRunner],
) -> None:
    # The program is no longer the sandbox's pid 2 (the Python started ahead was): a Stop must
    # still reach it, not miss it.
    warm, _ = runners
    _wait_warm(warm)
    seen: list[str] = []
    sent: list[int] = []

    def source() -> int | None:
        if not sent and "started" in "".join(seen):
            sent.append(signal.SIGUSR1)
            return signal.SIGUSR1
        return None

    src = "trap 'echo got USR1; exit 3' USR1\necho started\nwhile true; do sleep 0.05; done\n"
    _wait_warm(warm, every=True)
    stopped = warm.unwarmed_runs
    res = warm.run(RunRequest("bash", src), on_output=lambda _s, text: seen.append(text), signal_source=source)
    assert warm.unwarmed_runs == stopped + 1
    assert res.outcome is Outcome.RUNTIME_ERROR and res.exit_code == 3, res
    assert "got USR1" in res.stdout


def _test_uid_pids() -> set[int]:
    return {pid for pid, _uid in processes_of_uids(TEST_UID_BASE, TEST_SLOTS)}


def _settled_pids() -> set[int]:
    """The tests' uids' processes once they stop changing (other runners' spares being built)."""
    last = _test_uid_pids()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = _test_uid_pids()
        if now == last:
            return now
        last = now
    return last


def test_spares_started_ahead_leave_nothing_when_discarded(tmp_path: Path) -> None:
    others = _settled_pids()  # the module's runners' spares, idle meanwhile
    r = make_runner(tmp_path, 2)
    assert isinstance(r, BwrapRunner)
    try:
        _wait_warm(r, every=True)
        deadline = time.monotonic() + 10
        while not any(warm_idle(str(pid)) for pid in _test_uid_pids() - others):  # its Pythons, waiting
            assert time.monotonic() < deadline
            time.sleep(0.02)
        ours = _test_uid_pids() - others
    finally:
        r.close()
    deadline = time.monotonic() + 5
    while ours & _test_uid_pids():
        assert time.monotonic() < deadline, "a discarded spare's processes outlived it"
        time.sleep(0.05)


def test_runs_back_to_back_take_spares_still_starting(tmp_path: Path) -> None:
    # One spare, runs with no pause: each takes the spare built after the one before, its
    # Python still starting (the launcher waits for it to open its FIFO).
    r = make_runner(tmp_path, 1)
    assert isinstance(r, BwrapRunner)
    try:
        _wait_warm(r)
        before = r.warm_runs
        for i in range(15):
            res = r.run(RunRequest("python", f"print({i} * 2)"))
            assert res.outcome is Outcome.OK and res.stdout == f"{i * 2}\n", res
        # How many took a spare (rather than building one on their path) depends on the machine's
        # load; the first one did, the spare being ready.
        assert r.warm_runs > before
    finally:
        r.close()


@pytest.mark.parametrize("entered", [True, False], ids=["template-copy", "launcher-started"])
def test_a_program_started_ahead_that_died_is_started_again(tmp_path: Path, entered: bool) -> None:
    # Killed while it waited for its run (say, by an operator): the run gets a fresh one (the
    # launcher's own start when the one that died was a template's copy).
    r = make_runner(tmp_path, 1, config=SandboxConfig(enter=entered))
    assert isinstance(r, BwrapRunner)
    try:
        others = _settled_pids()
        _wait_warm(r, every=True)
        deadline = time.monotonic() + 10
        while not (waiting := [pid for pid in _test_uid_pids() - others if warm_idle(str(pid))]):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for pid in waiting:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        before = r.warm_runs
        res = r.run(RunRequest("python", "print('after all')"))
        assert res.outcome is Outcome.OK and res.stdout == "after all\n", res
        assert r.warm_runs == before + (0 if entered else 1)
        assert (r.entered_spares > 0) is entered
    finally:
        r.close()


def test_no_spare_holds_a_users_arguments_or_file_names(runners: tuple[BwrapRunner, BwrapRunner]) -> None:
    # A run with arguments, or whose entry is a file of its own naming, never has a spare started
    # with them for the runs after it.
    warm, _ = runners
    marker = f"secret{time.monotonic_ns()}"
    entry = f"{marker}.py"
    for _ in range(3):
        res = _cold(warm, RunRequest("python", "import sys; print(sys.argv[1])", args=(marker,)))
        assert res.stdout == marker + "\n", res
        named = (SourceFile.text(entry, "import sys; print(sys.argv[0])"),)
        res = _cold(warm, RunRequest("python", "", files=named, entry=entry))
        assert res.stdout == entry + "\n", res
    time.sleep(0.5)  # the spares built after them
    assert host_uids_of_cmdline(marker) == set()
    assert host_uids_of_cmdline(entry) == set()


def test_compiled_bytecode_starts_cold_and_runs(runners: tuple[BwrapRunner, BwrapRunner]) -> None:
    # CPython recognizes bytecode by its magic number, read from a regular file only.
    import importlib.util
    import marshal

    pyc = importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(compile("print('from bytecode')", "m", "exec"))
    warm, _ = runners
    _wait_warm(warm)
    res = _cold(warm, RunRequest("python", "", files=(SourceFile("main.py", pyc),), entry="main.py"))
    assert res.outcome is Outcome.OK, res
    assert res.stdout == "from bytecode\n"


NODE_PROBE = r"""
const fs = require('fs');
let input = ''; try { input = fs.readFileSync(0, 'utf8'); } catch (e) { input = 'ERR ' + e.code; }
console.log(JSON.stringify({argv: process.argv, execArgv: process.execArgv, file: __filename, dir: __dirname,
  main: require.main === module, env: Object.entries(process.env), cwd: process.cwd(),
  work: fs.readdirSync('.'), box: fs.readdirSync('/sandbox'), tmp: fs.readdirSync('/tmp').sort(),
  isFile: fs.statSync(__filename).isFile(), source: fs.readFileSync(__filename, 'utf8'), paths: module.paths,
  stdin: input, fds: fs.readdirSync('/proc/self/fd')}));
"""


@pytest.mark.parametrize(
    ("source", "stdin"),
    [(NODE_PROBE, "line one\n"), ("function f() { throw new Error('boom'); }\nconsole.log('before');\nf();\n", ""),
     ("process.exitCode = 4;\nconsole.error('bye');\n", "")],
    ids=["probe", "uncaught", "exit-code"],
)
def test_node_started_ahead_sees_what_a_cold_start_gives_it(
    runners: tuple[BwrapRunner, BwrapRunner], source: str, stdin: str,
) -> None:
    # Node reads its main module once it has booted (one readFileSync): started ahead like Python.
    warm, cold = runners
    _wait_warm(warm, language="javascript", source="0")
    before = warm.warm_runs
    w = warm.run(RunRequest("javascript", source, stdin=stdin))
    assert warm.warm_runs == before + 1
    c = _cold(cold, RunRequest("javascript", source, stdin=stdin))
    assert (w.outcome, w.exit_code, w.stdout_bytes, w.stderr_bytes) == (c.outcome, c.exit_code, c.stdout_bytes,
                                                                        c.stderr_bytes)
    if source is NODE_PROBE:
        seen = json.loads(w.stdout_bytes)
        assert seen["file"] == "/sandbox/work/main.js" and seen["isFile"] and seen["source"] == NODE_PROBE
        assert seen["stdin"] == "line one\n"


# The nice value of every thread of the program (field 19 of each /proc/self/task/*/stat).
NODE_NICES = (
    "const fs = require('fs');\n"
    "console.log(fs.readdirSync('/proc/self/task').map("
    "t => fs.readFileSync(`/proc/self/task/${t}/stat`, 'utf8').split(') ')[1].split(' ')[16]).join(' '));\n"
)


def test_every_thread_of_a_node_started_ahead_runs_at_normal_priority(
    runners: tuple[BwrapRunner, BwrapRunner],
) -> None:
    """A spare is built at nice 10 and reniced thread by thread when a run takes it (a nice value
    is a thread's own): Node's threads, started during its boot ahead of the run, are reniced
    with its main thread."""
    warm, _ = runners
    _wait_warm(warm, language="javascript", source="0")
    time.sleep(0.3)  # the spare's Node has booted: its threads exist before the run takes it
    before = warm.warm_runs
    res = warm.run(RunRequest("javascript", NODE_NICES))
    assert warm.warm_runs == before + 1
    assert res.outcome is Outcome.OK, res
    nices = res.stdout.split()
    assert len(nices) > 1 and set(nices) == {"0"}, nices


def test_node_with_a_package_json_starts_cold_and_loads_es_modules(runners: tuple[BwrapRunner, BwrapRunner]) -> None:
    # Node reads package.json ("type": "module") before it opens its main module: a spare's Node,
    # started before the files came, would have taken main.js for CommonJS.
    warm, _ = runners
    _wait_warm(warm, language="javascript", source="0")
    files = (
        SourceFile.text("package.json", '{"type": "module"}'),
        SourceFile.text("main.js", "import { hi } from './lib.js';\nconsole.log(hi);\n"),
        SourceFile.text("lib.js", "export const hi = 'from an ES module';\n"),
    )
    res = _cold(warm, RunRequest("javascript", "", files=files, entry="main.js"))
    assert res.outcome is Outcome.OK, res
    assert res.stdout == "from an ES module\n"
