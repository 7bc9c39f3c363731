"""The real sandbox: bubblewrap started as a per-slot unprivileged uid inside a per-run cgroup.

Every stage gets fresh namespaces (user, pid, net, ipc, uts, cgroup), a read-only view of the
toolchains only, and a size-limited tmpfs for its work directory and /tmp that vanishes with it.
Files go in through file descriptors (bwrap --file) or the launcher's pipe; output comes back
through pipes. With a pool (pool.py), run stages take a sandbox that was set up ahead of time.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import logging
import math
import os
import resource
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .cgroups import CgroupHost, RunCgroup
from .hostfs import DEFAULT_LOCK_DIR, OrphanReaper, SlotPool, ensure_private_dir, set_child_subreaper
from .iolimits import SYSTEM_PATHS, IoLimits
from .launcher import build_launcher, encode_message
from .pool import SandboxPool
from .results import read_status, stage_result
from .runner import ARTIFACT_CAP, FileSpec, Runner, Stage, StageResult
from .seccomp import build_filter
from .supervise import StreamSpec, Watch, supervise
from .types import OutputCallback, SandboxLimits, SandboxUnavailable

log = logging.getLogger(__name__)

SANDBOX_UID = 1000  # uid/gid as seen inside; on the host it is uid_base + slot
BOX = "/sandbox"
WORK = f"{BOX}/work"
_PASSWD = f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:{WORK}:/bin/sh\n".encode()
_GROUP = f"sandbox:x:{SANDBOX_UID}:\n".encode()
_SHM_MAX_KB = 16 * 1024  # POSIX shm / semaphores (multiprocessing); /dev itself is read-only
_EXTRA_PIDS = 2  # bwrap's monitor and its pid-1 init live in the run's cgroup too
_LAUNCHER = "/.livecode-launcher"
_PREBUILD_NICE = 10  # building spare sandboxes must not slow down the runs in progress
_DEFAULTS = SandboxLimits()
# Runs the compiler, then streams the artifacts to stdout as a tar; compiler output -> stderr.
_COLLECT = (
    f'"$@" >&2 || exit $?\ncd {WORK} || exit 125\nexec /usr/bin/tar -cf - --no-recursion -- $LIVECODE_ARTIFACTS\n'
)


def _ro_mounts() -> list[str]:
    """Read-only binds of the toolchains and the few /etc files they need, nothing else."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    etc = ["/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives"]
    etc += sorted(glob.glob("/etc/java-*-openjdk"))  # the JDK's conf/ links into here
    for path in etc:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


@dataclass
class Spawned:
    """A started bubblewrap: its slot, cgroup, process and our ends of its pipes."""

    slot: int
    cg: RunCgroup
    proc: subprocess.Popen[bytes]
    stdin_w: int
    out_r: int
    err_r: int
    status_r: int
    sock: socket.socket | None = None  # the launcher's message socket (pooled sandboxes)
    diag_r: int | None = None  # bubblewrap's and the launcher's own stderr (pooled sandboxes)
    result_r: int | None = None  # launcher's exit-status pipe (pooled sandboxes, per run)
    disk_kb: int = 0
    fds: list[int] = field(default_factory=list)  # still ours to close

    def close_fds(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()
        if self.sock is not None:
            self.sock.close()


class BwrapRunner(Runner):
    def __init__(
        self,
        work_root: Path,
        cache_dir: Path,
        uid_base: int = 61000,
        slots: int = 16,
        pool_size: int = 2,
        lock_dir: Path = DEFAULT_LOCK_DIR,
        io_limits: IoLimits | None = None,
        seccomp: bool = True,  # False only to measure the filter's cost or prove a test needs it
    ) -> None:
        super().__init__(cache_dir)
        self.work_root = work_root
        self.lock_dir = lock_dir
        self.io_limits = io_limits or IoLimits()
        self.uid_base = uid_base
        self.slot_count = slots
        self.pool_size = pool_size
        self.bwrap = shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin") or "bwrap"
        self._ready = False
        self._ready_lock = threading.Lock()
        self._cgroups: CgroupHost | None = None
        self._slots: SlotPool | None = None
        self._launcher: Path | None = None
        self._pool: SandboxPool[Spawned] | None = None
        self._ro = _ro_mounts()
        self._orphans = OrphanReaper()
        self._use_seccomp = seccomp
        self._seccomp: bytes | None = None  # the BPF program (seccomp.py) every stage runs under

    # -- start-up ---------------------------------------------------------------------------

    def check(self) -> None:
        with self._ready_lock:
            if self._ready:
                return
            if not os.access(self.bwrap, os.X_OK):
                raise SandboxUnavailable("bubblewrap not found: apt-get install bubblewrap")
            if os.geteuid() != 0:
                raise SandboxUnavailable(
                    "the bwrap sandbox needs the worker to run as root: it creates a cgroup per "
                    "run and starts each run as its own unprivileged uid"
                )
            ensure_private_dir(self.work_root)
            self.cache.ensure()
            self._cgroups = CgroupHost.detect(self.io_limits, [*SYSTEM_PATHS, str(self.cache.root)])
            if self._use_seccomp and self._seccomp is None:
                self._seccomp = build_filter(self.cache.root).read_bytes()
            self._slots = SlotPool(self.lock_dir, self.slot_count, self.uid_base)
            set_child_subreaper()
            self._ready = True
        self._smoke_test()
        with self._ready_lock:
            if self.pool_size > 0 and self._pool is None:
                self._launcher = build_launcher(self.cache.root)
                if self._launcher is not None:
                    self._pool = SandboxPool(self._prespawn, self._discard, self.pool_size)
                    atexit.register(self.close)  # kill and reap the spare sandboxes

    def close(self) -> None:
        """Destroy the pooled sandboxes (they also die with the worker)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _smoke_test(self) -> None:
        stage = Stage(
            "run", ["/bin/true"], {"PATH": "/usr/bin:/bin"}, [], 10_000, 10_000, 64, 16, 1024, 1024, 64, 4096, 4096
        )
        sr = self._execute(stage, None)
        if sr.internal_error or sr.exit_code != 0:
            with self._ready_lock:
                self._ready = False
            detail = sr.internal_error or sr.stderr.decode("utf-8", "replace")
            raise SandboxUnavailable(
                f"bubblewrap cannot start a sandbox as an unprivileged user: {detail.strip()}; "
                "unprivileged user namespaces must be enabled (sysctl "
                "kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)"
            )

    # -- one stage ---------------------------------------------------------------------------

    def _execute(self, stage: Stage, on_output: OutputCallback | None) -> StageResult:
        if not self._ready:
            self.check()
        pool = self._pool
        if stage.kind != "run" or pool is None or stage.max_disk_kb != _DEFAULTS.max_disk_kb:
            return self._run_cold(stage, on_output)
        try:
            sp = pool.take()
            if sp is not None:
                result = self._run_prepared(sp, stage, on_output)
                if result is not None:
                    return result
            return self._run_cold(stage, on_output)
        finally:
            pool.done()

    def _run_cold(self, stage: Stage, on_output: OutputCallback | None) -> StageResult:
        sp = None
        slot, cg = self._new_slot_and_cgroup()
        try:
            cg.set_limits(stage.memory_mb * 1024 * 1024, stage.max_processes + _EXTRA_PIDS)
            env = {"HOME": WORK, **stage.env}
            if stage.kind == "compile":
                env["LIVECODE_ARTIFACTS"] = " ".join(stage.collect)
                command = ["/bin/sh", "-c", _COLLECT, "sh", *stage.argv]
            else:
                command = list(stage.argv)
            biggest = max([f.size() for f in stage.files] + [0])
            rlimits = _rlimits(stage, biggest)
            sp = self._spawn(slot, cg, stage.files, command, env, rlimits, stage.max_disk_kb)
            return self._supervise(sp, stage, on_output)
        finally:
            self._finish(slot, cg, sp)

    def _run_prepared(self, sp: Spawned, stage: Stage, on_output: OutputCallback | None) -> StageResult | None:
        """Hand a pooled sandbox its job. None (and the sandbox destroyed) if it was unusable."""
        assert sp.sock is not None
        child_ends: list[int] = []
        try:
            sp.cg.set_limits(stage.memory_mb * 1024 * 1024, stage.max_processes + _EXTRA_PIDS + 1)
            for pid in sp.cg.pids():  # built at low priority; the run gets normal priority
                os.setpriority(os.PRIO_PROCESS, pid, 0)
            sp.cg.reset_counters()
            # Fresh pipes for this run, handed to the launcher only: bubblewrap never holds them.
            stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            res_r, res_w = os.pipe2(os.O_CLOEXEC)
            sp.fds += [stdin_w, out_r, err_r, res_r]
            child_ends += [stdin_r, out_w, err_w, res_w]
            sp.stdin_w, sp.out_r, sp.err_r, sp.result_r = stdin_w, out_r, err_r, res_r
            passed = [stdin_r, out_w, err_w, res_w]
            files: list[tuple[str, int, bytes | int]] = []
            biggest = 0
            for f in stage.files:
                if f.data is not None:
                    files.append((f"{WORK}/{f.name}", f.mode, f.data))
                    biggest = max(biggest, len(f.data))
                else:  # a cached compiled file: the launcher copies it in-kernel from the fd
                    fd = f.open()
                    child_ends.append(fd)
                    biggest = max(biggest, os.fstat(fd).st_size)
                    files.append((f"{WORK}/{f.name}", f.mode, len(passed)))
                    passed.append(fd)
            rlimits = _rlimits(stage, biggest, extra_pids=_EXTRA_PIDS + 1)  # + the launcher
            message = encode_message(files, rlimits, {"HOME": WORK, **stage.env}, list(stage.argv), WORK)
            socket.send_fds(sp.sock, [message[:1]], passed)
            sp.sock.sendall(message[1:])
            sp.sock.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            log.warning("pooled sandbox unusable; building one for this run", exc_info=True)
            self._finish(sp.slot, sp.cg, sp)
            return None
        finally:
            for fd in child_ends:
                os.close(fd)
        try:
            result = self._supervise(sp, stage, on_output)
        except BaseException:
            self._finish(sp.slot, sp.cg, sp)
            raise
        # Every process already got SIGKILL; waiting for the kernel to tear the namespaces
        # down, reaping and removing the cgroup happen off the request path.
        threading.Thread(target=self._finish_quietly, args=(sp,), daemon=True).start()
        return result

    def _finish_quietly(self, sp: Spawned) -> None:
        try:
            self._finish(sp.slot, sp.cg, sp)
        except Exception:
            log.exception("sandbox clean-up failed (slot %d)", sp.slot)

    def _prespawn(self) -> Spawned:
        """A sandbox set up ahead of time: namespaces, cgroup, tmpfs, and the launcher waiting."""
        assert self._launcher is not None
        slot, cg = self._new_slot_and_cgroup()
        try:
            cg.set_limits(_DEFAULTS.memory_mb * 1024 * 1024, _DEFAULTS.max_processes + _EXTRA_PIDS)
            host_sock, box_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            inf = resource.RLIM_INFINITY
            rlimits = [  # generous until the launcher lowers them to the request's
                (resource.RLIMIT_CORE, 0, 0),
                (resource.RLIMIT_FSIZE, ARTIFACT_CAP, inf),
                (resource.RLIMIT_NOFILE, 256, _hard(resource.RLIMIT_NOFILE)),
                (resource.RLIMIT_NPROC, _DEFAULTS.max_processes + _EXTRA_PIDS, _hard(resource.RLIMIT_NPROC)),
                (resource.RLIMIT_CPU, 3600, inf),
            ]
            launcher = FileSpec(_LAUNCHER, 0o555, path=self._launcher)  # copied in: the cache is root-only
            try:
                sp = self._spawn(
                    slot,
                    cg,
                    [launcher],
                    [_LAUNCHER, str(box_sock.fileno())],
                    {"PATH": "/usr/bin:/bin"},
                    rlimits,
                    _DEFAULTS.max_disk_kb,
                    extra_fds=[box_sock.fileno()],
                    nice=_PREBUILD_NICE,
                    stdio=False,
                )
            except BaseException:
                host_sock.close()
                raise
            finally:
                box_sock.close()
            sp.sock = host_sock
            return sp
        except BaseException:
            self._finish(slot, cg, None)
            raise

    def _discard(self, sp: Spawned) -> None:
        self._finish(sp.slot, sp.cg, sp)

    def _new_slot_and_cgroup(self) -> tuple[int, RunCgroup]:
        assert self._slots is not None and self._cgroups is not None
        slot = self._slots.acquire()
        try:
            return slot, self._cgroups.create(slot)
        except BaseException:
            self._slots.release(slot)
            raise

    def _finish(self, slot: int, cg: RunCgroup, sp: Spawned | None) -> None:
        """Kill everything of the run, reap, remove its cgroup, free the slot."""
        assert self._slots is not None
        try:
            if sp is not None:
                _note_child_pid(cg, read_status(sp.status_r))  # a pooled sandbox never supervised
                cg.kill_all(exclude_reap=sp.proc.pid)
                if sp.proc.returncode is None:  # never supervised (a discarded pooled sandbox)
                    with contextlib.suppress(ChildProcessError):
                        _, status = os.waitpid(sp.proc.pid, 0)
                        sp.proc.returncode = status
                sp.close_fds()
            cg.kill_all()
            left = cg.reap_all(exclude=None)
            if left:  # pathological (a process stuck exiting): reap it in the background
                self._orphans.add(left)
            cg.destroy()
        finally:
            self._slots.release(slot)

    def _argv(
        self, disk_kb: int, file_fds: list[tuple[int, int, str]], status_fd: int, extra: list[str], seccomp: list[int]
    ) -> list[str]:
        args = [
            self.bwrap,
            *[arg for fd in seccomp for arg in ("--seccomp", str(fd))],
            "--unshare-all",
            "--unshare-user",  # required, not "-try": we must never run without it
            "--disable-userns",  # no nested user namespaces: less kernel attack surface
            "--die-with-parent",
            "--new-session",
            "--cap-drop", "ALL",
            "--uid", str(SANDBOX_UID),
            "--gid", str(SANDBOX_UID),
            "--hostname", "sandbox",
            *self._ro,
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", str(min(disk_kb, _SHM_MAX_KB) * 1024),
            "--tmpfs", "/dev/shm",
            "--size", str(disk_kb * 1024),
            "--tmpfs", BOX,
            "--dir", WORK,
            "--dir", f"{BOX}/tmp",
            "--symlink", f"{BOX}/tmp", "/tmp",
            *extra,
        ]  # fmt: skip
        for fd, mode, dest in file_fds:
            args += ["--perms", f"{mode:04o}", "--file", str(fd), dest]
        return [*args, "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", WORK, "--json-status-fd", str(status_fd)]

    def _spawn(
        self,
        slot: int,
        cg: RunCgroup,
        files: list[FileSpec],
        command: list[str],
        env: dict[str, str],
        rlimits: list[tuple[int, int, int]],
        disk_kb: int,
        extra_fds: list[int] | None = None,
        extra_args: list[str] | None = None,
        nice: int = 0,
        stdio: bool = True,
    ) -> Spawned:
        uid = self.uid_base + slot
        child_fds: list[int] = []  # the child's ends; closed here once it has them
        ours: list[int] = []
        try:
            file_fds: list[tuple[int, int, str]] = []
            etc = [FileSpec("/etc/passwd", 0o644, _PASSWD), FileSpec("/etc/group", 0o644, _GROUP)]
            for spec in [*etc, *files]:
                if spec.data is None:
                    fd = spec.open()
                else:
                    fd = os.memfd_create("livecode-file", os.MFD_CLOEXEC)
                    os.write(fd, spec.data or b"")
                    os.lseek(fd, 0, os.SEEK_SET)
                child_fds.append(fd)
                dest = spec.name if spec.name.startswith("/") else f"{WORK}/{spec.name}"
                file_fds.append((fd, spec.mode, dest))
            if stdio:  # the program's own stdio is bubblewrap's
                stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                ours += [stdin_w, out_r]
                child_fds += [stdin_r, out_w]
            else:  # pooled: the launcher gets the run's pipes later; bwrap's stderr is diagnostics
                stdin_r = out_w = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                stdin_w = out_r = -1
                child_fds.append(stdin_r)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            status_r, status_w = os.pipe2(os.O_CLOEXEC)
            child_fds += [err_w, status_w]
            ours += [err_r, status_r]
            procs_fds = cg.open_procs_fds()
            child_fds += procs_fds
            seccomp_fds = []
            if self._seccomp is not None:  # bwrap reads it to EOF and applies it just before exec
                seccomp_fds.append(os.memfd_create("livecode-seccomp", os.MFD_CLOEXEC))
                child_fds += seccomp_fds
                os.write(seccomp_fds[0], self._seccomp)
                os.lseek(seccomp_fds[0], 0, os.SEEK_SET)

            def child_setup() -> None:
                # Runs in the forked child before exec: join the run's cgroups while still root,
                # set rlimits, then drop to the slot's uid for good (no groups, no way back).
                for cfd in procs_fds:
                    os.write(cfd, b"0")
                for res, soft, hard in rlimits:
                    resource.setrlimit(res, (soft, hard))
                if nice:
                    os.nice(nice)
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)

            argv = [*self._argv(disk_kb, file_fds, status_w, extra_args or [], seccomp_fds), "--", *command]
            proc = subprocess.Popen(
                argv,
                stdin=stdin_r,
                stdout=out_w,
                stderr=err_w,
                env=env,
                cwd="/",
                pass_fds=[fd for fd, _, _ in file_fds] + [status_w, *(extra_fds or []), *seccomp_fds],
                preexec_fn=child_setup,
                start_new_session=True,
            )
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        if stdio:
            return Spawned(slot, cg, proc, stdin_w, out_r, err_r, status_r, disk_kb=disk_kb, fds=list(ours))
        return Spawned(slot, cg, proc, -1, -1, -1, status_r, diag_r=err_r, disk_kb=disk_kb, fds=list(ours))

    def _supervise(self, sp: Spawned, stage: Stage, on_output: OutputCallback | None) -> StageResult:
        cg = sp.cg
        streams = [
            StreamSpec(sp.out_r, stage.stdout_cap, "stdout" if stage.kind == "run" else None, stage.stdout_file),
            StreamSpec(sp.err_r, stage.stderr_cap, "stderr" if stage.kind == "run" else "compile"),
        ]
        for fd in (sp.out_r, sp.err_r, sp.stdin_w):
            sp.fds.remove(fd)  # supervise() owns and closes them now
        watch = Watch(
            pid=sp.proc.pid,
            kill_tree=lambda: cg.kill_all(exclude_reap=sp.proc.pid),
            wall_limit_s=stage.wall_ms / 1000,
            cpu_limit_ms=stage.cpu_ms,
            cpu_used_ms=cg.cpu_ms,
            result_fd=sp.result_r,
            kill_now=cg.kill_once,
        )
        sup = supervise(watch, streams, sp.stdin_w, stage.stdin, stage.stdin_source, on_output)
        if sup.reaped:
            sp.proc.returncode = sup.status  # reaped by supervise(); keep Popen quiet
        status = read_status(sp.status_r)
        _note_child_pid(cg, status)
        sr = stage_result(stage, sup, status, cg)
        if sp.diag_r is not None and not sup.exact and sup.killed_for is None and not sr.internal_error:
            # No status from the launcher: it failed before starting the program (or the
            # program killed its parent; then there is nothing on bwrap's stderr).
            diag = _read_available(sp.diag_r).decode("utf-8", "replace").strip()
            if diag:
                sr.internal_error = f"sandbox launcher failed: {diag}"
        return sr


def _rlimits(stage: Stage, biggest_file: int, extra_pids: int = _EXTRA_PIDS) -> list[tuple[int, int, int]]:
    fsize = max(stage.max_file_kb * 1024, biggest_file)  # the program's own files must fit
    cpu_s = math.ceil(stage.cpu_ms / 1000)
    nproc = min(stage.max_processes + extra_pids, _hard(resource.RLIMIT_NPROC))
    nofile = min(stage.max_open_files, _hard(resource.RLIMIT_NOFILE))
    return [
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_FSIZE, fsize, fsize),
        (resource.RLIMIT_NOFILE, nofile, nofile),
        (resource.RLIMIT_NPROC, nproc, nproc),
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),  # SIGXCPU, then SIGKILL a second later
    ]


def _note_child_pid(cg: RunCgroup, status: list[dict[str, int]]) -> None:
    """bwrap's pid 1 is orphaned when its monitor dies first (by our SIGKILL, or with the thread
    that started it). We are the subreaper, so it becomes our zombie: remember it to reap it,
    else it would count against the slot uid's RLIMIT_NPROC."""
    for doc in status:
        if isinstance(doc.get("child-pid"), int):
            cg.seen_pids.add(doc["child-pid"])


def _hard(res: int) -> int:
    """Our own hard limit: without CAP_SYS_RESOURCE (containers) we cannot raise past it."""
    hard = resource.getrlimit(res)[1]
    return 1 << 30 if hard == resource.RLIM_INFINITY else hard


def _read_available(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError, OSError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks)
