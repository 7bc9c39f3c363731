"""What a sandbox forked from a template ("zygote") would cost per run: a prototype, measured
against today's runner. Not production code, never a pass/fail test.

    .venv/bin/python -m bench.bench_zygote [--rounds 6] [--runs 20]     # the four sides, alternated
    .venv/bin/python -m bench.bench_zygote --attacks                     # which protections it keeps

The template: a process (root) in a mount namespace of its own, pivoted into a read-only view
built like a bwrap run's (/usr, /etc and /dev prepared by LiveCode's view.py, the Python site
hooks of pysite.py, /proc's masks of procfs.py, the synthesized /proc files), in a nursery
network namespace (`tcp_child_ehash_entries` 128, as spawner.py's), that then execs
`/usr/bin/python3 -E -s -c "__import__('_zygote').serve(3, ...)"` with the run's environment
(no secret: the same variables every Python run gets) and imports nothing else. `_zygote` is
bench/zygote_helper.c, built with gcc at run time into a temporary directory. Per run it forks
(clone with new mount, pid, net, ipc and uts namespaces) a pid 1 that joins the run's cgroups
(made by LiveCode's cgroups.py), makes its cgroup namespace, tmpfs work dir, /tmp and /dev/shm, a
fresh /proc with the masks, sets the rlimits, drops to the slot uid with no capabilities and
no_new_privs, loads LiveCode's seccomp filter (seccomp.py's BPF), forks the program (pid 2),
which gets the run's pipes as 0/1/2 and nothing else, resets Python's visible state (argv,
orig_argv, path[0], os.environ, a fresh __main__) and runs the source as /sandbox/work/main.py.
See docs/performance.md "2026-12-06 (zyg: ...)".

Sides, alternated within each round so the machine's load falls on all of them: the zygote,
today's runner cold (pool_size=0), today's runner with a pool of 2 (warm starts), and a plain
`/usr/bin/python3 -c "print('hi')"`. CPU: getrusage of the sandbox's processes (the template's
own and its reaped children's for the zygote; RUSAGE_CHILDREN for the runners and the plain
runs) plus this process's own (the host side: the runner's Python, or the zygote's client), and
/proc/stat's busy time of the whole machine minus the rate measured idle in the same round (it
sees the kworkers' network namespace teardown; other load on the machine shows up in it too).
Needs root, gcc, python3-dev headers, libseccomp-dev, cgroup v1 or v2. Uids 74000-74015.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from concurrent.futures import wait
from dataclasses import dataclass, field
from pathlib import Path

HELPER_C = Path(__file__).with_name("zygote_helper.c")
UID_COLD, UID_POOL, UID_ZYG, UID_ATTACK = 74000, 74004, 74008, 74012  # 4 slots each
PYTHON = "/usr/bin/python3"
WORK = "/sandbox/work"
# What every sandboxed Python run gets today (runner.BASE_ENV, HOME, languages.toml's [python.env]).
RUN_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp",
    "HOME": WORK, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": "/tmp", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    "NUMEXPR_MAX_THREADS": "1",
}  # fmt: skip
TEMPLATE_CODE = "__import__('_zygote').serve(3, '/.zyg/config')"
# --freeze: the template moves every object it has to the GC's permanent generation first, so that the
# runs' collections (the interpreter's exit does one) do not write into the template's pages.
FREEZE_CODE = "__import__('gc').freeze(); __import__('sys').modules.pop('gc'); " + TEMPLATE_CODE
HELLO = "print('hi')"

# Flags of a run (zygote_helper.c)
F_NET, F_PROC_SUBSET, F_NO_SECCOMP, F_FAST_EXIT, F_USERNS = 1, 2, 4, 8, 16
HEADER = struct.Struct("=4I2Q8i8Q8Q4I")
# Variants measured with --variants (each loses something; see the docs): /proc with subset=pid (no
# host-wide files at all, so no masks), the program's interpreter ended by _exit after its atexit
# functions and a flush (no teardown), and no network namespace of its own (the template's, shared).
VARIANTS = {
    "zygote, /proc subset=pid": F_NET | F_PROC_SUBSET,
    "zygote, fast exit": F_NET | F_FAST_EXIT,
    "zygote, no netns of its own": 0,
    "zygote, a user namespace (uid 1000 inside)": F_NET | F_USERNS,
}
FROZEN = "zygote, gc.freeze() in the template"
A_STEPS = ("start", "cgroup join + cgroupns", "hostname + lo up", "tmpfs /sandbox, dirs, /dev/shm",
           "mount /proc", "/proc masks + 3 files", "rlimits, setsid, caps, uids, no_new_privs", "seccomp",
           "fork the program (A's side)")  # fmt: skip
B_STEPS = ("start", "fds, cwd, main.py", "Python's state reset", "compile")
NA, NB = len(A_STEPS), len(B_STEPS)

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
SYS_PIVOT_ROOT = 155  # x86-64


def _ms(ru: resource.struct_rusage) -> float:
    return (ru.ru_utime + ru.ru_stime) * 1000


def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]  # all but idle and iowait


# -- the template's set-up (a process of its own, root, ends in exec) ------------------------


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def template_setup(cfg_path: str) -> None:
    """Build the view in a private mount namespace, pivot into it, exec the template's Python."""
    from livecode.sandbox import procfs, pysite
    from livecode.sandbox.view import _build, etc_sources

    cfg = json.loads(Path(cfg_path).read_text())
    libc = _libc()
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")

    def mount(src: str | None, dst: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        _check(
            libc.mount(
                src.encode() if src else None, dst.encode(), fstype.encode() if fstype else None, flags,
                data.encode() if data else None,
            ),
            f"mount {src} {dst}",
        )  # fmt: skip

    def bind_ro(src: str, dst: str, dev: bool = False) -> None:
        mount(src, dst, None, MS_BIND | MS_REC)
        mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | (0 if dev else MS_NODEV))

    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # The nursery network namespace (spawner.py): each run's own one gets a small TCP hash table.
    with contextlib.suppress(OSError):
        Path("/proc/sys/net/ipv4/tcp_child_ehash_entries").write_text("128")
    root = cfg["root"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID, "mode=0755,size=65536k")  # not nodev: /dev's nodes are on it
    r = Path(root)
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            os.symlink(os.readlink(top), r / top[1:])
        elif os.path.isdir(top):
            (r / top[1:]).mkdir()
            bind_ro(top, str(r / top[1:]))
    zyg = r / ".zyg"
    zyg.mkdir(mode=0o755)
    view = _build(zyg, etc_sources(), {"passwd": cfg["passwd"].encode(), "group": cfg["group"].encode()})
    (r / "etc").mkdir()
    bind_ro(view.etc, str(r / "etc"))
    (r / "dev").mkdir()
    if view.dev:
        bind_ro(view.devdir, str(r / "dev"), dev=True)
    else:
        raise OSError("device nodes unusable here (nodev?): the prototype needs them")
    for d in ("proc", "sandbox", ".old"):
        (r / d).mkdir()
    os.symlink("/sandbox/tmp", r / "tmp")
    (zyg / "proc").mkdir()
    (zyg / "proc" / "meminfo").write_bytes(procfs.meminfo(cfg["memory_mb"] * 1024 * 1024))
    (zyg / "proc" / "stat").write_bytes(procfs.proc_stat())
    (zyg / "proc" / "loadavg").write_bytes(procfs.LOADAVG)
    (zyg / "hooks").mkdir()
    for i, (dest, data) in enumerate(pysite.SiteHooks().files()):
        (zyg / "hooks" / str(i)).write_bytes(data)
        bind_ro(str(zyg / "hooks" / str(i)), str(r / dest.lstrip("/")))
    shutil.copy(cfg["module"], zyg / "_zygote.so")
    conf = []
    args = list(procfs.mask_args())
    for i, a in enumerate(args):
        if a == "--ro-bind" and args[i + 1] == "/dev/null":
            conf.append(f"mask_file {args[i + 2]}")
        elif a == "--tmpfs":
            conf.append(f"mask_dir {args[i + 1]}")
    for name in ("meminfo", "stat", "loadavg"):
        conf.append(f"bind /.zyg/proc/{name} /proc/{name}")
    if cfg.get("seccomp"):
        shutil.copy(cfg["seccomp"], zyg / "filter.bpf")
        conf.append("seccomp /.zyg/filter.bpf")
    (zyg / "config").write_text("\n".join(conf) + "\n")
    for p in [zyg / "proc", zyg / "hooks", *(zyg / "proc").iterdir(), *(zyg / "hooks").iterdir(), zyg / "config",
              zyg / "_zygote.so", *([zyg / "filter.bpf"] if cfg.get("seccomp") else [])]:  # fmt: skip
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    _check(libc.syscall(SYS_PIVOT_ROOT, root.encode(), str(r / ".old").encode()), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID)
    os.chdir("/.zyg")
    ctl = cfg["ctl_fd"]
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    if ctl != 3:
        os.dup2(ctl, 3)
    os.closerange(4, 65536)  # stderr (2) stays: the template's diagnostics, a log file of the bench's
    os.set_inheritable(3, True)
    os.execve(PYTHON, [PYTHON, "-E", "-s", "-c", FREEZE_CODE if cfg.get("freeze") else TEMPLATE_CODE], RUN_ENV)


# -- the host's side: the template and one run ------------------------------------------------


def build_module(tmp: Path) -> Path:
    out = tmp / "_zygote.so"
    inc = sysconfig.get_paths()["include"]
    if not Path(inc, "Python.h").exists():
        inc = "/usr/include/python3.11"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", f"-I{inc}", "-o", str(out), str(HELPER_C)], check=True)
    return out


@dataclass
class ZygRun:
    status: int
    stdout: bytes
    stderr: bytes
    wall_ms: float
    clone_ms: float  # the template's CPU for the clone (its page tables copied)
    a_steps: list[float]  # A's thread CPU at each step, ms
    b_steps: list[float]
    b_cpu_ms: float  # the program's process, all of it (wait4)
    a_cpu_ms: float
    cg_cpu_ms: float | None  # the run's cgroup (A and B, from the join)
    host_pid: int = 0
    b_minflt: int = 0  # the program's minor page faults (copy-on-write of the template's pages among them)
    peak_kb: int | None = None  # the run's memory cgroup's peak (what its memory limit is held against)


@dataclass
class Limits:
    memory_mb: int = 256
    max_processes: int = 64
    disk_kb: int = 65536
    max_file_kb: int = 10240
    max_open_files: int = 256
    cpu_s: int = 30

    def rlimits(self) -> list[tuple[int, int, int]]:
        fsize = self.max_file_kb * 1024
        nproc = self.max_processes + 2
        return [
            (resource.RLIMIT_CORE, 0, 0), (resource.RLIMIT_FSIZE, fsize, fsize),
            (resource.RLIMIT_NOFILE, self.max_open_files, self.max_open_files), (resource.RLIMIT_NPROC, nproc, nproc),
            (resource.RLIMIT_CPU, self.cpu_s, self.cpu_s + 1),
        ]  # fmt: skip


class Zygote:
    def __init__(self, tmp: Path, module: Path, seccomp: Path | None, uid_base: int, slots: int, memory_mb: int,
                 freeze: bool = False):  # fmt: skip
        from livecode.sandbox.cgroups import CgroupHost

        self.tmp = tmp
        self.uid_base = uid_base
        self.slots = slots
        self._next = 0
        self._ctl_lock = threading.Lock()  # a request and its reply, for runs from several threads
        self.cgroups = CgroupHost.detect()
        tmp.mkdir(mode=0o700, parents=True)
        root = tmp / "root"
        root.mkdir(mode=0o700)
        uids = range(uid_base, uid_base + slots)
        cfg = {
            "root": str(root), "module": str(module), "seccomp": str(seccomp) if seccomp else None,
            "memory_mb": memory_mb, "freeze": freeze,
            "passwd": "".join(f"sandbox:x:{u}:{u}:sandbox:{WORK}:/bin/sh\n" for u in uids),
            "group": "".join(f"sandbox:x:{u}:\n" for u in uids),
        }  # fmt: skip
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cfg["ctl_fd"] = theirs.fileno()
        (tmp / "template.json").write_text(json.dumps(cfg))
        self.log = open(tmp / "template.log", "ab")  # noqa: SIM115
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(sys.path)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_zygote", "--template-setup", str(tmp / "template.json")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log, pass_fds=[theirs.fileno()],
            env=env, cwd=str(Path(__file__).resolve().parent.parent),
        )  # fmt: skip
        theirs.close()
        self.stats()  # answered once serve() runs: the template is up

    def stats(self) -> tuple[float, float]:
        """The template's own CPU and its reaped children's (every run's processes), ms."""
        with self._ctl_lock:
            self.ctl.send(b"S")
            got = self.ctl.recv(16)
        if len(got) != 16:
            raise RuntimeError(f"the template is gone: {self._log_tail()}")
        s, c = struct.unpack("=2q", got)
        return s / 1000, c / 1000

    def _log_tail(self) -> str:
        return (self.tmp / "template.log").read_bytes()[-2000:].decode("utf-8", "replace")

    def run(self, source: str, limits: Limits | None = None, flags: int = F_NET, args: tuple[str, ...] = (),
            env: dict[str, str] | None = None, slot: int | None = None, timeout_s: float = 30.0,
            on_start: object = None) -> ZygRun:  # fmt: skip
        limits = limits or Limits()
        if slot is None:
            slot, self._next = self._next, (self._next + 1) % self.slots
        uid = self.uid_base + slot
        t0 = time.perf_counter()
        cg = self.cgroups.create(slot)
        ours: list[int] = []
        theirs: list[int] = []
        try:
            cg.set_limits(limits.memory_mb * 1024 * 1024, limits.max_processes + 2)
            procs = cg.open_procs_fds()
            theirs += procs
            pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(5)]  # stdin, stdout, stderr, result, stats
            (in_r, in_w), (out_r, out_w), (err_r, err_w), (res_r, res_w), (st_r, st_w) = pipes
            ours += [in_w, out_r, err_r, res_r, st_r]
            theirs += [in_r, out_w, err_w, res_w, st_w]
            rl = limits.rlimits()
            pad = 8 - len(rl)
            envb = b"".join(f"{k}={v}".encode() + b"\0" for k, v in (env or RUN_ENV).items())
            argvb = b"".join(a.encode() + b"\0" for a in args)
            src = source.encode()
            head = HEADER.pack(
                uid, flags, len(procs), len(rl), limits.disk_kb * 1024, min(limits.disk_kb, 16384) * 1024,
                *[r for r, _, _ in rl], *([0] * pad), *[s for _, s, _ in rl], *([0] * pad),
                *[h for _, _, h in rl], *([0] * pad), len(envb), len(argvb), len(src), 0,
            )  # fmt: skip
            with self._ctl_lock:
                socket.send_fds(self.ctl, [b"R" + head + envb + argvb + src], [in_r, out_w, err_w, res_w, st_w, *procs])
                reply = self.ctl.recv(16)
            for fd in theirs:
                os.close(fd)
            theirs.clear()
            if len(reply) != 16:
                raise RuntimeError(f"the template is gone: {self._log_tail()}")
            pid, clone_ns = struct.unpack("=2q", reply)
            if callable(on_start):
                on_start(pid)
            os.close(in_w)
            ours.remove(in_w)
            bufs: dict[int, bytearray] = {fd: bytearray() for fd in (out_r, err_r, res_r, st_r)}
            open_fds = set(bufs)
            deadline = time.monotonic() + timeout_s
            while open_fds:
                left = deadline - time.monotonic()
                if left <= 0:
                    cg.kill_all()
                    deadline = time.monotonic() + 5
                ready, _, _ = select.select(list(open_fds), [], [], max(left, 0.1))
                for fd in ready:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        bufs[fd] += chunk
                    else:
                        open_fds.discard(fd)
            wall = (time.perf_counter() - t0) * 1000
            res = bytes(bufs[res_r])
            status, b_us, a_ns, minflt = struct.unpack("=4q", res) if len(res) == 32 else (-1, 0, 0, 0)
            a_steps, b_steps = [0.0] * NA, [0.0] * NB
            st = bytes(bufs[st_r])
            while st:
                if st[:1] == b"A":
                    vals = struct.unpack(f"={2 * NA}q", st[1 : 1 + 16 * NA])
                    a_steps = [v / 1e6 for v in vals[:NA]]
                    st = st[1 + 16 * NA :]
                elif st[:1] == b"B":
                    vals = struct.unpack(f"={2 * NB}q", st[1 : 1 + 16 * NB])
                    b_steps = [v / 1e6 for v in vals[:NB]]
                    st = st[1 + 16 * NB :]
                else:
                    break
            peak = cg.peak_kb()
            raw = cg._raw_cpu_ms()  # noqa: SLF001 - whole ms; cpuacct.usage read directly below
            with contextlib.suppress(OSError, KeyError, ValueError):
                raw = int((cg.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e6
            return ZygRun(status, bytes(bufs[out_r]), bytes(bufs[err_r]), wall, clone_ns / 1e6, a_steps, b_steps,
                          b_us / 1000, a_ns / 1e6, raw, pid, minflt, peak)  # fmt: skip
        finally:
            for fd in ours + theirs:
                with contextlib.suppress(OSError):
                    os.close(fd)
            cg.kill_all()  # the run's processes are the template's children: it reaps them
            cg.destroy()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.ctl.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# -- the bench --------------------------------------------------------------------------------


@dataclass
class Side:
    name: str
    cpu: list[float] = field(default_factory=list)  # per run, block means: sandbox's processes
    host: list[float] = field(default_factory=list)  # per run, block means: this process (host side)
    busy: list[float] = field(default_factory=list)  # per run: /proc/stat busy minus the idle rate
    wall: list[float] = field(default_factory=list)  # every run
    minflt: list[float] = field(default_factory=list)  # zygote sides: the program's minor page faults


def _med(v: list[float]) -> float:
    return statistics.median(v) if v else float("nan")


def bench(args: argparse.Namespace, tmp: Path, module: Path, bpf: Path) -> None:
    from bench.common import machine
    from livecode.sandbox import RunRequest, SandboxLimits, get_runner

    zyg = Zygote(tmp / "zyg", module, bpf, UID_ZYG, 4, 256)
    frozen = Zygote(tmp / "zygf", module, bpf, UID_ATTACK, 4, 256, freeze=True) if args.freeze else None
    cold = get_runner("bwrap", work_root=str(tmp / "cw"), cache_dir=str(tmp / "cc"), uid_base=UID_COLD, slots=4,
                      pool_size=0)  # fmt: skip
    pool = get_runner("bwrap", work_root=str(tmp / "pw"), cache_dir=str(tmp / "pc"), uid_base=UID_POOL, slots=4,
                      pool_size=2)  # fmt: skip
    hello = RunRequest("python", HELLO, limits=SandboxLimits())
    names = ["zygote", "runner cold", "runner pool=2", "plain python3 -c"]
    if args.variants:
        names += list(VARIANTS)
    if frozen is not None:
        names.append(FROZEN)
    sides = {n: Side(n) for n in names}
    minflt: list[int] = []
    steps_a: list[list[float]] = []
    steps_b: list[list[float]] = []
    clone: list[float] = []
    b_total: list[float] = []
    a_total: list[float] = []
    cg_cpu: list[float] = []
    idle_rates: list[float] = []
    hz = os.sysconf("SC_CLK_TCK")

    def settle(runner: object) -> None:
        fin = getattr(runner, "_finishing", None)
        if fin:
            wait(list(fin), timeout=10)

    def one(side: str) -> None:
        if side in VARIANTS or side == FROZEN:
            r = (frozen if side == FROZEN else zyg).run(HELLO, flags=VARIANTS.get(side, F_NET))  # type: ignore[union-attr]
            if r.stdout != b"hi\n":
                raise RuntimeError(f"{side} run: {r}")
            sides[side].wall.append(r.wall_ms)
            sides[side].minflt.append(r.b_minflt)
            return
        if side == "zygote":
            r = zyg.run(HELLO)
            if r.stdout != b"hi\n":
                raise RuntimeError(f"zygote run: {r}")
            minflt.append(r.b_minflt)
            sides[side].minflt.append(r.b_minflt)
            steps_a.append(r.a_steps)
            steps_b.append(r.b_steps)
            clone.append(r.clone_ms)
            b_total.append(r.b_cpu_ms)
            a_total.append(r.a_cpu_ms)
            if r.cg_cpu_ms is not None:
                cg_cpu.append(r.cg_cpu_ms)
            sides[side].wall.append(r.wall_ms)
            return
        t0 = time.perf_counter()
        if side == "plain python3 -c":
            out = subprocess.run([PYTHON, "-c", HELLO], capture_output=True, check=True).stdout
        else:
            out = (cold if side == "runner cold" else pool).run(hello).stdout.encode()
        sides[side].wall.append((time.perf_counter() - t0) * 1000)
        if out != b"hi\n":
            raise RuntimeError(f"{side}: {out!r}")

    try:
        cold.check()
        pool.check()
        for _ in range(3):  # warm-up: caches, views, the pool's spares
            for name in sides:
                one(name)
        settle(cold)
        settle(pool)
        time.sleep(0.5)
        order = list(sides)
        for rnd in range(args.rounds):
            b0, t0 = _busy_jiffies(), time.perf_counter()
            time.sleep(args.idle_s)
            idle_rates.append((_busy_jiffies() - b0) * 1000 / hz / ((time.perf_counter() - t0) * 1000))
            k = rnd % len(order)
            rot = order[k:] + order[:k]
            for name in rot if rnd % 2 == 0 else list(reversed(rot)):
                s = sides[name]
                zz = frozen if name == FROZEN else zyg
                z0 = zz.stats() if name.startswith("zygote") else (0.0, 0.0)  # type: ignore[union-attr]
                c0, h0 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
                b0, t0 = _busy_jiffies(), time.perf_counter()
                for _ in range(args.runs):
                    one(name)
                settle(cold if name == "runner cold" else pool)
                if name == "runner pool=2":
                    time.sleep(0.3)  # the spares for the next block are built in the background: counted here
                if name.startswith("zygote"):
                    z1 = zz.stats()  # type: ignore[union-attr]
                    cpu = (z1[0] + z1[1] - z0[0] - z0[1]) / args.runs
                else:
                    cpu = (_ms(resource.getrusage(resource.RUSAGE_CHILDREN)) - _ms(c0)) / args.runs
                dt = (time.perf_counter() - t0) * 1000
                busy = (_busy_jiffies() - b0) * 1000 / hz - idle_rates[-1] * dt
                s.cpu.append(cpu)
                s.host.append((_ms(resource.getrusage(resource.RUSAGE_SELF)) - _ms(h0)) / args.runs)
                s.busy.append(busy / args.runs)
            print(
                f"round {rnd + 1}: "
                + ", ".join(f"{n} {sides[n].cpu[-1]:.2f}+{sides[n].host[-1]:.2f} ms" for n in order)
                + f"; idle busy {idle_rates[-1] * 100:.0f}%; load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        tp = throughput(args, zyg, cold, pool, hello) if args.tp_rounds else {}
    finally:
        for r in (cold, pool):
            r.close()
        zyg.close()
        if frozen is not None:
            frozen.close()

    print(f"\nmachine: {machine()}; load average at the end {os.getloadavg()[0]:.1f}; "
          f"{args.rounds} rounds x {args.runs} runs a side; idle busy {min(idle_rates) * 100:.0f}-"
          f"{max(idle_rates) * 100:.0f}% of one CPU")  # fmt: skip
    plain = _med(sides["plain python3 -c"].cpu)
    print("| side | sandbox's processes CPU/run (rounds' medians; min-max) | + host process | total (x plain) "
          "| /proc/stat busy/run, idle rate removed | wall median (p90) | program's minor faults |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for s in sides.values():
        tot = _med(s.cpu) + _med(s.host)
        w = sorted(s.wall)
        print(f"| {s.name} | {_med(s.cpu):.2f} ({min(s.cpu):.2f}-{max(s.cpu):.2f}) | {_med(s.host):.2f} | "
              f"{tot:.2f} ({tot / plain:.2f}x) | {_med(s.busy):.2f} | {_med(s.wall):.2f} "
              f"({w[int(0.9 * (len(w) - 1))]:.2f}) ms | {_med(s.minflt) if s.minflt else '':} |")  # fmt: skip
    if tp:
        print(
            f"\nthroughput, hello worlds with 2 at once ({args.tp_rounds} alternated rounds"
            f" of {args.tp_runs} runs a side):"
        )
        print("| side | runs/s (rounds) | median | share of plain runs/s |")
        print("|---|---|---|---|")
        base = _med(tp["plain python3 -c"])
        for name, v in tp.items():
            print(f"| {name} | {', '.join(f'{x:.0f}' for x in v)} | {_med(v):.0f} | {_med(v) / base * 100:.0f} % |")
    print("\nthe zygote's run, CPU per step (medians over every run, ms):")
    print(f"| template: clone (page tables copied) | {_med(clone):.3f} |")
    da = [[r[i] - r[i - 1] for r in steps_a] for i in range(1, NA)]
    for i, name in enumerate(A_STEPS[1:]):
        print(f"| A (pid 1): {name} | {_med(da[i]):.3f} |")
    print(f"| A: start (thread clock at its first line) | {_med([r[0] for r in steps_a]):.3f} |")
    a_rest = [a - r[-1] for a, r in zip(a_total, steps_a, strict=True)]
    print(f"| A: waiting, reporting, exit (rest of A's CPU) | {_med(a_rest):.3f} |")
    db = [[r[i] - r[i - 1] for r in steps_b] for i in range(1, NB)]
    for i, name in enumerate(B_STEPS[1:]):
        print(f"| B (the program, pid 2): {name} | {_med(db[i]):.3f} |")
    print(f"| B: start (after fork) | {_med([r[0] for r in steps_b]):.3f} |")
    b_rest = [b - r[-1] for b, r in zip(b_total, steps_b, strict=True)]
    print(f"| B: the program itself and the interpreter's exit | {_med(b_rest):.3f} |")
    print(f"| B: minor page faults (count) | {_med([float(m) for m in minflt]):.0f} |")
    print(f"| A + B (wait4 + A's clock) | {_med([a + b for a, b in zip(a_total, b_total, strict=True)]):.3f} |")
    print(f"| the run's cgroup (cpuacct, from the join) | {_med(cg_cpu):.3f} |")


def throughput(
    args: argparse.Namespace, zyg: Zygote, cold: object, pool: object, hello: object
) -> dict[str, list[float]]:
    """Runs/s with two at once (the issue's throughput target: 2 cores), alternated in rounds."""
    names = ["zygote", "runner cold", "runner pool=2", "plain python3 -c"]
    if args.variants:
        names.append("zygote, fast exit")
    out: dict[str, list[float]] = {n: [] for n in names}

    def worker(name: str, slot: int, left: list[int], lock: threading.Lock) -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            if name.startswith("zygote"):
                r = zyg.run(HELLO, flags=VARIANTS.get(name, F_NET), slot=slot)
                ok = r.stdout == b"hi\n"
            elif name == "plain python3 -c":
                ok = subprocess.run([PYTHON, "-c", HELLO], capture_output=True).stdout == b"hi\n"
            else:
                ok = (cold if name == "runner cold" else pool).run(hello).stdout == "hi\n"  # type: ignore[attr-defined]
            if not ok:
                raise RuntimeError(f"{name}: a run failed")

    for rnd in range(args.tp_rounds):
        for name in names if rnd % 2 == 0 else list(reversed(names)):
            left, lock = [args.tp_runs], threading.Lock()
            t0 = time.perf_counter()
            ths = [threading.Thread(target=worker, args=(name, i, left, lock)) for i in range(2)]
            for t in ths:
                t.start()
            for t in ths:
                t.join()
            out[name].append(args.tp_runs / (time.perf_counter() - t0))
            for r in (cold, pool):
                fin = getattr(r, "_finishing", None)
                if fin:
                    wait(list(fin), timeout=10)
            time.sleep(0.3)
    return out


# -- the protections -------------------------------------------------------------------------

ATTACKS: dict[str, str] = {
    "host processes invisible": """
import os
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
try:
    os.kill(TEMPLATE_PID, 0); hit = 'template signalable'
except ProcessLookupError: hit = 'no such pid'
except PermissionError: hit = 'EPERM'
print(pids, os.getpid(), os.getppid(), hit)
ok = pids == [1, 2] and os.getpid() == 2 and hit != 'template signalable'
""",
    "no writes outside the run's tmpfs (/sandbox: work/, /tmp) and /dev/shm": """
import os
bad = []
for p in ['/usr/x', '/etc/x', '/x', '/.zyg/x', '/dev/x', '/proc/x', '/proc/sys/kernel/hostname',
          '/usr/lib/python3/dist-packages/x']:
    try:
        open(p, 'w').write('x'); bad.append(p)
    except OSError: pass
for p in ['/etc/passwd', '/dev/null']:
    try: os.chmod(p, 0o777); bad.append('chmod ' + p)
    except OSError: pass
open('/sandbox/work/f', 'w').write('x'); open('/tmp/f', 'w').write('x'); open('/dev/shm/f', 'w').write('x')
print(bad)
ok = not bad
""",
    "no network (seccomp: AF_UNIX only)": """
import socket, errno
res = {}
for fam in ('AF_INET', 'AF_INET6', 'AF_NETLINK', 'AF_PACKET'):
    kind = socket.SOCK_RAW if fam == 'AF_PACKET' else socket.SOCK_DGRAM
    try: socket.socket(getattr(socket, fam), kind); res[fam] = 'allowed'
    except OSError as e: res[fam] = errno.errorcode[e.errno]
socket.socket(socket.AF_UNIX)
print(res, open('/proc/net/dev').read().split('\\n')[2:4])
ok = all(v != 'allowed' for v in res.values())
""",
    "/proc masks (LiveCode's procfs.py)": """
import os
c = open('/proc/cmdline').read(); b = os.listdir('/proc/bus'); m = open('/proc/meminfo').readline()
s = open('/proc/stat').readline(); l = open('/proc/loadavg').read(); k = open('/proc/sys/kernel/random/boot_id').read()
print(repr(c), b, m.split(), s.split()[:3], l.split()[:2], repr(k), os.cpu_count())
ok = c == '' and b == [] and m.split()[1] == str(MEM_KB) and l.startswith('0.00') and k == ''
""",
    "slot uid, no capabilities, no_new_privs, seccomp": """
import os, ctypes
st = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)
libc = ctypes.CDLL(None, use_errno=True)
un = libc.unshare(0x10000000); un_err = ctypes.get_errno()
mnt = libc.mount(b'none', b'/tmp', b'tmpfs', 0, None); mnt_err = ctypes.get_errno()
caps = [st[k].strip() for k in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb')]
print(os.getresuid(), os.getresgid(), os.getgroups(), caps, st['NoNewPrivs'].strip(), st['Seccomp'].strip(),
      un, un_err, mnt, mnt_err)
ok = (os.getresuid() == (SLOT_UID,) * 3 and os.getresgid() == (SLOT_UID,) * 3 and set(caps) == {'0000000000000000'}
      and st['NoNewPrivs'].strip() == '1' and st['Seccomp'].strip() == '2' and un == -1 and mnt == -1)
""",
    "only fds 0, 1, 2; pid 1 (the reaper) unreadable": """
import os
fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))
res = {}
for p in ('/proc/1/environ', '/proc/1/mem', '/proc/1/maps'):
    try: open(p, 'rb').read(1); res[p] = 'read'
    except OSError as e: res[p] = type(e).__name__
try: os.listdir('/proc/1/fd'); res['/proc/1/fd'] = 'listed'
except OSError as e: res['/proc/1/fd'] = type(e).__name__
print(fds, res)
ok = fds == [0, 1, 2, 3] and all(v not in ('read', 'listed') for v in res.values())
""",
    "nothing of an earlier run in memory": """
import re, os
pat = re.compile(rb'PREVIOUS-RUN-SECRET-[0-9a-f]{8}')  # the earlier run's marker had 8 random hex digits
control = ('CONTROL' + '-MARK-' + os.urandom(4).hex()).encode()  # ours: the scan must find it
ctl = re.compile(rb'CONTROL-MARK-[0-9a-f]{8}')
hits = 0; scanned = 0; found_control = 0
for line in open('/proc/self/maps'):
    m = re.match(r'([0-9a-f]+)-([0-9a-f]+) (r...)', line)
    if not m or 'vvar' in line or 'vsyscall' in line: continue
    a, b = int(m[1], 16), int(m[2], 16)
    try:
        with open('/proc/self/mem', 'rb') as f:
            f.seek(a); data = f.read(b - a)
    except (OSError, ValueError, OverflowError): continue
    scanned += len(data); hits += len(pat.findall(data)); found_control += len(ctl.findall(data))
print('scanned', scanned // 1024, 'KiB; earlier run markers', hits, '; own control marker found', found_control)
ok = hits == 0 and found_control > 0
""",
    "memory limit holds (64 MiB, asks 256)": """
x = []
for _ in range(256):
    x.append(bytearray(1 << 20))
print('allocated all')
ok = False
""",
    "process limit holds (16)": """
import os, time
n = 0
try:
    for _ in range(64):
        if os.fork() == 0:
            time.sleep(5); os._exit(0)
        n += 1
except OSError as e:
    print('fork refused after', n, e.strerror)
ok = n < 20
""",
    "disk limit holds (4 MiB)": """
try:
    with open('/tmp/big', 'wb') as f:
        for _ in range(16): f.write(b'x' * (1 << 20))
    ok = False
except OSError as e:
    print(e.strerror); ok = True
""",
}


def attacks(tmp: Path, module: Path, bpf: Path) -> None:
    zyg = Zygote(tmp / "att", module, bpf, UID_ATTACK, 4, 64)
    small = Limits(memory_mb=64, max_processes=16, disk_kb=4096, max_file_kb=8192)
    rows: list[tuple[str, str, str]] = []
    try:
        for name, body in ATTACKS.items():
            if name == "nothing of an earlier run in memory":
                # Right before it, a run whose message is longer than the test's, its marker at the end:
                # only the template's zeroing of its receive buffer keeps it from the next runs.
                zyg.run("#" + "x" * 16384 + "\ns = 'PREVIOUS' '-RUN-SECRET-%s'; print(len(s))" % os.urandom(4).hex(),  # noqa: UP031
                        small)  # fmt: skip
            src = body.replace("TEMPLATE_PID", str(zyg.proc.pid)).replace("SLOT_UID", str(zyg.uid_base))
            src = (
                src.replace("MEM_KB", str(64 * 1024))
                + "\nimport sys; sys.stdout.flush(); print('PASS' if ok else 'FAIL')\n"
            )
            r = zyg.run(src, small, slot=0)
            out = r.stdout.decode("utf-8", "replace").strip()
            last = out.splitlines()[-1] if out else ""
            if name.startswith("memory"):
                verdict = "PASS" if r.status & 0x7F == signal.SIGKILL and "allocated all" not in out else "FAIL"
            else:
                verdict = last if last in ("PASS", "FAIL") else "FAIL"
            detail = (out.splitlines()[0] if out else "") + (
                f" / stderr: {r.stderr.decode()[-200:]}" if r.stderr else ""
            )
            rows.append((name, verdict, f"status {r.status:#x}; {detail[:300]}"))
        # The same uid/capability checks with a user namespace of its own (F_USERNS): uid 1000 inside.
        body = ATTACKS["slot uid, no capabilities, no_new_privs, seccomp"].replace("SLOT_UID", "1000")
        body += "\nprint(open('/proc/self/uid_map').read().split(), os.stat('/sandbox/work').st_uid)\n"
        r = zyg.run(body + "\nprint('PASS' if ok else 'FAIL')\n", small, flags=F_NET | F_USERNS, slot=0)
        out = r.stdout.decode("utf-8", "replace").strip().splitlines()
        rows.append(("the same, with a user namespace (uid 1000 inside)", out[-1] if out else "FAIL",
                     f"status {r.status:#x}; {' / '.join(out[:-1])}{r.stderr.decode()[-200:]}"))  # fmt: skip
        # Another run's files and processes: run X sleeps with a file in /tmp while run Y looks.
        x_started = threading.Event()
        x_res: list[ZygRun] = []
        th = threading.Thread(
            target=lambda: x_res.append(zyg.run(
                "import os, time\nopen('/tmp/x-secret', 'w').write('x')\nprint(os.getpid(), flush=True)\n"
                "if os.fork() == 0:\n    os.setsid(); time.sleep(60); os._exit(0)\ntime.sleep(1.5)\nprint('X done')",
                small, slot=1, on_start=lambda pid: x_started.set())),
        )  # fmt: skip
        th.start()
        x_started.wait(5)
        time.sleep(0.3)
        y = zyg.run(
            "import os\nprint(sorted(os.listdir('/proc')[:0] + [p for p in os.listdir('/proc') if p.isdigit()]),"
            " os.listdir('/tmp'), os.listdir('/sandbox/work'))",
            small, slot=2,
        )  # fmt: skip
        th.join()
        ys = y.stdout.decode().strip()
        ok = ys.startswith("['1', '2']") and "x-secret" not in ys
        rows.append(("another run's files and processes invisible", "PASS" if ok else "FAIL", ys))
        time.sleep(0.2)
        left = subprocess.run(["ps", "-eo", "uid,pid,cmd"], capture_output=True, text=True).stdout
        mine = [ln for ln in left.splitlines() if ln.strip().startswith(str(UID_ATTACK + 1))]
        rows.append(("a run's background process ends with it", "PASS" if not mine else "FAIL",
                     f"processes of uid {UID_ATTACK + 1} after the run: {mine}"))  # fmt: skip
        # What a program sees that differs between two runs of one template (and of today's runner).
        probe = (
            "import sys; print(hash('livecode'), hex(id(None)), "
            "open('/proc/self/cmdline','rb').read().split(b'\\0')[:5])"
        )
        p1, p2 = zyg.run(probe, small).stdout.decode().strip(), zyg.run(probe, small).stdout.decode().strip()
        rows.append(("hash seed / ASLR fresh per run", "PASS" if p1.split()[:2] != p2.split()[:2] else "NOT KEPT",
                     f"{p1} || {p2}"))  # fmt: skip
        hello = zyg.run(HELLO, small)
        rows.append(("memory charged to a hello world's cgroup", "info", f"{hello.peak_kb} KiB (the template's pages "
                     "are charged to the template until a run writes them)"))  # fmt: skip
        unflushed = "f = open(1, 'w', closefd=False, buffering=8192); f.write('unflushed at exit\\n')"
        n1 = zyg.run(unflushed, small).stdout
        n2 = zyg.run(unflushed, small, flags=F_NET | F_FAST_EXIT).stdout
        rows.append(("an unclosed file's buffer at the exit (normal / fast exit)", "info", f"{n1!r} / {n2!r}"))
        tb = zyg.run("def f():\n    1/0\nf()", small)
        rows.append(("traceback as a script's", "info", tb.stderr.decode().replace("\n", " | ")[:300]))
    finally:
        zyg.close()
    print("| protection | verdict | what the program saw |")
    print("|---|---|---|")
    for name, verdict, detail in rows:
        print(f"| {name} | {verdict} | {detail.replace('|', '/')} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--runs", type=int, default=20, help="runs per side per round")
    ap.add_argument("--idle-s", type=float, default=1.0, help="idle time per round, for /proc/stat's background rate")
    ap.add_argument("--attacks", action="store_true", help="run the attack programs instead of the figures")
    ap.add_argument("--variants", action="store_true", help="also the zygote's variants (VARIANTS)")
    ap.add_argument("--freeze", action="store_true", help="also a second template that ran gc.freeze() (FREEZE_CODE)")
    ap.add_argument("--tp-rounds", type=int, default=3, help="throughput rounds (2 runs at once); 0: none")
    ap.add_argument("--tp-runs", type=int, default=60, help="runs per side per throughput round")
    ap.add_argument("--template-setup", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.template_setup:
        template_setup(args.template_setup)
        return
    if os.geteuid() != 0:
        sys.exit("needs root")
    from livecode.sandbox.seccomp import build_filter

    tmp = Path(tempfile.mkdtemp(prefix="lc-zyg-"))
    tmp.chmod(0o711)
    try:
        module = build_module(tmp)
        (tmp / "cache").mkdir(mode=0o700)
        bpf = build_filter(tmp / "cache")
        if args.attacks:
            attacks(tmp, module, bpf)
        else:
            bench(args, tmp, module, bpf)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
