"""The real sandbox: bubblewrap started as a per-slot unprivileged uid inside a per-run cgroup.

Every stage gets fresh namespaces (user, pid, net, ipc, uts, cgroup), a read-only view of the
toolchains only, and a size-limited tmpfs for its work directory and /tmp that vanishes with it.
Files go in through file descriptors (bwrap --file); output comes back through pipes.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import math
import os
import resource
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

from .cache import valid_artifact_name
from .cgroups import CgroupHost, RunCgroup
from .hostfs import SlotPool, ensure_private_dir, set_child_subreaper
from .runner import FileSpec, Runner, Stage, StageResult
from .supervise import StreamSpec, Supervised, Watch, supervise
from .types import OutputCallback, SandboxUnavailable

SANDBOX_UID = 1000  # uid/gid as seen inside; on the host it is uid_base + slot
BOX = "/sandbox"
WORK = f"{BOX}/work"
_PASSWD = f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:{WORK}:/bin/sh\n".encode()
_GROUP = f"sandbox:x:{SANDBOX_UID}:\n".encode()
_SHM_MAX_KB = 16 * 1024  # POSIX shm / semaphores (multiprocessing); /dev itself is read-only
_EXTRA_PIDS = 2  # bwrap's monitor and its pid-1 init live in the run's cgroup too
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


class BwrapRunner(Runner):
    def __init__(self, work_root: Path, cache_dir: Path, uid_base: int = 61000, slots: int = 16) -> None:
        super().__init__(cache_dir)
        self.work_root = work_root
        self.uid_base = uid_base
        self.slot_count = slots
        self.bwrap = shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin") or "bwrap"
        self._ready = False
        self._ready_lock = threading.Lock()
        self._cgroups: CgroupHost | None = None
        self._slots: SlotPool | None = None
        self._ro = _ro_mounts()

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
            self._cgroups = CgroupHost.detect()
            ensure_private_dir(self.work_root)
            self.cache.ensure()
            self._slots = SlotPool(self.work_root / "slots", self.slot_count)
            set_child_subreaper()
            self._ready = True
        self._smoke_test()

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
        assert self._slots is not None and self._cgroups is not None
        slot = self._slots.acquire()
        try:
            cg = self._cgroups.create(slot)
            try:
                cg.set_limits(stage.memory_mb * 1024 * 1024, stage.max_processes + _EXTRA_PIDS)
                return self._spawn_and_supervise(stage, on_output, self.uid_base + slot, cg)
            finally:
                cg.kill_all()
                cg.destroy()
        finally:
            self._slots.release(slot)

    def _argv(self, stage: Stage, file_fds: list[tuple[int, int, str]], status_fd: int) -> list[str]:
        args = [
            self.bwrap,
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
            "--size", str(min(stage.max_disk_kb, _SHM_MAX_KB) * 1024),
            "--tmpfs", "/dev/shm",
            "--size", str(stage.max_disk_kb * 1024),
            "--tmpfs", BOX,
            "--dir", WORK,
            "--dir", f"{BOX}/tmp",
            "--symlink", f"{BOX}/tmp", "/tmp",
        ]  # fmt: skip
        for fd, mode, dest in file_fds:
            args += ["--perms", f"{mode:04o}", "--file", str(fd), dest]
        args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", WORK, "--json-status-fd", str(status_fd), "--"]
        if stage.kind == "compile":
            return [*args, "/bin/sh", "-c", _COLLECT, "sh", *stage.argv]
        return [*args, *stage.argv]

    def _spawn_and_supervise(
        self, stage: Stage, on_output: OutputCallback | None, uid: int, cg: RunCgroup
    ) -> StageResult:
        to_close: list[int] = []
        file_fds: list[tuple[int, int, str]] = []
        biggest = 0
        try:
            etc = [FileSpec("/etc/passwd", 0o644, _PASSWD), FileSpec("/etc/group", 0o644, _GROUP)]
            for spec in [*etc, *stage.files]:
                if spec.path is not None:
                    fd = os.open(spec.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    biggest = max(biggest, os.fstat(fd).st_size)
                else:
                    fd = os.memfd_create("livecode-file", os.MFD_CLOEXEC)
                    os.write(fd, spec.data or b"")
                    os.lseek(fd, 0, os.SEEK_SET)
                    biggest = max(biggest, len(spec.data or b""))
                to_close.append(fd)
                dest = spec.name if spec.name.startswith("/") else f"{WORK}/{spec.name}"
                file_fds.append((fd, spec.mode, dest))
            stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            status_r, status_w = os.pipe2(os.O_CLOEXEC)
            to_close += [stdin_r, out_w, err_w, status_w, status_r]
            env = {"HOME": WORK, **stage.env}
            if stage.kind == "compile":
                env["LIVECODE_ARTIFACTS"] = " ".join(stage.collect)
            procs_fds = cg.open_procs_fds()
            to_close += procs_fds
            fsize = max(stage.max_file_kb * 1024, biggest)
            limits = [
                (resource.RLIMIT_CORE, 0),
                (resource.RLIMIT_FSIZE, fsize),
                (resource.RLIMIT_NOFILE, stage.max_open_files),
                (resource.RLIMIT_NPROC, stage.max_processes + _EXTRA_PIDS),
            ]
            cpu_s = math.ceil(stage.cpu_ms / 1000)
            limits.append((resource.RLIMIT_CPU, cpu_s))

            def child_setup() -> None:
                # Runs in the forked child before exec: join the run's cgroups while still root,
                # set rlimits, then drop to the slot's uid for good (no groups, no way back).
                for cfd in procs_fds:
                    os.write(cfd, b"0")
                for res, value in limits:
                    hard = value + 1 if res == resource.RLIMIT_CPU else value
                    resource.setrlimit(res, (value, hard))
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)

            proc = subprocess.Popen(
                self._argv(stage, file_fds, status_w),
                stdin=stdin_r,
                stdout=out_w,
                stderr=err_w,
                env=env,
                cwd="/",
                pass_fds=[fd for fd, _, _ in file_fds] + [status_w],
                preexec_fn=child_setup,
                start_new_session=True,
            )
            for fd in (stdin_r, out_w, err_w, status_w, *procs_fds, *[f for f, _, _ in file_fds]):
                to_close.remove(fd)
                os.close(fd)
            streams = [
                StreamSpec(out_r, stage.stdout_cap, "stdout" if stage.kind == "run" else None),
                StreamSpec(err_r, stage.stderr_cap, "stderr" if stage.kind == "run" else "compile"),
            ]
            watch = Watch(
                pid=proc.pid,
                kill_tree=lambda: cg.kill_all(exclude_reap=proc.pid),
                wall_limit_s=stage.wall_ms / 1000,
                cpu_limit_ms=stage.cpu_ms,
                cpu_used_ms=cg.cpu_ms,
            )
            sup = supervise(watch, streams, stdin_w, stage.stdin, stage.stdin_source, on_output)
            proc.returncode = sup.status  # reaped by supervise(); keep Popen quiet
            status = _read_status(status_r)
            for doc in status:
                # bwrap's pid-1 is orphaned when its monitor exits; we are the subreaper, so
                # kill_all() reaps it, else its zombie would count against the slot's NPROC.
                if isinstance(doc.get("child-pid"), int):
                    cg.seen_pids.add(doc["child-pid"])
            return self._stage_result(stage, sup, status, cg)
        finally:
            for fd in to_close:
                with contextlib.suppress(OSError):
                    os.close(fd)

    @staticmethod
    def _stage_result(stage: Stage, sup: Supervised, status: list[dict[str, int]], cg: RunCgroup) -> StageResult:
        sr = StageResult(
            stdout=bytes(sup.data[0]),
            stderr=bytes(sup.data[1]),
            stdout_truncated=sup.truncated[0],
            stderr_truncated=sup.truncated[1],
            wall_ms=sup.wall_ms,
            cpu_ms=cg.cpu_ms(),
            memory_kb=cg.peak_kb(),
            killed_for=sup.killed_for,
            oom=cg.oom_killed(),
        )
        if not any("child-pid" in s for s in status) and sup.killed_for is None:
            sr.internal_error = (
                "bubblewrap failed to set up the sandbox: " + sr.stderr.decode("utf-8", "replace").strip()
            )
            return sr
        raw = sup.status or 0
        if os.WIFSIGNALED(raw):  # bwrap itself was killed (by us)
            sr.signal = os.WTERMSIG(raw)
        else:
            code = os.WEXITSTATUS(raw)
            if code > 128 and sup.killed_for is None and code - 128 < 65:
                sr.signal = code - 128  # bwrap reports a signalled child as 128+signal
            elif sup.killed_for is not None:
                sr.signal = 9
            else:
                sr.exit_code = code
        if stage.kind == "compile" and sr.exit_code == 0 and not sr.stdout_truncated:
            try:
                sr.artifacts = _untar(sr.stdout)
            except (tarfile.TarError, ValueError) as e:
                sr.stderr += f"\ncould not collect the compiled program: {e}\n".encode()
                sr.exit_code = 1
            sr.stdout = b""
        return sr


def _read_status(fd: int) -> list[dict[str, int]]:
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError, OSError):
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    out: list[dict[str, int]] = []
    for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict):
                out.append(doc)
    return out


def _untar(data: bytes) -> dict[str, bytes]:
    """Artifacts from the compile stage's tar stream: plain regular files only."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for member in tf:
            if not member.isreg() or not valid_artifact_name(member.name):
                raise ValueError(f"unexpected entry {member.name!r} in compiler output")
            f = tf.extractfile(member)
            assert f is not None
            out[member.name] = f.read()
    return out
