"""The real sandbox: bubblewrap started as a per-slot unprivileged uid inside a per-run cgroup.

Every stage gets fresh namespaces (user, pid, net, ipc, uts, cgroup), a read-only view of the
toolchains only, and a size-limited tmpfs for its work directory and /tmp that vanishes with it.
Every sandbox's pid 1 is the launcher (launcher.py): it takes the stage's files, limits and
pipes over a unix socket, runs the program and reports its exact exit status on a pipe of its
own, the only status the host believes. Output comes back through pipes. With a pool (pool.py),
run stages take a sandbox that was set up ahead of time, and compile stages one of their own
(a compile's sandbox has its own limits: memory, disk).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import logging
import math
import os
import resource
import select
import shutil
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from .cgroups import CgroupHost, RunCgroup
from .enter import EnterBusy, EnterError, Template, Templates, exited
from .files import FileSpec
from .hostfs import DEFAULT_LOCK_DIR, OrphanReaper, SlotPool, ensure_private_dir, set_child_subreaper
from .iolimits import SYSTEM_PATHS, IoLimits
from .launcher import GO, LAUNCHER_NOFILE, UNWARM, build_launcher, send_adopt, send_job, send_warm
from .outputs import OUT_DIR, Collected, OutputLimits, collect, has_entries, hold_sandbox_dir
from .pool import SandboxPool
from .procfs import LOADAVG, mask_args, meminfo, proc_stat
from .program import parent_dirs
from .pysite import SiteHooks
from .results import read_status, stage_result
from .runner import ARTIFACT_CAP, Runner, Stage, StageResult
from .seccomp import build_filter
from .spawner import build_spawner, lean_mount_namespace, nursery_net_namespace, spawner_argv
from .supervise import StreamSpec, Watch, supervise
from .types import OutputCallback, SandboxLimits, SandboxUnavailable
from .view import HostViews, View, default_root, etc_sources
from .warm import WarmStart, warm_start

log = logging.getLogger(__name__)

SANDBOX_UID = 1000  # uid/gid as seen inside; on the host it is uid_base + slot
BOX = "/sandbox"
WORK = f"{BOX}/work"
_PASSWD = f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:{WORK}:/bin/sh\n".encode()
_GROUP = f"sandbox:x:{SANDBOX_UID}:\n".encode()
_ETC_FILES = {"passwd": _PASSWD, "group": _GROUP}  # the sandbox's own, in /etc beside the host's entries
_ETC_SPECS = [FileSpec(f"/etc/{name}", 0o644, data) for name, data in _ETC_FILES.items()]  # where no view has them
_SHM_MAX_KB = 16 * 1024  # POSIX shm / semaphores (multiprocessing); /dev itself is not writable
_EXTRA_PIDS = 2  # bwrap's monitor and the launcher (the sandbox's pid 1) live in the run's cgroup too
_LAUNCHER = "/.livecode-launcher"
_ENTRY_TEMP = f"{BOX}/.livecode-entry"  # a warm start's entry file before it replaces the FIFO (warm.py)
_PREBUILD_NICE = 10  # building spare sandboxes must not slow down the runs in progress
_RECENT_RUNS = 8  # runs whose warm starts keep a spare that suits them in the pool (pool.take's stale)
_RECENT_KEYS = 256
_RENICE_ROUNDS = 20  # reads of a warm spare's thread list until none is new
_UP_WAIT_S = 5.0  # a spare taken as it starts is up within ~10 ms; a cold build would take as long
_DEFAULTS = SandboxLimits()
_DISCARD_WAIT_S = 5.0  # a discarded sandbox's launcher exits at once on its closed socket
_SEND_TIMEOUT_S = 30.0  # the launcher reads its job as soon as bubblewrap has set the sandbox up
_CLEANUP_THREADS = 4  # clean-ups of finished runs run beside the next runs (a few are slow: a fork bomb's)
# Runs the compiler, then streams the artifacts to stdout as a tar; compiler output -> stderr.
_COLLECT = (
    f'"$@" >&2 || exit $?\ncd {WORK} || exit 125\nexec /usr/bin/tar -cf - --no-recursion -- $LIVECODE_ARTIFACTS\n'
)


_USR_TOPS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def _usr_mounts() -> list[str]:
    """Read-only binds of the toolchains, nothing else."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in _USR_TOPS[1:]:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def _etc_dev_mounts(view: View | None) -> list[str]:
    """/etc (the few entries the toolchains need) and /dev: from this process's prepared view in
    one bind each (view.py), or entry by entry (the host's entries now, bwrap's --dev) where there
    is none."""
    if view is None:
        args = [arg for path in etc_sources() for arg in ("--ro-bind", path, path)]
    else:
        args = ["--ro-bind", view.etc, "/etc"]
    if view is not None and view.dev:
        return [*args, "--dev-bind", view.devdir, "/dev"]
    # No ptys: bwrap's devpts instance would draw on the host-wide pty limit (kernel.pty.max),
    # so a run could take every pty of the host. /dev/ptmx now dangles.
    return [*args, "--dev", "/dev", "--tmpfs", "/dev/pts", "--remount-ro", "/dev/pts"]


@dataclass
class Spawned:
    """A started bubblewrap with the launcher waiting: its slot, cgroup, process and our ends
    of its pipes (the program's pipes and the result pipe are made when the job is sent)."""

    slot: int
    cg: RunCgroup
    proc: subprocess.Popen[bytes]
    status_r: int  # bubblewrap's --json-status-fd
    sock: socket.socket  # the launcher's message socket
    diag_r: int  # bubblewrap's and the launcher's own stderr
    stdin_w: int = -1
    out_r: int = -1
    err_r: int = -1
    result_r: int | None = None  # the launcher's exit-status pipe
    nice: int = 0  # the priority it was started at (a spare sandbox is built at a lower one)
    view: View | None = None  # its /etc and /dev (view.py), given back at its clean-up
    fds: list[int] = field(default_factory=list)  # still ours to close
    warm: WarmStart | None = None  # the program started in it ahead of its run (warm.py)
    ups: int = 0  # the launcher's UP bytes read (launcher.c)
    entered: int | None = None  # a pidfd of its warm start's program when a template's copy (enter.py)
    template: Template | None = None  # ... and that template, its parent (which reports its exit status)
    adopted_run: bool = False  # the run is that copy's: its template, not the launcher, reports its status
    status_read: list[dict[str, int]] = field(default_factory=list)  # bubblewrap's status read before the run

    def reap_entered(self, wait_s: float = 1.0) -> None:
        """A template's copy whose template is gone is ours (we are a subreaper): once killed,
        reap that very process (its pidfd), or its sandbox's pid 1 waits for it forever."""
        if self.entered is None or self.template is None or self.template.alive:
            return
        poller = select.poll()
        poller.register(self.entered, select.POLLIN)
        poller.poll(wait_s * 1000)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitid(os.P_PIDFD, self.entered, os.WEXITED | os.WNOHANG)

    def close_fds(self) -> None:
        if self.entered is not None:
            self.reap_entered(0.0)
            os.close(self.entered)
            self.entered = None
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()
        if self.sock is not None:
            self.sock.close()

    def drop_pipes(self) -> None:
        """Close our ends of the program's pipes (a warm start's, when the run is another's)."""
        for fd in (self.stdin_w, self.out_r, self.err_r, self.result_r):
            if fd is not None and fd in self.fds:
                self.fds.remove(fd)
                os.close(fd)
        self.stdin_w = self.out_r = self.err_r = -1
        self.result_r = None


@dataclass
class _Job:
    """What the launcher gets for a stage besides its pipes (launcher.py)."""

    files: list[tuple[str, int, bytes | Callable[[], int]]]
    rlimits: list[tuple[int, int, int]]
    env: dict[str, str]
    argv: list[str]
    dirs: list[str]
    warm: WarmStart | None  # the warm start a spare needs to serve it (None: it cannot use one)


class BwrapRunner(Runner):
    def __init__(
        self,
        work_root: Path,
        cache_dir: Path,
        uid_base: int = 61000,
        slots: int = 16,
        pool_size: int = 2,
        lock_dir: Path = DEFAULT_LOCK_DIR,
        warm_start: bool = True,  # spares start the last runs' program ahead (warm.py)
        enter: bool = True,  # ... as copies of a started interpreter where the language allows (enter.py)
        io_limits: IoLimits | None = None,
        seccomp: bool = True,  # False only to measure the filter's cost or prove a test needs it
        view_root: Path | None = None,  # where the prepared /etc and /dev live (view.py)
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
        self._spawner: Path | None = None  # the exec helper that starts bwrap as the slot uid
        self._netns: int | None = None  # the network namespace bwrap starts in (spawner.py: the nursery)
        self._pool: SandboxPool[tuple[int, int], Spawned] | None = None  # for run stages
        self._compile_pool: SandboxPool[tuple[int, int], Spawned] | None = None  # one spare, for compiles
        self._usr = _usr_mounts()
        self._site_hooks = SiteHooks()  # Python's start-up without importlib.util (pysite.py)
        self._views = HostViews(view_root or default_root(), _ETC_FILES, namespace=self._lean_namespace)
        self._orphans = OrphanReaper()
        # Clean-ups of finished runs, in the background on a few long-lived threads: starting a
        # thread per run cost the run's caller ~0.3 ms (it waits for the new thread to start).
        self._cleanups = ThreadPoolExecutor(_CLEANUP_THREADS, thread_name_prefix="sandbox-cleanup")
        self._finishing: set[Future[None]] = set()
        self._use_seccomp = seccomp
        # Per (stage kind, (memory_mb, max_disk_kb)): the warm starts of the last runs with those
        # limits (None: a run that could use none). Run spares are built with the last one's
        # (warm.py, _prespawn_run); a passed-over spare none of them wants is replaced (pool.take).
        self._recent_warm: dict[tuple[str, tuple[int, int]], collections.deque[WarmStart | None]] = {}
        self.warm_runs = 0  # runs served by a program started ahead
        self.unwarmed_runs = 0  # runs that took a spare whose program was started for other runs
        self._warm_start = warm_start
        self._enter = enter and warm_start
        self._templates: Templates | None = None  # entered warm starts' templates (enter.py)
        self.entered_spares = 0  # sandboxes whose program is a template's copy (spares, runs that found none)
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
            self._launcher = build_launcher(self.cache.root)
            self._spawner = build_spawner(self.cache.root)
            if self._enter and self._seccomp is not None and self._templates is None:
                self._templates = Templates(self.cache.root, self._seccomp, self.bwrap)
            if self._netns is None:
                self._netns = nursery_net_namespace(self._spawner)
                # Kept while a sandbox may still be started with it: a closed runner still
                # builds cold ones, and atexit holds the runner, so in practice until the exit.
                if self._netns is not None:
                    weakref.finalize(self, os.close, self._netns)
            set_child_subreaper()
            if not self._ready:
                atexit.register(self.close)  # kill and reap the spare sandboxes, finish clean-ups
            self._ready = True
        self._smoke_test()
        with self._ready_lock:
            if self.pool_size > 0 and self._pool is None:
                key = (_DEFAULTS.memory_mb, _DEFAULTS.max_disk_kb)
                self._pool = SandboxPool(self._prespawn_run, self._discard, self.pool_size, key)
                # One spare for the next compile, whose sandbox would otherwise be set up on the
                # request path before the compiler can start (~10 ms of bubblewrap).
                key = (_DEFAULTS.compile_memory_mb, _DEFAULTS.compile_max_disk_kb)
                self._compile_pool = SandboxPool(self._prespawn, self._discard, 1, key)

    def _lean_namespace(self, view: Path) -> int | None:
        """The mount namespace bubblewrap sets up in for sandboxes with this view (spawner.py):
        only the mounts holding what it binds (the toolchains, /proc, /dev/null, the view)."""
        assert self._spawner is not None
        tops = [top for top in _USR_TOPS if os.path.isdir(top) and not os.path.islink(top)]
        return lean_mount_namespace(self._spawner, [*tops, self.bwrap, "/proc", "/dev/null", str(view)])

    def close(self) -> None:
        """Destroy the pooled sandboxes and wait for the clean-ups in progress: a sandbox whose
        clean-up dies with us would leave its (killed) processes as zombies of our subreaper."""
        for pool in (self._pool, self._compile_pool):
            if pool is not None:
                pool.close()
        self._pool = self._compile_pool = None
        wait(list(self._finishing), timeout=10.0)
        if self._templates is not None:
            self._templates.close()
        self._views.close()

    def warm_spares(self) -> int:
        """Spare sandboxes ready with a program started in them (warm.py)."""
        pool = self._pool
        return 0 if pool is None else pool.ready_count(where=lambda sp: sp.warm is not None)

    def expect(self, limits: SandboxLimits, count: int) -> None:
        pool = self._pool
        if pool is not None:
            pool.expect((limits.memory_mb, limits.max_disk_kb), count)

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
        job = _job(stage)
        pool = self._pool if stage.kind == "run" else self._compile_pool
        if pool is None:
            return self._run_cold(stage, job, on_output)
        key = (stage.memory_mb, stage.max_disk_kb)
        # Cleared before this run's entry: the limits spares are built for (the last run's) keep theirs.
        if len(self._recent_warm) > _RECENT_KEYS:  # limits are the users' choice: keep the map small
            self._recent_warm.clear()
        recent = self._recent_warm.setdefault((stage.kind, key), collections.deque(maxlen=_RECENT_RUNS))
        recent.append(job.warm)
        wanted = list(recent)  # a copy: other runs' threads append meanwhile
        try:
            sp = pool.take(
                key, stage.ahead, prefer=lambda candidate: candidate.warm == job.warm,
                stale=lambda candidate: candidate.warm not in wanted,
            )
            if sp is not None:
                result = self._run_job(sp, stage, job, on_output, prebuilt=True)
                if result is not None:
                    return result
            return self._run_cold(stage, job, on_output)
        finally:
            pool.done()

    def _back_to_normal_priority(self, sp: Spawned) -> bool:
        """Every thread of a spare built at low priority to nice 0; False if the sandbox is
        unusable (its set-up never ended, or it is gone). A process or thread being created
        during a renice copies its parent's nice after the renice has passed it by: so the renice
        comes once the launcher has said it is up (and has forked its warm start's program), when
        nothing of the sandbox forks until the job comes, but a warm start's program may still
        be starting its own threads (Node's), so for one the list is read again until no thread
        is new. One setpriority per thread (bubblewrap, the launcher, a warm start's program and
        its threads), not one setpriority(PRIO_USER) on the slot uid: the kernel answers that
        one by walking every thread of the host (~20 us hot, ~0.25 ms inside a run with 1,200
        threads on the host, its caches cold). A spare still being set up is reniced as it
        stands while its launcher comes up (PRIO_USER, until its helper has dropped to the slot
        uid, after setting its nice 10), so that its set-up ends at normal priority."""
        uid = self.uid_base + sp.slot
        want = 2 if sp.warm is not None else 1
        if not _launcher_up(sp, want, 0.0) and not _set_up_at_normal_priority(sp, uid, want):
            return False
        new = sp.cg.threads()
        if not new:  # no thread list (cgroup v2 before Linux 4.14): its processes, as they stand
            return _renice_uid(uid)
        seen: set[int] = set()
        reniced = False
        for _ in range(_RENICE_ROUNDS):
            for tid in new:
                try:
                    os.setpriority(os.PRIO_PROCESS, tid, 0)
                    reniced = True
                except ProcessLookupError:  # its launcher is up, so the sandbox is dying
                    pass
            seen.update(new)
            if sp.warm is None:
                break
            new = [tid for tid in sp.cg.threads() if tid not in seen]
            if not new:
                break
        return reniced

    def _run_cold(self, stage: Stage, job: _Job, on_output: OutputCallback | None) -> StageResult:
        """Build a sandbox for this stage (compile stages, runs no spare sandbox fits) and run it
        through its launcher exactly like a pre-built one."""
        for attempt in range(2):
            sp = self._start_sandbox(stage.memory_mb, stage.max_disk_kb, stage.max_processes)
            if job.warm is not None and self._can_enter(sp, job.warm):
                # Its program a template's copy too (enter.py): runs that find no spare ready (runs
                # back to back on every slot) skip the interpreter's start-up and finalization as
                # well (~4 ms of CPU, and the start's wall time, on the run's own path). Only from
                # a template that is up and answering: a run never waits for one to start, nor
                # long for another thread's request (then its launcher starts the interpreter).
                try:
                    self._enter_spare(sp, job.warm, wait=False)
                except EnterBusy:
                    pass
                except (EnterError, OSError) as e:
                    log.info("sandbox built without a template's copy: %s", e)
                    self._finish_later(sp)
                    sp = self._start_sandbox(stage.memory_mb, stage.max_disk_kb, stage.max_processes)
                except BaseException:
                    self._finish(sp.slot, sp.cg, sp)
                    raise
            result = self._run_job(sp, stage, job, on_output, prebuilt=False)
            assert result is not None  # only a pre-built sandbox is given up on
            # bubblewrap's set-up failed on a Python hook's host file removed since it was
            # looked for (a package removed or upgraded meanwhile): the launcher never ran, so
            # nor did the program; a sandbox built again goes without that file (pysite.py).
            if attempt == 0 and self._site_hooks.caused(result.internal_error):
                continue
            return result
        raise AssertionError("unreachable")

    def _run_job(
        self, sp: Spawned, stage: Stage, job: _Job, on_output: OutputCallback | None, prebuilt: bool
    ) -> StageResult | None:
        """Hand a sandbox its job and supervise it. None (and the sandbox destroyed) if a
        pre-built sandbox was unusable."""
        child_ends: list[int] = []
        work_fd: int | None = None  # the work dir, held to collect out/ (outputs.py)
        try:
            sp.cg.set_limits(stage.memory_mb * 1024 * 1024, stage.max_processes + _EXTRA_PIDS)
            if prebuilt:
                # Built at low priority; the run gets normal priority. If its set-up never ended
                # (it failed, or is stuck), a sandbox is built for this run instead.
                if sp.nice and not self._back_to_normal_priority(sp):
                    self._finish(sp.slot, sp.cg, sp)
                    return None
                sp.cg.reset_counters()
            # Its program started ahead is this run's (and, a template's copy, still there: it is
            # not the launcher's to start again, enter.py).
            go = sp.warm is not None and sp.warm == job.warm and not _entered_ended(sp)
            sp.adopted_run = go and sp.entered is not None
            lead = GO if go else b""
            pipes: list[int] = []
            if not go:
                if sp.warm is not None:  # started ahead for other runs: the launcher stops it first
                    sp.drop_pipes()
                    lead = UNWARM
                    self.unwarmed_runs += 1
                pipes = _make_pipes(sp, stage.merge_stderr)
                child_ends += dict.fromkeys(pipes)  # stdout twice when merged
            if stage.outputs is not None:  # before the program starts: nothing of its making is followed
                # A fresh list, not the renice's: a pid read earlier could be another sandbox's by now.
                work_fd = hold_sandbox_dir(sp.cg.pids, _LAUNCHER, WORK)
                if work_fd is None:
                    log.warning("cannot reach the sandbox's work directory; out/ will not be collected")
            if go:
                send_job(sp.sock, [], job.files, [], {}, [], None, job.dirs, lead=lead)
                if prebuilt:  # (not a sandbox built for this run with a template's copy entered)
                    self.warm_runs += 1
            else:
                send_job(sp.sock, pipes, job.files, job.rlimits, job.env, job.argv, WORK, job.dirs, lead=lead)
            if (stage.ahead or stage.kind == "compile") and self._pool is not None:
                # The runs announced to follow (the next tests; a compile's: its tests, Runner.expect)
                # get their sandboxes built now, while this stage's program runs.
                self._pool.running()
        except (OSError, ValueError):
            if work_fd is not None:
                os.close(work_fd)
            if prebuilt:
                log.warning("pooled sandbox unusable; building one for this run", exc_info=True)
                self._finish(sp.slot, sp.cg, sp)
                return None
            # A sandbox built for this very stage could not take it: bubblewrap failed to set
            # it up (its stderr says why), or a cached file vanished.
            log.warning("sandbox could not take its job", exc_info=True)
            sp.cg.kill_all(exclude_reap=sp.proc.pid)
            diag = _read_available(sp.diag_r).decode("utf-8", "replace").strip()
            self._finish(sp.slot, sp.cg, sp)
            return StageResult(internal_error=f"could not start the sandbox: {diag or 'see the worker log'}")
        finally:
            for fd in child_ends:
                os.close(fd)
        try:
            result = self._supervise(sp, stage, on_output)
            if stage.outputs is not None:
                result.outputs = self._collect(sp, work_fd, stage.outputs)
        except BaseException:
            self._finish(sp.slot, sp.cg, sp)
            raise
        finally:
            if work_fd is not None:
                os.close(work_fd)
        # Every process already got SIGKILL; waiting for the kernel to tear the namespaces
        # down, reaping and removing the cgroup happen off the request path.
        self._finish_later(sp)
        if prebuilt and self._site_hooks.caused(result.internal_error):
            # A spare built for runs announced to follow (not reniced, so not checked to be up)
            # whose set-up failed on a Python hook removed meanwhile: its launcher never ran, so
            # neither did the program; this run gets a sandbox built for it (pysite.py).
            return None
        return result

    @staticmethod
    def _collect(sp: Spawned, work_fd: int | None, limits: OutputLimits) -> Collected:
        """The run's out/, read once every process of the run is gone (none may still write)."""
        if work_fd is None or not has_entries(work_fd):
            return Collected()  # nothing in out/: no need to wait for the processes to go
        if not sp.cg.kill_all(exclude_reap=sp.proc.pid):
            log.error("the run's processes outlived SIGKILL; its out/ is not collected")
            return Collected(truncated=True)
        return collect(work_fd, limits)

    def _finish_later(self, sp: Spawned) -> None:
        try:
            done = self._cleanups.submit(self._finish_quietly, sp)
        except RuntimeError:  # the interpreter is exiting: no new work for the threads
            self._finish_quietly(sp)
            return
        self._finishing.add(done)
        done.add_done_callback(self._finishing.discard)

    def _finish_quietly(self, sp: Spawned) -> None:
        try:
            self._finish(sp.slot, sp.cg, sp)
        except Exception:
            log.exception("sandbox clean-up failed (slot %d)", sp.slot)

    def _last_warm(self, key: tuple[int, int]) -> WarmStart | None:
        """The warm start of the last run with these limits (None: none, or warm starts off)."""
        recent = self._recent_warm.get(("run", key))
        return recent[-1] if recent and self._warm_start else None

    def _prespawn_run(self, key: tuple[int, int], soon: bool = False) -> Spawned:
        """A spare for run stages: with the program of the last run with these limits started
        in it, when that run could use a warm start (warm.py)."""
        sp = self._prespawn(key, soon)
        warm = self._last_warm(key)
        if warm is not None and self._can_enter(sp, warm):
            try:
                self._enter_spare(sp, warm)
                return sp
            except EnterError as e:
                log.info("spare built without a template's copy: %s", e)
                self._finish(sp.slot, sp.cg, sp)
                sp = self._prespawn(key, soon)
            except BaseException:
                self._finish(sp.slot, sp.cg, sp)
                raise
        if warm is not None:
            try:
                pipes = _make_pipes(sp, warm.merged)
                try:
                    send_warm(sp.sock, pipes, list(warm.rlimits), dict(warm.env), list(warm.argv), WORK,
                              warm.entry, _ENTRY_TEMP)
                finally:
                    for fd in dict.fromkeys(pipes):
                        os.close(fd)
                sp.warm = warm
            except BaseException:
                self._finish(sp.slot, sp.cg, sp)
                raise
        return sp

    def _can_enter(self, sp: Spawned, warm: WarmStart) -> bool:
        """Whether `sp`'s program for `warm`'s runs can be a template's copy (enter.py)."""
        return self._templates is not None and sp.view is not None and _enterable(warm)

    def _enter_spare(self, sp: Spawned, warm: WarmStart, wait: bool = True) -> None:
        """The spare's warm start as a copy of the template's started interpreter (enter.py),
        once bubblewrap has set the sandbox up (its launcher is up); _can_enter said it can be.
        `wait` False: EnterBusy, the sandbox untouched, unless a template is up and free."""
        assert self._templates is not None and sp.view is not None
        launcher = _pid1(sp)  # (before the template is held: bubblewrap's set-up takes a while)
        with self._templates.serving(warm, sp.view.etc, self._site_hooks.files(), wait) as template:
            pipes = _make_pipes(sp, warm.merged)
            procs: list[int] = []
            try:
                procs = sp.cg.open_procs_fds()
                work, entry = os.path.split(warm.entry)
                nspid, sp.entered = template.enter(launcher, SANDBOX_UID, sp.nice, entry, work, procs, pipes,
                                                   warm.rlimits)
                sp.template = template
            finally:
                for fd in [*procs, *dict.fromkeys(pipes)]:
                    os.close(fd)
        send_adopt(sp.sock, nspid, warm.entry, _ENTRY_TEMP)
        sp.warm = warm
        self.entered_spares += 1

    def _prespawn(self, key: tuple[int, int], soon: bool = False) -> Spawned:
        """A sandbox set up ahead of time for runs with these (memory_mb, max_disk_kb). A spare
        is built at a low priority; one that a run announced it will take next (`soon`: the
        next test case of the program running) at the priority it would get built on that
        run's own path."""
        memory_mb, disk_kb = key
        nice = 0 if soon else _PREBUILD_NICE
        # A free slot or none (NoFreeSlot; the pool tries again at the next run's news): a sandbox
        # built ahead must never make a run that builds its own wait for a slot, nor poll for one
        # every 10 ms while every slot is taken.
        # every 10 ms while every slot is taken. It never takes the slots reserved for those runs.
        return self._start_sandbox(memory_mb, disk_kb, _DEFAULTS.max_processes, nice=nice, ahead=True)

    def _start_sandbox(
        self, memory_mb: int, disk_kb: int, max_processes: int, nice: int = 0, ahead: bool = False
    ) -> Spawned:
        """Namespaces, cgroup, tmpfs, and the launcher waiting for its job as pid 1. `ahead`: built
        before any run asked (a free slot outside the reserve, or NoFreeSlot at once)."""
        assert self._launcher is not None
        slot, cg = self._new_slot_and_cgroup(ahead)
        try:
            cg.set_limits(memory_mb * 1024 * 1024, max_processes + _EXTRA_PIDS)
            host_sock, box_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            host_sock.settimeout(_SEND_TIMEOUT_S)
            inf = resource.RLIM_INFINITY
            rlimits = [  # generous until the launcher sets the stage's own in the program
                (resource.RLIMIT_CORE, 0, 0),
                (resource.RLIMIT_FSIZE, ARTIFACT_CAP, inf),
                (resource.RLIMIT_NOFILE, LAUNCHER_NOFILE, _hard(resource.RLIMIT_NOFILE)),
                (resource.RLIMIT_NPROC, max_processes + _EXTRA_PIDS, _hard(resource.RLIMIT_NPROC)),
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
                    disk_kb,
                    memory_mb,
                    host_sock,
                    extra_fds=[box_sock.fileno()],
                    nice=nice,
                )
            except BaseException:
                host_sock.close()
                raise
            finally:
                box_sock.close()
            return sp
        except BaseException:
            self._finish(slot, cg, None)
            raise

    def _discard(self, sp: Spawned) -> None:
        self._finish(sp.slot, sp.cg, sp)

    def _new_slot_and_cgroup(self, ahead: bool = False) -> tuple[int, RunCgroup]:
        assert self._slots is not None and self._cgroups is not None
        slots = self._slots
        slot = slots.acquire(0.0, below=slots.count - slots.reserved()) if ahead else slots.acquire()
        try:
            return slot, self._cgroups.create(slot)
        except BaseException:
            self._slots.release(slot)
            raise

    def _finish(self, slot: int, cg: RunCgroup, sp: Spawned | None) -> None:
        """Kill everything of the run, reap, remove its cgroup, free the slot."""
        assert self._slots is not None
        clean = False  # every process of the run seen gone: the slot's next holder need not look
        emptied = False
        try:
            if sp is not None:
                # A waiting launcher exits when its socket closes. That also ends a pooled sandbox
                # discarded so soon after it was started that its exec helper has not yet joined
                # the cgroup (it joins, then execs bubblewrap), where kill_all cannot see it.
                sp.sock.close()
                _note_child_pid(cg, read_status(sp.status_r))  # a pooled sandbox never supervised
                # A process of the sandbox was seen in its cgroup, or bubblewrap named its child:
                # the exec helper has joined the cgroup, every process that can ever be in it
                # descends from that helper, so once it is found empty it stays empty (no second
                # look: each reads cgroup.procs, ~0.07 ms inside a run).
                joined = bool(cg.seen_pids)
                emptied = cg.kill_all(exclude_reap=sp.proc.pid) and joined
                sp.reap_entered()
                if sp.proc.returncode is None:  # never supervised (a discarded pooled sandbox)
                    try:
                        sp.proc.wait(_DISCARD_WAIT_S)
                    except subprocess.TimeoutExpired:  # stuck before its launcher ran: still ours
                        log.error("sandbox process %d ignored its closed socket; killing it", sp.proc.pid)
                        sp.proc.kill()
                        sp.proc.wait()
                sp.close_fds()
            emptied = emptied or cg.kill_all()
            if sp is not None:  # every process of the sandbox is dead: its view may go
                self._views.release(sp.view)
                sp.view = None
            left = cg.reap_all(exclude=None)
            if left:  # pathological (a process stuck exiting): reap it in the background
                self._orphans.add(left)
            busy = cg.destroy()
            if busy:  # still being released (a loaded host): removed in the background
                self._orphans.add_cgroups(busy)
            clean = emptied and not left and not busy
        finally:
            self._slots.release(slot, clean)

    def _argv(
        self,
        disk_kb: int,
        file_fds: list[tuple[int, int, str]],
        status_fd: int,
        seccomp: list[int],
        proc_fds: list[tuple[int, str]] | None = None,
        view: View | None = None,
    ) -> list[str]:
        args = [
            self.bwrap,
            *[arg for fd in seccomp for arg in ("--seccomp", str(fd))],
            "--unshare-all",
            "--unshare-user",  # required, not "-try": we must never run without it
            "--disable-userns",  # no nested user namespaces: less kernel attack surface
            "--as-pid-1",  # the launcher is init: no bwrap init whose status a program could forge
            "--die-with-parent",
            "--new-session",
            "--cap-drop", "ALL",
            "--uid", str(SANDBOX_UID),
            "--gid", str(SANDBOX_UID),
            "--hostname", "sandbox",
            *self._usr,
            "--proc", "/proc",
            *mask_args(),  # host details a program has no need for (procfs.py)
            *_etc_dev_mounts(view),
            "--size", str(min(disk_kb, _SHM_MAX_KB) * 1024),
            "--tmpfs", "/dev/shm",
            "--size", str(disk_kb * 1024),
            "--tmpfs", BOX,
            "--dir", WORK,
            "--dir", f"{WORK}/{OUT_DIR}",  # where a run leaves the files it wants kept (outputs.py)
            "--dir", f"{BOX}/tmp",
            "--symlink", f"{BOX}/tmp", "/tmp",
        ]  # fmt: skip
        for fd, dest in proc_fds or []:  # synthesized files: /proc's (procfs.py), Python's site hooks (pysite.py)
            args += ["--perms", "0444", "--ro-bind-data", str(fd), dest]
        for fd, mode, dest in file_fds:
            args += ["--perms", f"{mode:04o}", "--file", str(fd), dest]
        if view is None or not view.dev:  # bwrap's --dev: a tmpfs (a view's dev/ is root's: see view.py)
            args += ["--remount-ro", "/dev"]
        return [*args, "--remount-ro", "/", "--chdir", WORK, "--json-status-fd", str(status_fd)]

    def _spawn(
        self,
        slot: int,
        cg: RunCgroup,
        files: list[FileSpec],
        command: list[str],
        env: dict[str, str],
        rlimits: list[tuple[int, int, int]],
        disk_kb: int,
        memory_mb: int,
        sock: socket.socket,
        extra_fds: list[int] | None = None,
        nice: int = 0,
    ) -> Spawned:
        uid = self.uid_base + slot
        child_fds: list[int] = []  # the child's ends; closed here once it has them
        ours: list[int] = []
        view = self._views.acquire()  # released when the sandbox is cleaned up (_finish)
        try:
            file_fds: list[tuple[int, int, str]] = []
            for spec in [*(_ETC_SPECS if view is None else []), *files]:
                fd = spec.open() if spec.data is None else _memfd(spec.data)
                child_fds.append(fd)
                dest = spec.name if spec.name.startswith("/") else f"{WORK}/{spec.name}"
                file_fds.append((fd, spec.mode, dest))
            proc_fds: list[tuple[int, str]] = []
            for data, dest in ((meminfo(memory_mb * 1024 * 1024), "/proc/meminfo"), (proc_stat(), "/proc/stat")):
                proc_fds.append((_memfd(data), dest))
                child_fds.append(proc_fds[-1][0])
            proc_fds.append((_memfd(LOADAVG), "/proc/loadavg"))
            child_fds.append(proc_fds[-1][0])
            for dest, data in self._site_hooks.files():
                proc_fds.append((_memfd(data), dest))
                child_fds.append(proc_fds[-1][0])
            # bwrap's stdin and stdout are /dev/null: the program gets its own pipes through the
            # launcher. bwrap's stderr (and the launcher's) is for diagnostics.
            devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            child_fds.append(devnull)
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

            # The exec helper (spawner.py) joins the cgroups, sets the rlimits and the priority
            # and drops to the slot's uid, then execs bwrap: no preexec_fn, so CPython vforks
            # instead of copying the whole worker with fork().
            assert self._spawner is not None
            mntns = view.mntns if view is not None else None
            netns = self._netns
            helper = spawner_argv(self._spawner, uid, uid, nice, procs_fds, rlimits, mntns, netns)
            ns_fds = [fd for fd in (mntns, netns) if fd is not None]
            argv = [*self._argv(disk_kb, file_fds, status_w, seccomp_fds, proc_fds, view), "--", *command]
            proc = subprocess.Popen(
                [*helper, *argv],
                stdin=devnull,
                stdout=devnull,
                stderr=err_w,
                env=env,
                cwd="/",
                pass_fds=[fd for fd, _, _ in file_fds]
                + [fd for fd, _ in proc_fds]
                + [status_w, *(extra_fds or []), *seccomp_fds, *procs_fds, *ns_fds],
                start_new_session=True,
            )
        except BaseException:
            for fd in ours:
                os.close(fd)
            self._views.release(view)
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        return Spawned(slot, cg, proc, status_r, sock, diag_r=err_r, fds=list(ours), nice=nice, view=view)

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
            signal_program=functools.partial(cg.signal_program, adopted=sp.adopted_run),
            # A template's copy runs it: its parent outside reports, not the launcher (enter.py).
            result_eof_ends=sp.adopted_run,
        )
        sup = supervise(watch, streams, sp.stdin_w, stage.stdin, stage.stdin_source, on_output, stage.signal_source)
        if sup.reaped:
            sp.proc.returncode = sup.status  # reaped by supervise(); keep Popen quiet
        status = [*sp.status_read, *read_status(sp.status_r)]
        _note_child_pid(cg, status)
        sr = stage_result(stage, sup, status, cg)
        if sr.internal_error:
            # No status from the launcher: bubblewrap or the launcher failed before the program
            # started, and said why on their stderr.
            diag = _read_available(sp.diag_r).decode("utf-8", "replace").strip()
            if diag:
                sr.internal_error += f": {diag}"
        return sr


def _job(stage: Stage) -> _Job:
    files: list[tuple[str, int, bytes | Callable[[], int]]] = []
    biggest = 0
    for f in stage.files:
        dest = f.name if f.name.startswith("/") else f"{WORK}/{f.name}"  # absolute: /tmp (fontcache.py)
        if f.data is not None:
            files.append((dest, f.mode, f.data))
            biggest = max(biggest, len(f.data))
        else:  # a cached compiled file: the launcher copies it in-kernel from an fd
            files.append((dest, f.mode, f.open))
            biggest = max(biggest, f.size())
    rlimits = _rlimits(stage, biggest)
    env = {"HOME": WORK, **stage.env}
    if stage.kind == "compile":
        env["LIVECODE_ARTIFACTS"] = " ".join(stage.collect)
        argv = ["/bin/sh", "-c", _COLLECT, "sh", *stage.argv]
    else:
        argv = list(stage.argv)
    # out/ is there already (bubblewrap made it); absolute names go to /tmp (fontcache.py)
    relative = (f.name for f in stage.files if not f.name.startswith("/"))
    dirs = [f"{WORK}/{d}" for d in parent_dirs(relative) if d != OUT_DIR]
    warm = None
    if stage.kind == "run":
        warm = warm_start(stage.warm_entry, WORK, argv, env, rlimits, stage.merge_stderr, stage.files)
    return _Job(files, rlimits, env, argv, dirs, warm)


def _make_pipes(sp: Spawned, merged: bool) -> list[int]:
    """Fresh pipes for one run, handed to the launcher only (bubblewrap never holds them): our
    ends go to `sp`; the program's (stdin, stdout, stderr, result) are returned for the caller to
    send and close. Merged (2>&1): the program's fds 1 and 2 are the one stdout pipe, so what it
    writes to either comes out in the order written; the stderr pipe gets EOF at once."""
    made: list[int] = []
    try:
        for _ in range(4):
            made += os.pipe2(os.O_CLOEXEC)
    except OSError:
        for fd in made:
            os.close(fd)
        raise
    stdin_r, stdin_w, out_r, out_w, err_r, err_w, res_r, res_w = made
    sp.fds += [stdin_w, out_r, err_r, res_r]
    sp.stdin_w, sp.out_r, sp.err_r, sp.result_r = stdin_w, out_r, err_r, res_r
    if merged:
        os.close(err_w)
        return [stdin_r, out_w, out_w, res_w]
    return [stdin_r, out_w, err_w, res_w]


def _rlimits(stage: Stage, biggest_file: int, extra_pids: int = _EXTRA_PIDS) -> list[tuple[int, int, int]]:
    """The program's own rlimits (the launcher sets them in the child before exec)."""
    fsize = max(stage.max_file_kb * 1024, biggest_file)  # the program's own files must fit
    cpu_s = math.ceil(stage.cpu_ms / 1000)
    nproc = min(stage.max_processes + extra_pids, _hard(resource.RLIMIT_NPROC))
    nofile = min(stage.max_open_files, _hard(resource.RLIMIT_NOFILE))
    limits = [
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_FSIZE, fsize, fsize),
        (resource.RLIMIT_NOFILE, nofile, nofile),
        (resource.RLIMIT_NPROC, nproc, nproc),
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),  # SIGXCPU, then SIGKILL a second later
    ]
    if stage.stack_kb is not None:  # the hard limit too, so the program cannot raise its own
        stack = min(stage.stack_kb * 1024, _hard(resource.RLIMIT_STACK))
        limits.append((resource.RLIMIT_STACK, stack, stack))
    return limits


def _set_up_at_normal_priority(sp: Spawned, uid: int, want: int) -> bool:
    """Wait (up to _UP_WAIT_S) for the launcher of a spare still being set up, renicing its
    processes as they stand until that renice finds one: its helper may still be root, before
    its nice 10 (spawner.c sets it, then drops to the slot uid), and then there is nothing of
    the uid to renice yet. False if the launcher never says it is up."""
    deadline = time.monotonic() + _UP_WAIT_S
    reniced = False
    while True:
        reniced = reniced or _renice_uid(uid)
        left = deadline - time.monotonic()
        up = _launcher_up(sp, want, min(left, 0.001) if not reniced else left)
        if up is not None and not up and left > 0:
            continue
        return bool(up)


def _renice_uid(uid: int) -> bool:
    """Every process of the slot's uid to nice 0, as they stand; False if it has none."""
    try:
        os.setpriority(os.PRIO_USER, uid, 0)
    except ProcessLookupError:
        return False
    return True


def _pid1(sp: Spawned) -> int:
    """The host pid of the sandbox's launcher, once it is up (bubblewrap has set the sandbox up)."""
    if not _launcher_up(sp, 1, _SEND_TIMEOUT_S):
        raise EnterError("the sandbox's launcher did not come up")
    status = read_status(sp.status_r)
    sp.status_read += status
    _note_child_pid(sp.cg, status)
    launcher = next((doc["child-pid"] for doc in status if isinstance(doc.get("child-pid"), int)), None)
    if launcher is None:
        raise EnterError("bubblewrap did not name the sandbox's pid 1")
    return launcher


def _enterable(warm: WarmStart) -> bool:
    """A warm start whose program a template's copy can be: CPython on its script, as the
    language starts it (languages.toml), no user's arguments or file name (enter_template.py),
    and the stack limit the template started with (the worker's): the C library sizes threads'
    stacks, and the kernel lays out the main stack, from the limit a process starts with, so a
    copy that set another one after its start would not have a cold start's stacks."""
    stack = resource.getrlimit(resource.RLIMIT_STACK)[0]
    return (warm.argv == ("/usr/bin/python3", "-E", "-s", "main.py") and warm.entry == f"{WORK}/main.py"
            and all(soft == stack for res, soft, _ in warm.rlimits if res == resource.RLIMIT_STACK))


def _entered_ended(sp: Spawned) -> bool:
    """Whether the spare's program, a template's copy, has ended (killed while it waited), or its
    template, which would report its exit status, has (killed: the launcher then runs the job)."""
    if sp.entered is None:
        return False
    return exited(sp.entered) or sp.template is None or not sp.template.alive


def _launcher_up(sp: Spawned, want: int, wait_s: float) -> bool | None:
    """Whether the sandbox's launcher has written `want` UP bytes (launcher.c), waiting up to
    `wait_s` for them; False if it did not in time, None if it is gone. Read from the
    descriptor: the socket's own timeout would make a recv wait for it first."""
    fd = sp.sock.fileno()
    deadline = time.monotonic() + wait_s
    poller: select.poll | None = None
    while sp.ups < want:
        try:
            got = os.read(fd, want - sp.ups)
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if poller is None:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
            poller.poll(left * 1000)
            continue
        if not got:  # the launcher is gone
            return None
        sp.ups += len(got)
    return True


def _note_child_pid(cg: RunCgroup, status: list[dict[str, int]]) -> None:
    """The sandbox's pid 1 (the launcher) is orphaned when bwrap's monitor dies first (by our
    SIGKILL, or with the thread that started it). We are the subreaper, so it becomes our zombie:
    remember it to reap it, else it would count against the slot uid's RLIMIT_NPROC."""
    for doc in status:
        if isinstance(doc.get("child-pid"), int):
            cg.seen_pids.add(doc["child-pid"])


def _hard(res: int) -> int:
    """Our own hard limit: without CAP_SYS_RESOURCE (containers) we cannot raise past it."""
    hard = resource.getrlimit(res)[1]
    return 1 << 30 if hard == resource.RLIM_INFINITY else hard


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("livecode-file", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_available(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError, OSError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks)
