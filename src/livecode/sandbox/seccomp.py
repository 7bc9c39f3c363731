"""The seccomp filter every sandboxed process runs under (bubblewrap's --seccomp FD).

A deny list in the spirit of Docker's default profile: what a program has no use for, and what
would let it reach kernel-wide pools (AIO events, io_uring), other processes (ptrace), the
kernel's less-travelled code (bpf, userfaultfd, perf, keyrings) or the network stack (only
AF_UNIX sockets). Denied calls fail with an errno, never a kill, so runtimes that probe a
feature (glibc's clone3, libuv's io_uring, getaddrinfo's netlink) fall back quietly.

The filter is compiled by libseccomp, not written by hand: a tiny C program linked with it
(built once into the root-only cache dir, like the launcher) reads the rules below on stdin and
writes the BPF program with seccomp_export_bpf(). The blob is cached next to it, keyed by the
rules and the C source, for the native architecture of the host it was built on. Any other
syscall ABI (i386 `int 0x80`, x32) gets ENOSYS for everything.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from .cbuild import build_c, c_source
from .types import SandboxUnavailable

# Denied with EPERM, grouped by why.
DENIED: dict[str, tuple[str, ...]] = {
    # Reading or steering other processes (and the launcher's outcome: PTRACE_TRACEME).
    "other processes": (
        "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd",
        "migrate_pages", "move_pages",
    ),
    # Kernel-wide pools: one run could take every AIO event of the host (fs.aio-max-nr).
    "async I/O": (
        "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
        "io_uring_setup", "io_uring_enter", "io_uring_register",
    ),
    # Large, often-exploited kernel surface no program here needs.
    "kernel surface": (
        "bpf", "perf_event_open", "userfaultfd", "modify_ldt", "memfd_secret", "lookup_dcookie",
        "add_key", "keyctl", "request_key", "uselib", "vm86", "vm86old", "iopl", "ioperm",
    ),
    # New namespaces (clone's namespace flags are below; clone3 gets ENOSYS).
    "namespaces": ("unshare", "setns"),
    "mounts and file systems": (
        "mount", "umount", "umount2", "pivot_root", "chroot", "swapon", "swapoff",
        "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
        "quotactl", "quotactl_fd", "open_by_handle_at", "name_to_handle_at", "fanotify_init",
        "nfsservctl", "sysfs", "ustat", "_sysctl",
        # They list every mount of the sandbox with its source: the host's block device and the
        # slot's host uid, whatever /proc/self/mountinfo shows.
        "statmount", "listmount",
    ),
    "host administration": (
        "reboot", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
        "create_module", "query_module", "get_kernel_syms", "acct", "syslog", "vhangup",
        "settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex",
        "sethostname", "setdomainname",
    ),
}  # fmt: skip

# Syscalls newer than the libseccomp of Debian 12 (2.5.4) knows by name. Numbers of syscalls
# added since Linux 5.1 are the same on x86-64, arm64 and the other unified-table architectures.
NEWER_SYSCALLS = {"statmount": 457, "listmount": 458}

# clone3 passes its flags in memory, where a filter cannot look: ENOSYS makes glibc (and
# others) fall back to clone, whose flags are checked below.
ENOSYS = ("clone3",)

# clone(flags, ...): arg 0 is the flags on x86-64 and arm64. CLONE_NEWTIME is left out: for
# clone its bit is part of the exit signal (it is only valid for clone3 and unshare).
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}

# No network: a run has no use for AF_INET/AF_INET6 (their buffers are not charged to the
# run's memory on cgroup v1), AF_NETLINK, AF_PACKET, AF_VSOCK, ... Only AF_UNIX. The errno is
# the one a kernel without the family gives, so runtimes treat it as "not available here".
AF_UNIX = 1
SOCKET_CALLS = ("socket", "socketpair")
SOCKET_ERRNO = errno.EAFNOSUPPORT

# The host's hugetlb pool (vm.nr_hugepages, e.g. reserved for PostgreSQL's huge_pages) is
# kernel-wide and not charged to the run's memory cgroup: no huge pages asked for explicitly.
# (Transparent huge pages are ordinary, charged memory and stay allowed.)
HUGETLB_FLAGS = {  # syscall: (argument index, flag)
    "mmap": (3, 0x40000),  # MAP_HUGETLB
    "memfd_create": (1, 0x4),  # MFD_HUGETLB
    "shmget": (2, 0o4000),  # SHM_HUGETLB
}

# personality(2): only the default (PER_LINUX) and the query (0xffffffff); no
# ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ...
PERSONALITY_ALLOWED = (0x0, 0xFFFFFFFF)


def rules() -> list[str]:
    """The filter as lines for the generator: `ERRNO SYSCALL[=NUMBER] [ARG OP A B]...`.

    NUMBER is used when libseccomp does not know the name. OP is ne or gt (argument vs A) or
    masked_eq ((argument & A) == B). A call is denied with ERRNO when every comparison of one of
    its lines holds; a line without comparisons always holds."""
    lines = [f"{errno.EPERM} {_named(name)}" for group in DENIED.values() for name in group]
    lines += [f"{errno.ENOSYS} {name}" for name in ENOSYS]
    lines += [f"{errno.EPERM} clone 0 masked_eq {flag} {flag}" for flag in CLONE_NAMESPACE_FLAGS.values()]
    lines += [f"{SOCKET_ERRNO} {name} 0 ne {AF_UNIX} 0" for name in SOCKET_CALLS]
    lines += [f"{errno.EPERM} {name} {arg} masked_eq {flag} {flag}" for name, (arg, flag) in HUGETLB_FLAGS.items()]
    lines += [f"{errno.EPERM} personality 0 {op} {a} {b}" for op, a, b in _personality_denied()]
    return lines


def _named(name: str) -> str:
    return f"{name}={NEWER_SYSCALLS[name]}" if name in NEWER_SYSCALLS else name


def _personality_denied() -> list[tuple[str, int, int]]:
    """personality(x) is denied unless x is 0 or 0xffffffff. libseccomp allows one comparison per
    argument in a rule, and rules are OR-ed, so this is said as: x has a bit above 31, or, going
    round the 32 low bits, some bit is set while the next one is clear (which is true exactly
    when the low bits are neither all clear nor all set)."""
    assert PERSONALITY_ALLOWED == (0x0, 0xFFFFFFFF)
    denied = [("gt", 0xFFFFFFFF, 0)]
    for bit in range(32):
        both = (1 << bit) | (1 << ((bit + 1) % 32))
        denied.append(("masked_eq", both, 1 << bit))
    return denied


GENERATOR_C = c_source("seccomp_gen.c")

INSTALL_HINT = "apt-get install libseccomp-dev gcc (see scripts/install-system-deps.sh)"


def build_filter(cache_dir: Path) -> Path:
    """The BPF program for bwrap --seccomp, built once into the root-only cache dir.

    Raises SandboxUnavailable (saying what to install) when it cannot be built."""
    spec = "\n".join(rules()) + "\n"
    digest = hashlib.sha256((os.uname().machine + GENERATOR_C + spec).encode()).hexdigest()[:16]
    target = cache_dir / f"seccomp-{digest}.bpf"
    if target.exists():
        return target
    exe = build_c(cache_dir, "seccomp-gen", GENERATOR_C, mode=0o700, what="the seccomp filter generator",
                  libs=("-lseccomp",), strip=False, hint=INSTALL_HINT)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        out = Path(tmp, "filter.bpf")
        with open(out, "wb") as f:
            gen = subprocess.run([str(exe)], input=spec.encode(), stdout=f, stderr=subprocess.PIPE, timeout=60,
                                 env={"PATH": "/usr/bin:/bin"}, check=False)
        size = out.stat().st_size
        if gen.returncode != 0 or size == 0 or size % 8:  # struct sock_filter is 8 bytes
            detail = gen.stderr.decode("utf-8", "replace").strip()[-500:]
            raise SandboxUnavailable(f"cannot generate the seccomp filter: {detail or 'empty program'}")
        out.chmod(0o644)
        os.replace(out, target)
    return target
