"""One cgroup per run: whole-tree memory and process limits, disk I/O limits, CPU and
peak-memory accounting, and killing every process of the run. cgroup v1 (memory, pids, cpuacct,
blkio) or v2, whichever the host has; the run's cgroups are created under the worker's own cgroup.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import signal
import time
from pathlib import Path

from .iolimits import IoLimits, disks_behind
from .types import SandboxUnavailable

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
_V1_REQUIRED = ("memory", "pids")
_V1_OPTIONAL = ("cpuacct",)
_V1_IO = "blkio"
_V2_REQUIRED = ("memory", "pids")
_V2_OPTIONAL = ("cpu", "io")  # cpu.weight/cpu.max and io.max; CPU accounting (cpu.stat) needs neither
_V2_LEAF = "livecode-supervisor"  # where the worker's own processes live (no internal processes)
_counter = itertools.count()
_warned: set[str] = set()


# os-level I/O: Python's open() adds an fstat, an isatty ioctl and an lseek to each of the ~15
# cgroup files a run opens (8 us against 2.7 us apiece, measured on a cgroup.procs).
def _read(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(fd)


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def _own_paths() -> dict[str, str]:
    """controller name ("" for v2) -> this process's cgroup path."""
    out: dict[str, str] = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def _ns_ids(pid: int) -> tuple[int, int, bool] | None:
    """A process's pid in its own (innermost) pid namespace, its parent's host pid, and whether
    it is a zombie, from /proc/PID/status. None for a process of the host's pid namespace
    (bubblewrap's monitor) as for one that is gone."""
    ns = ppid = None
    zombie = False
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"State:"):
                    zombie = line.split()[1] in (b"Z", b"X")
                elif line.startswith(b"PPid:"):
                    ppid = int(line.split()[1])
                elif line.startswith(b"NSpid:"):
                    ids = line.split()
                    if len(ids) < 3:  # "NSpid:" and the host's pid only: not in the sandbox
                        return None
                    ns = int(ids[-1])
                    break
    except (OSError, ValueError, IndexError):
        return None
    return None if ns is None or ppid is None else (ns, ppid, zombie)


class RunCgroup:
    """The cgroup(s) of one run. Create with CgroupHost.create()."""

    def __init__(self, dirs: dict[str, Path], v2: bool) -> None:
        self.dirs = dirs  # controller ("" for v2) -> directory
        self.v2 = v2
        self.seen_pids: set[int] = set()
        self.cpu_base_ms = 0
        self.limits: tuple[int, int] | None = None
        self._sampled_peak = 0  # v2, kernels < 5.19 (no memory.peak): memory.current seen at CPU checks
        self._has_peak = not v2 or "" not in dirs or (dirs[""] / "memory.peak").exists()
        # Files a run reads or resets, opened when it was created; on v2 (kernels >= 6.12) also
        # memory.peak, whose reset holds for reads through the same open file only.
        self._held: dict[Path, int] = {}

    def hold_files(self) -> None:
        """Open the files a run reads and resets (CPU, peak memory, OOM kills) now, when the
        cgroup is made (for a pre-built sandbox: off the request path). Opening a cgroup file
        waits for the cgroup tree's lock, which every cgroup made or removed on the host takes:
        0.2 ms typically, several ms on a busy host, five times per run. Not cgroup.procs: v1
        keeps the pid list it gave an open file for a second, so a re-read would be stale."""
        files: list[Path] = []
        if self.v2:
            files += [self.dirs[""] / name for name in ("cpu.stat", "memory.events")]
        else:
            files += [self.dirs["memory"] / name for name in ("memory.max_usage_in_bytes", "memory.oom_control")]
            if "cpuacct" in self.dirs:
                files.append(self.dirs["cpuacct"] / "cpuacct.usage")
        for path in files:
            with contextlib.suppress(OSError):  # then read by name, as before
                writable = path.name in ("memory.max_usage_in_bytes", "cpuacct.usage")
                self._held[path] = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)

    def _read(self, path: Path) -> str:
        fd = self._held.get(path)
        if fd is None:
            return _read(path)
        chunks: list[bytes] = []
        while chunk := os.pread(fd, 65536, sum(map(len, chunks))):  # from 0: the kernel makes it afresh
            chunks.append(chunk)
        return b"".join(chunks).decode()

    def _write(self, path: Path, value: str) -> None:
        fd = self._held.get(path)
        if fd is None:
            _write(path, value)
        else:
            os.pwrite(fd, value.encode(), 0)

    def _release_files(self) -> None:
        held, self._held = self._held, {}
        for fd in held.values():
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def _procs_dir(self) -> Path:
        if self.v2:
            return self.dirs[""]
        return self.dirs.get("pids") or next(iter(self.dirs.values()))

    def open_procs_fds(self) -> list[int]:
        """Write-only fds of every cgroup.procs; the child writes b"0" to each to join."""
        return [os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for d in self.dirs.values()]

    def set_limits(self, memory_bytes: int, max_pids: int) -> None:
        if self.limits == (memory_bytes, max_pids):
            return  # a pooled sandbox already has them
        first = self.limits is None
        raising = self.limits is not None and memory_bytes > self.limits[0]
        self.limits = (memory_bytes, max_pids)
        if self.v2:
            d = self.dirs[""]
            _write(d / "memory.max", str(memory_bytes))
            try:
                _write(d / "memory.swap.max", "0")
            except OSError as e:  # no swap accounting (swapaccount=0): swap is not bounded
                _warn_once(f"cannot set memory.swap.max ({e}): a run may use swap beyond its memory limit")
            _write(d / "pids.max", str(max_pids))
            return
        mem = self.dirs["memory"]
        files = [mem / "memory.limit_in_bytes"]
        if (mem / "memory.memsw.limit_in_bytes").exists():  # memory+swap must stay >= memory
            files.append(mem / "memory.memsw.limit_in_bytes")
        for f in reversed(files) if raising else files:
            _write(f, str(memory_bytes))
        if first:
            with contextlib.suppress(OSError):
                _write(mem / "memory.swappiness", "0")
        _write(self.dirs["pids"] / "pids.max", str(max_pids))

    def pids(self) -> list[int]:
        pids = self._ids("cgroup.procs")
        self.seen_pids.update(pids)
        return pids

    def threads(self) -> list[int]:
        """The thread ids of every process of the cgroup (a nice value is a thread's own)."""
        return self._ids("cgroup.threads" if self.v2 else "tasks")

    def _ids(self, name: str) -> list[int]:
        try:
            text = _read(self._procs_dir / name)
        except OSError:
            return []
        return [int(i) for i in text.split()]

    def reset_counters(self) -> None:
        """Forget what set-up used (a pooled sandbox is built before its run is known)."""
        if self.v2:
            self.cpu_base_ms = self._raw_cpu_ms() or 0
            self._sampled_peak = 0
            self._reset_peak_v2()
            return
        with contextlib.suppress(OSError):
            self._write(self.dirs["memory"] / "memory.max_usage_in_bytes", "0")
        if "cpuacct" in self.dirs:
            with contextlib.suppress(OSError):
                self._write(self.dirs["cpuacct"] / "cpuacct.usage", "0")

    def _reset_peak_v2(self) -> None:
        """From kernel 6.12 a write to memory.peak resets it, for reads through the same open
        file only: keep that file open. Older kernels refuse the write; then the peak also
        counts what setting up a pooled sandbox used (bubblewrap and the launcher, ~1-2 MB)."""
        path = self.dirs[""] / "memory.peak"
        old = self._held.pop(path, None)
        if old is not None:
            with contextlib.suppress(OSError):
                os.close(old)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.write(fd, b"reset")
        except OSError:
            os.close(fd)
            return
        self._held[path] = fd

    def cpu_ms(self) -> int | None:
        """Whole-tree CPU time; polled while the run goes on (see supervise)."""
        if not self._has_peak:
            self._sample_memory()
        raw = self._raw_cpu_ms()
        return None if raw is None else max(raw - self.cpu_base_ms, 0)

    def _sample_memory(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._sampled_peak = max(self._sampled_peak, int(_read(self.dirs[""] / "memory.current")))

    def _raw_cpu_ms(self) -> int | None:
        try:
            if self.v2:
                for line in self._read(self.dirs[""] / "cpu.stat").splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) // 1000
                return None
            if "cpuacct" in self.dirs:
                return int(self._read(self.dirs["cpuacct"] / "cpuacct.usage")) // 1_000_000
        except (OSError, ValueError):
            pass
        return None

    def peak_kb(self) -> int | None:
        if self.v2 and not self._has_peak:
            return self._sampled_peak_kb()
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        d = self.dirs[""] if self.v2 else self.dirs["memory"]
        try:
            return int(self._read(d / name)) // 1024  # through the reset file when there is one
        except (OSError, ValueError):
            return None

    def _sampled_peak_kb(self) -> int | None:
        """Kernels < 5.19 keep no peak: the largest memory.current seen while the run went on
        (sampled with the CPU checks, so a spike between two samples is missed), or the limit
        itself when memory.events says usage reached it (then the sample would under-report)."""
        d = self.dirs[""]
        self._sample_memory()
        with contextlib.suppress(OSError, ValueError):
            events = dict(line.split(" ", 1) for line in _read(d / "memory.events").splitlines() if " " in line)
            if int(events.get("max", "0")) > 0 and self.limits is not None:
                self._sampled_peak = max(self._sampled_peak, self.limits[0])
        return self._sampled_peak // 1024 if self._sampled_peak else None

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of this run."""
        d = self.dirs[""] if self.v2 else self.dirs["memory"]
        try:
            text = self._read(d / ("memory.events" if self.v2 else "memory.oom_control"))
            counters = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
            if "oom_kill" in counters:
                return int(counters["oom_kill"]) > 0
            if not self.v2:  # old kernels without the counter
                return int(_read(d / "memory.failcnt")) > 0
        except (OSError, ValueError):
            pass
        return False

    def kill_all(self, exclude_reap: int | None = None, timeout_s: float = 5.0) -> bool:
        """SIGKILL every process until the cgroup is empty; reap those reparented to us.

        Killing the sandbox's pid-1 also makes the kernel kill its whole pid namespace, so
        forks racing with the kill cannot outlive it. Returns True once empty.
        """
        if self.v2 and (self.dirs[""] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(self.dirs[""] / "cgroup.kill", "1")
        deadline = time.monotonic() + timeout_s
        pause = 0.0005
        while True:
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.reap(exclude_reap)
            if not pids:
                return True
            if time.monotonic() > deadline:
                log.error("cgroup %s still has processes %s", self._procs_dir, pids)
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.02)

    def kill_once(self) -> None:
        """One SIGKILL pass over the cgroup, without waiting for the processes to go."""
        if self.v2 and (self.dirs[""] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(self.dirs[""] / "cgroup.kill", "1")
            return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def signal_program(self, sig: int, adopted: bool = False) -> bool:
        """Send `sig` to the run's program: the oldest living child of the sandbox's pid 1 (the
        launcher), i.e. the lowest pid in the sandbox's pid namespace among its children. The
        launcher forks the program before anything else of the run exists, so the program's
        orphans, reparented to the launcher, all come after it; it is pid 2, or later when the
        launcher stopped a program started ahead for other runs (warm.py). `adopted`: the
        program is a template's copy (enter.py), whose parent is outside the sandbox: the only
        process of the sandbox's namespace whose parent is not in it (its orphans are the
        launcher's). Only that kind is looked for: a copy the launcher has just killed to run
        another program (U) may still be dying, and is not that program.
        seccomp refuses new namespaces, so no process of the run has a pid of another namespace.
        Only a process of this cgroup gets it, through a pidfd checked after it was opened, so a
        host pid reused in between is never hit. False when the program is not there (not
        started yet, or gone)."""
        procs = {pid: ids for pid in self.pids() if (ids := _ns_ids(pid)) is not None}
        launcher = next((pid for pid, (ns, _, _) in procs.items() if ns == 1), None)

        def candidate(ids: tuple[int, int, bool] | None) -> bool:  # living, and its parent the program's
            return ids is not None and ids[0] > 1 and not ids[2] and (
                ids[1] not in procs if adopted else ids[1] == launcher)

        children = sorted((ids[0], pid) for pid, ids in procs.items() if launcher is not None and candidate(ids))
        if not children:
            return False
        ns, pid = children[0]
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return False
        try:
            now = _ns_ids(pid)
            if pid in self.pids() and candidate(now) and now is not None and now[0] == ns:
                signal.pidfd_send_signal(fd, sig)
                return True
        except OSError:
            pass  # it ended meanwhile
        finally:
            os.close(fd)
        return False

    def reap(self, exclude: int | None) -> None:
        """waitpid() the run's processes that became our children (we are a subreaper)."""
        for pid in list(self.seen_pids):
            if pid == exclude:
                continue
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                # Not our child (yet: it is reparented to us only when its parent dies), or
                # gone. Forget it only once it no longer exists at all.
                if not os.path.exists(f"/proc/{pid}"):
                    self.seen_pids.discard(pid)
                continue
            if done:
                self.seen_pids.discard(pid)

    def reap_all(self, exclude: int | None, timeout_s: float = 2.0) -> set[int]:
        """Reap the run's processes that were reparented to us, waiting for those still exiting
        (bwrap's pid-1 finishes only after the kernel killed its whole pid namespace).
        Returns the pids still around at the deadline."""
        deadline = time.monotonic() + timeout_s
        pause = 0.0002
        while True:
            self.reap(exclude)
            left = {p for p in self.seen_pids if p != exclude and os.path.exists(f"/proc/{p}")}
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(pause)
            pause = min(pause * 2, 0.01)

    def destroy(self) -> list[Path]:
        """Remove the run's cgroup directories; returns those still busy after about a second
        (their last processes still being released: a loaded host) for a later retry."""
        self._release_files()
        busy = []
        for d in self.dirs.values():
            for attempt in range(200):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        log.warning("cannot remove cgroup %s: %s", d, e)
                        break
                    if attempt == 199:
                        busy.append(d)
                        break
                    self.reap(None)
                    time.sleep(0.005)
        return busy


class CgroupHost:
    """Where this worker creates its runs' cgroups."""

    def __init__(self, parents: dict[str, Path], v2: bool) -> None:
        self.parents = parents
        self.v2 = v2
        # (controller, file, line) written into every new run cgroup: the disk I/O bounds.
        self.io_rules: list[tuple[str, str, str]] = []

    @classmethod
    def detect(cls, io: IoLimits | None = None, io_paths: list[str] | None = None) -> CgroupHost:
        """The worker's cgroup host. With `io` limits, every run is bounded on the disks behind
        `io_paths` where the kernel allows it (blkio on v1, the io controller on v2)."""
        host = cls._detect(io is not None and io.enabled)
        if io is not None and io.enabled:
            host._set_up_io(io, io_paths or [])
        return host

    @classmethod
    def _detect(cls, want_io: bool) -> CgroupHost:
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "cannot create cgroups: the worker must run as root (it drops to a per-run "
                "unprivileged uid for user code)"
            )
        own = _own_paths()
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            return cls._detect_v2(own.get("", "/"), want_io)
        parents: dict[str, Path] = {}
        for c in _V1_REQUIRED + _V1_OPTIONAL + ((_V1_IO,) if want_io else ()):
            base = CGROUP_ROOT / c
            if not (base / "cgroup.procs").exists():
                if c in _V1_REQUIRED:
                    raise SandboxUnavailable(
                        f"cgroup v1 controller '{c}' is not mounted at {base}: mount it "
                        f"(mount -t cgroup -o {c} cgroup {base}) or use a cgroup v2 host"
                    )
                continue
            parent = base / own.get(c, "/").lstrip("/") / "livecode"
            try:
                parent.mkdir(exist_ok=True)
            except OSError as e:
                raise SandboxUnavailable(
                    f"cannot create cgroup {parent}: {e}; run the worker as root or delegate a writable cgroup to it"
                ) from e
            parents[c] = parent
        host = cls(parents, v2=False)
        host.sweep()
        return host

    @classmethod
    def _detect_v2(cls, own_path: str, want_io: bool = False) -> CgroupHost:
        own = _v2_own_cgroup(own_path)
        enabled = _v2_delegate(own, [c for c in _V2_OPTIONAL if c != "io" or want_io])
        log.info("cgroup v2: runs' cgroups under %s (controllers %s)", own, " ".join(sorted(enabled)))
        host = cls({"": own}, v2=True)
        host.sweep()
        return host

    def _set_up_io(self, io: IoLimits, paths: list[str]) -> None:
        """Keep the I/O rules the kernel accepts, tried once on a probe cgroup (a device
        without blk-throttle support refuses them), so each run's cgroup just writes them."""
        controller = "" if self.v2 else _V1_IO
        parent = self.parents.get(controller)
        try:
            if self.v2:  # io.max exists in the run cgroups only with io in the parent's subtree_control
                usable = parent is not None and "io" in _read(parent / "cgroup.subtree_control").split()
            else:
                usable = parent is not None and (parent / "blkio.throttle.read_bps_device").exists()
        except OSError:
            usable = False
        if parent is None or not usable:
            log.warning("no usable blkio (v1) / io (v2) cgroup controller: the disk I/O of runs is not bounded")
            return
        candidates: list[tuple[str, str, str]] = []
        for device in disks_behind(paths):
            if self.v2:
                candidates.append((controller, "io.max", io.v2_line(device)))
            else:
                candidates += [(controller, name, line) for name, line in io.v1_rules(device)]
        probe = parent / f"probe-{os.getpid()}"
        try:
            probe.mkdir(exist_ok=True)
            for rule in candidates:
                try:
                    _write(probe / rule[1], rule[2])
                    self.io_rules.append(rule)
                except OSError as e:
                    log.warning("disk I/O limit %r refused by the kernel (%s): not bounded on that device", rule[2], e)
        finally:
            with contextlib.suppress(OSError):
                probe.rmdir()
        log.info("disk I/O of each run bounded by: %s", [line for _, _, line in self.io_rules])

    def create(self, slot: int) -> RunCgroup:
        name = f"run-{os.getpid()}-{slot}-{next(_counter)}"
        dirs: dict[str, Path] = {}
        try:
            for c, parent in self.parents.items():
                d = parent / name
                d.mkdir()
                dirs[c] = d
            for controller, file, line in self.io_rules:
                _write(dirs[controller] / file, line)
        except OSError:
            RunCgroup(dirs, self.v2).destroy()
            raise
        cg = RunCgroup(dirs, self.v2)
        cg.hold_files()
        return cg

    def sweep(self) -> None:
        """Remove run cgroups left by workers that died (their pid is gone)."""
        for c, parent in self.parents.items():
            for d in parent.glob("run-*"):
                try:
                    owner = int(d.name.split("-")[1])
                except (IndexError, ValueError):
                    continue
                if owner == os.getpid() or Path(f"/proc/{owner}").exists():
                    continue
                RunCgroup({c: d}, self.v2).kill_all(timeout_s=1.0)
                RunCgroup({c: d}, self.v2).destroy()


def _v2_own_cgroup(own_path: str) -> Path:
    """The cgroup this worker delegates from: its own, or the parent of the leaf an earlier
    start-up (this process or a sibling worker process) moved it to."""
    own = CGROUP_ROOT / own_path.lstrip("/")
    if own.name == _V2_LEAF:
        own = own.parent
    if not (own / "cgroup.procs").exists():
        raise SandboxUnavailable(
            f"/proc/self/cgroup names cgroup {own_path!r} but {own} does not exist: mount the cgroup2 "
            f"filesystem of this process's cgroup namespace at {CGROUP_ROOT} (containers: a private "
            "cgroup namespace, e.g. Docker's --cgroupns=private)"
        )
    return own


def _v2_delegate(own: Path, optional: list[str]) -> set[str]:
    """Enable memory and pids (and the `optional` ones when offered) for the child cgroups of `own`.
    Returns the controllers now enabled there.

    cgroup v2 lets a non-root cgroup hand controllers to its children only while no process
    lives in it ("no internal processes"), and the worker itself (with any process beside it:
    a container's init, the Celery parent and its other children) lives in `own`. As container
    runtimes and systemd do, every process of `own` first moves to a leaf child, then the
    controllers are enabled; the runs' cgroups are the leaf's siblings.
    """
    try:
        available = set(_read(own / "cgroup.controllers").split())
        enabled = set(_read(own / "cgroup.subtree_control").split())
    except OSError as e:
        raise SandboxUnavailable(f"cannot read the cgroup v2 controllers of {own}: {e}") from e
    missing = [c for c in _V2_REQUIRED if c not in available]
    if missing:
        raise SandboxUnavailable(
            f"cgroup v2 controller(s) {', '.join(missing)} not delegated to {own} (it offers: "
            f"{' '.join(sorted(available)) or 'none'}): the parent cgroup must enable them "
            "(systemd: Delegate=yes on the worker's unit; containers: a cgroup v2 runtime)"
        )
    wanted = [c for c in [*_V2_REQUIRED, *optional] if c in available and c not in enabled]
    for c in wanted:
        try:
            _v2_enable(own, c)
            enabled.add(c)
        except OSError as e:
            if c in _V2_REQUIRED:
                raise SandboxUnavailable(
                    f"cannot enable the cgroup v2 {c} controller for child cgroups of {own}: {e}; "
                    "run the worker as root in a cgroup delegated to it (systemd: Delegate=yes)"
                ) from e
            log.warning("cannot enable the cgroup v2 %s controller under %s: %s", c, own, e)
    return enabled


def _v2_enable(own: Path, controller: str, attempts: int = 50) -> None:
    for _ in range(attempts):
        try:
            _write(own / "cgroup.subtree_control", "+" + controller)
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
        _v2_move_to_leaf(own)  # processes live in `own` (one may have been forked meanwhile)
    raise OSError(errno.EBUSY, f"processes keep appearing in {own}")


def _v2_move_to_leaf(own: Path) -> None:
    leaf = own / _V2_LEAF
    leaf.mkdir(exist_ok=True)
    for pid in _read(own / "cgroup.procs").split():
        try:
            _write(leaf / "cgroup.procs", pid)
        except ProcessLookupError:
            pass  # exited meanwhile
