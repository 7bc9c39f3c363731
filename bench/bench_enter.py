"""What a run's Python costs when a started interpreter enters its fresh sandbox instead of a new
one starting in it (issue 11; LiveCode's entered warm starts, sandbox/enter.py).

    .venv/bin/python -m bench.bench_enter [--rounds 4] [--runs 30] [--uid 74100]
    .venv/bin/python -m bench.bench_enter --runner [--rounds 6] [--runs 40]   # LiveCode's runner, on and off

Without --runner, a measurement of the design alone (a prototype template, not LiveCode's):

A template (`/usr/bin/python3 -E -s`, started once, root, single-threaded, nothing of any run in
it) is asked per run to fork a child into a fresh bubblewrap sandbox: it points its children's
pid namespace at the sandbox's (`setns(CLONE_NEWPID)`, then back), forks once; the child writes
itself into nothing else, enters the sandbox's cgroup, IPC, UTS, network and mount namespaces
(its root and cwd become the sandbox's), then its user namespace last, drops to the sandbox's uid,
clears every capability (effective, permitted, inheritable, the bounding set; `setresuid` alone
keeps them: the sandbox's user namespace has no uid 0), sets no_new_privs, loads LiveCode's seccomp
filter (the BPF bubblewrap gets, `sandbox/seccomp.py`), closes every descriptor but 0-2 and runs
the program's source as `__main__`. The sandbox is plain bubblewrap (`--unshare-all`, /usr read-only,
its own /proc, /dev and /tmp) started as the slot uid, the same on both sides; what differs is how
the program's process comes to be in it.

Sides, alternated in rounds: **enter** (the template's own CPU per request plus its child's, from
getrusage in the template) and **start** (the same sandbox running `/usr/bin/python3 -E -s -c`,
its processes' CPU minus the same sandbox running `/bin/true`, reaped as a subreaper). Needs root,
bubblewrap and a uid free of processes. Never a pass/fail test.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from bench.common import machine
from livecode.sandbox.seccomp import build_filter

CODE = "print('hi')"
# --check: what the entered program sees of itself (the protections a cold start in the sandbox has).
PROBE = textwrap.dedent('''
    import os, socket, sys
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    print("uid/gid", os.getresuid(), os.getresgid(), "groups", os.getgroups())
    print("caps", {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")})
    print("no_new_privs", status["NoNewPrivs"].strip(), "seccomp", status["Seccomp"].strip())
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    print("pid", os.getpid(), "ppid", os.getppid(), "pids seen", pids)
    print("fds", sorted(os.listdir("/proc/self/fd")), "root", sorted(os.listdir("/")), "cwd", os.getcwd())
    for fam in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK):
        try:
            socket.socket(fam, socket.SOCK_DGRAM if fam != socket.AF_NETLINK else socket.SOCK_RAW)
            print("socket", fam, "ALLOWED")
        except OSError as e:
            print("socket", int(fam), "refused:", e.strerror)
    for what, call in (("setns", lambda: os.setns(0, 0) if hasattr(os, "setns") else os.unshare(0)),
                       ("write /usr", lambda: open("/usr/x", "w"))):
        try:
            call(); print(what, "ALLOWED")
        except (OSError, AttributeError) as e:
            print(what, "refused:", e)
    extra = ("ctypes", "json", "resource", "textwrap")
    print("modules beyond a cold start's:", sorted(m for m in sys.modules if m in extra))
''')
_PR_SET_CHILD_SUBREAPER = 36


def bwrap_argv(program: list[str], info_fd: int | None = None) -> list[str]:
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--chdir", "/tmp"]
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    return [*argv, "--", *program]


# The template: started once as `python3 -E -s main.py` in a directory of its own. Requests on
# stdin (one JSON line: the sandbox's pid, the source), answers on the pipe ANSWER_FD names: the run's exit status and
# the template's own and its child's CPU for it.
TEMPLATE = textwrap.dedent('''
    import ctypes, json, os, resource, sys
    libc = ctypes.CDLL(None, use_errno=True)
    UID = int(os.environ["UID_SLOT"])
    BPF = open(os.environ["BPF"], "rb").read()
    CLONE_NEWPID = 0x20000000
    OTHERS = ("cgroup", "ipc", "uts", "net", "mnt", "user")  # the user namespace last: host root until then

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    class Filter(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    bpf_buf = ctypes.create_string_buffer(BPF, len(BPF))
    prog = Filter(len(BPF) // 8, ctypes.cast(bpf_buf, ctypes.c_void_p))

    def check(rc, what):
        if rc != 0:
            os.write(2, f"{what}: {os.strerror(ctypes.get_errno())}\\n".encode())
            os._exit(120)

    def child(ns, source):
        for fd in ns:
            check(libc.setns(fd, 0), "setns")
            os.close(fd)
        os.setgroups([]) if False else None
        os.setresgid(UID, UID, UID)
        os.setresuid(UID, UID, UID)
        for cap in range(64):
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP until EINVAL past the last cap
                break
        libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
        data = (Data * 2)()
        check(libc.capset(ctypes.byref(Header(0x20080522, 0)), data), "capset")
        check(libc.prctl(38, 1, 0, 0, 0), "no_new_privs")
        check(libc.prctl(22, 2, ctypes.byref(prog), 0, 0), "seccomp")  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        os.closerange(3, 65536)
        os.chdir("/tmp")
        code = compile(source, "main.py", "exec")
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
        sys.stdout.flush()
        os._exit(0)

    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY)
    out = os.fdopen(int(os.environ["ANSWER_FD"]), "w")
    for line in sys.stdin:
        req = json.loads(line)
        s0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        target = req["pid"]
        pid_ns = os.open(f"/proc/{target}/ns/pid", os.O_RDONLY)
        ns = [os.open(f"/proc/{target}/ns/{n}", os.O_RDONLY) for n in OTHERS]
        check(libc.setns(pid_ns, CLONE_NEWPID), "setns pid")
        pid = os.fork()
        if pid == 0:
            child(ns, req["source"])
        check(libc.setns(own_pid_ns, CLONE_NEWPID), "setns back")
        for fd in (pid_ns, *ns):
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        s1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        ms = lambda a, b: (b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime) * 1000
        out.write(json.dumps({"status": status, "self_ms": ms(s0, s1), "child_ms": ms(c0, c1)}) + "\\n")
        out.flush()
''')


def _reap_orphans() -> None:
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def _cpu_ms(who: int) -> float:
    ru = resource.getrusage(who)
    return (ru.ru_utime + ru.ru_stime) * 1000


def _cpu_children_ms() -> float:
    return _cpu_ms(resource.RUSAGE_CHILDREN)


class Template:
    def __init__(self, uid: int, bpf: Path, env: dict[str, str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lc-enter-"))
        (self.dir / "main.py").write_text(TEMPLATE)
        r, w = os.pipe()
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", "-E", "-s", "main.py"], cwd=self.dir, stdin=subprocess.PIPE,
            env={**env, "UID_SLOT": str(uid), "BPF": str(bpf), "ANSWER_FD": str(w)}, pass_fds=(w,), text=True,
        )
        os.close(w)
        self.answers = os.fdopen(r)

    def run(self, sandbox_pid: int, source: str) -> dict[str, float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"pid": sandbox_pid, "source": source}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.answers.readline())  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def sandbox(uid: int) -> tuple[subprocess.Popen[bytes], int]:
    """A bubblewrap sandbox whose program waits (sleep), set up to the end: its pid 1's pid."""
    r, w = os.pipe()
    p = subprocess.Popen(bwrap_argv(["/usr/bin/sh", "-c", "echo; exec sleep 60"], w), pass_fds=(w,),
                         preexec_fn=_as(uid), stdout=subprocess.PIPE)
    os.close(w)
    info = b""
    while not info.rstrip().endswith(b"}"):
        info += os.read(r, 4096)
    os.close(r)
    assert p.stdout is not None
    p.stdout.read(1)  # its program runs: the namespaces and the uid map are in place
    return p, int(json.loads(info)["child-pid"])


def _as(uid: int):  # type: ignore[no-untyped-def]
    def pre() -> None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    return pre


def runner_sides(rounds: int, runs: int, uid_base: int) -> None:
    """--runner: LiveCode's runner (pool of 1, warm starts) with entered warm starts and without
    (LIVECODE_SANDBOX_ENTER), alternated: the CPU per sequential hello world of every process it
    starts (its sandboxes, the template and its copies: reaped, we being their subreaper, before
    the count is read) and of the runner's own threads."""
    from livecode.sandbox import RunRequest, SandboxLimits, get_runner
    from livecode.sandbox.config import SandboxConfig

    children: dict[bool, list[float]] = {True: [], False: []}
    own: dict[bool, list[float]] = {True: [], False: []}
    hello = RunRequest("python", CODE, limits=SandboxLimits())
    for rnd in range(rounds):
        for entered in (True, False) if rnd % 2 == 0 else (False, True):
            base = Path(tempfile.mkdtemp(prefix="lc-enter-runner-"))
            base.chmod(0o700)
            r = get_runner("bwrap", work_root=str(base / "w"), cache_dir=str(base / "c"), uid_base=uid_base, slots=8,
                           pool_size=1, config=SandboxConfig(enter=entered))
            r.check()
            for _ in range(5):
                r.run(hello)
                time.sleep(0.05)
            c0, s0 = _cpu_children_ms(), _cpu_ms(resource.RUSAGE_SELF)
            for _ in range(runs):
                assert r.run(hello).stdout == "hi\n"
                time.sleep(0.04)  # the spare is rebuilt, as between a user's runs
            r.close()
            time.sleep(0.2)
            _reap_orphans()
            children[entered].append((_cpu_children_ms() - c0) / runs)
            own[entered].append((_cpu_ms(resource.RUSAGE_SELF) - s0) / runs)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end")
    print("| a sandboxed Python hello world, per run (medians of the rounds) | its sandbox and program "
          "| the runner's own threads |")
    print("|---|---|---|")
    for entered, name in ((False, "warm start forked by the launcher (a new interpreter per spare)"),
                          (True, "entered warm start (a template's copy per spare)")):
        print(f"| {name} | {statistics.median(children[entered]):.2f} ms | {statistics.median(own[entered]):.2f} ms |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--uid", type=int, default=74100)
    ap.add_argument("--check", action="store_true", help="run a probe of the entered program's privileges instead")
    ap.add_argument("--runner", action="store_true", help="LiveCode's runner, entered warm starts on and off")
    args = ap.parse_args()
    ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if args.runner:
        runner_sides(args.rounds, args.runs, args.uid)
        return
    cache = Path(tempfile.mkdtemp(prefix="lc-enter-cache-"))
    cache.chmod(0o700)
    bpf = build_filter(cache)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
    tpl = Template(args.uid, bpf, env)
    if args.check:
        p, pid = sandbox(args.uid)
        try:
            print(tpl.run(pid, PROBE))
        finally:
            p.kill()
            p.wait()
            tpl.close()
        return
    enter: list[float] = []
    enter_self: list[float] = []
    start: list[float] = []
    enter_wall: list[float] = []
    try:
        for rnd in range(args.rounds):
            for side in ("enter", "start") if rnd % 2 == 0 else ("start", "enter"):
                for _ in range(args.runs):
                    if side == "enter":
                        p, pid = sandbox(args.uid)
                        t0 = time.perf_counter()
                        got = tpl.run(pid, CODE)
                        enter_wall.append((time.perf_counter() - t0) * 1000)
                        assert got["status"] == 0, got
                        enter.append(got["self_ms"] + got["child_ms"])
                        enter_self.append(got["self_ms"])
                        p.kill()
                        p.wait()
                    else:
                        c0 = _cpu_children_ms()
                        done = subprocess.run(bwrap_argv(["/usr/bin/python3", "-E", "-s", "-c", CODE]),
                                              preexec_fn=_as(args.uid), capture_output=True)
                        assert done.stdout == b"hi\n", done
                        time.sleep(0.002)
                        _reap_orphans()
                        c1 = _cpu_children_ms()
                        subprocess.run(bwrap_argv(["/usr/bin/true"]), preexec_fn=_as(args.uid), check=True)
                        time.sleep(0.002)
                        _reap_orphans()
                        start.append((c1 - c0) - (_cpu_children_ms() - c1))
                    _reap_orphans()
    finally:
        tpl.close()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end")
    print("| a Python hello world's own process in a fresh sandbox (medians) | CPU |")
    print("|---|---|")
    print(f"| a new interpreter started in it (`python3 -E -s -c`, the host's site hooks) | "
          f"{statistics.median(start):.2f} ms |")
    print(f"| a started one entering it (fork, setns, drops, seccomp, the program, exit) | "
          f"{statistics.median(enter):.2f} ms (the template's own share {statistics.median(enter_self):.2f} ms; "
          f"request to exit status {statistics.median(enter_wall):.2f} ms of wall time) |")


if __name__ == "__main__":
    sys.exit(main())
