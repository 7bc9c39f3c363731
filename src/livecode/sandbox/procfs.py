"""What a run sees of /proc: its own processes, and of the host only what runtimes need.

bubblewrap mounts a fresh procfs for the sandbox's pid namespace, but the files that are not
per-process still describe the whole host. Those a program has no need for are hidden, as
container runtimes do (runc's maskedPaths): files become empty (/dev/null bound read-only over
them), directories an empty read-only tmpfs. Three host-wide files are replaced by synthesized
ones, because runtimes read them:

- /proc/meminfo: Node sizes its heap from MemTotal, the JVM reads Hugepagesize. It shows the
  run's own memory limit as MemTotal/MemFree/MemAvailable (what lxcfs or gVisor show in a container).
- /proc/stat: with no /sys in the sandbox, glibc counts the online CPUs from its `cpuN` lines
  (sysconf(_SC_NPROCESSORS_ONLN), os.cpu_count()); the JVM and libuv read it too. It keeps one
  line per host CPU, with zero counters: no host-wide CPU time, context switches or fork count.
- /proc/loadavg: glibc's getloadavg() (Python's os.getloadavg) reads it; it shows zeros.

Kept as they are: cpuinfo (the JVM reads it for CPU features, libuv/Node for os.cpus(), glibc
counts configured CPUs from it; cpuid shows the same), uptime and version (clock_gettime and
uname tell the same), cgroups (the JVM's container detection reads it), and the per-process
files, /proc/self/mountinfo included: a mount cannot cover a file of processes that do not
exist yet, and the JVM reads it (it finds no cgroup filesystem there and uses the host's
figures, as before).
"""

from __future__ import annotations

import functools
import os
import re
import stat

# Host details named by the review (kernel config, boot id, disks, PCI, pressure) and what
# else is worth hiding: the kernel's command line, swap devices, host-wide interrupt counters (a
# known side channel), every file lock on the host, every uid's key quota. Each mask is a mount in
# every sandbox's set-up, and bubblewrap re-reads the whole mount table for each bind (about
# 0.1-0.3 ms of CPU apiece here, more on hosts with many mounts), so the list stays short:
# low-value ones stay visible (see docs). Root-only ones (kcore, kmsg, slabinfo, timer_list) are
# unreadable for the sandbox's uid already and are left alone.
HIDDEN_FILES = (
    "config.gz", "cmdline", "diskstats", "partitions", "swaps", "interrupts", "locks", "key-users",
    "sys/kernel/random/boot_id",
)  # fmt: skip
HIDDEN_DIRS = ("bus", "pressure", "fs")  # PCI/USB devices, host-wide pressure, per-device fs stats
LOADAVG = b"0.00 0.00 0.00 1/1 1\n"


@functools.cache
def mask_args() -> tuple[str, ...]:
    """bubblewrap arguments hiding what exists on this host and the sandbox could read."""
    args: list[str] = []
    for name in HIDDEN_FILES:
        if _world_readable(f"/proc/{name}"):
            args += ["--ro-bind", "/dev/null", f"/proc/{name}"]
    for name in HIDDEN_DIRS:
        if _world_readable(f"/proc/{name}"):
            args += ["--tmpfs", f"/proc/{name}", "--remount-ro", f"/proc/{name}"]
    return tuple(args)


def _world_readable(path: str) -> bool:
    try:
        return bool(os.lstat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False


def meminfo(memory_bytes: int) -> bytes:
    kb = memory_bytes // 1024
    lines = [("MemTotal", kb), ("MemFree", kb), ("MemAvailable", kb)]
    lines += [(name, 0) for name in _ZERO_MEMINFO]
    lines += [("CommitLimit", kb), ("Committed_AS", 0)]
    text = "".join(f"{name + ':':<16}{value:>8} kB\n" for name, value in lines)
    return (text + "HugePages_Total:       0\nHugePages_Free:        0\n" + _hugepagesize()).encode()


_ZERO_MEMINFO = (
    "Buffers", "Cached", "SwapCached", "Active", "Inactive", "SwapTotal", "SwapFree", "Dirty",
    "Writeback", "AnonPages", "Mapped", "Shmem", "Slab", "SReclaimable", "SUnreclaim",
)  # fmt: skip


@functools.cache
def _hugepagesize() -> str:
    try:
        with open("/proc/meminfo") as f:
            found = re.search(r"^Hugepagesize:\s+(\d+) kB$", f.read(), re.M)
    except OSError:
        found = None
    return f"Hugepagesize:    {found.group(1) if found else 2048:>8} kB\n"


@functools.cache
def proc_stat() -> bytes:
    try:
        with open("/proc/stat") as f:
            host = f.read()
    except OSError:
        host = ""
    cpus = re.findall(r"^(cpu\d+) ", host, re.M)
    btime = re.search(r"^btime (\d+)$", host, re.M)  # boot time: /proc/uptime tells it anyway
    if not cpus:
        cpus = [f"cpu{i}" for i in sorted(os.sched_getaffinity(0))]
    zeros = " 0" * 10
    lines = [f"cpu {zeros}", *(f"{cpu}{zeros}" for cpu in cpus)]
    lines += ["intr 0", "ctxt 0", f"btime {btime.group(1) if btime else 0}", "processes 1"]
    lines += ["procs_running 1", "procs_blocked 0", "softirq 0"]
    return ("\n".join(lines) + "\n").encode()
