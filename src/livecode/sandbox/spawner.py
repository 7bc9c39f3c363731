"""A tiny C exec helper that starts bubblewrap as the run's slot uid.

The worker used to do this in a Python `preexec_fn`, and a `preexec_fn` makes CPython `fork()`
the whole worker (150 MB: ~8 ms of parent CPU and ~40 ms wall per sandbox) instead of `vfork()`.
This helper does the same steps after a plain `vfork` + `execve`, still as root, in this order:

  1. join the run's cgroups: write "0" to each pre-opened cgroup.procs fd, then close it;
  2. set the rlimits;
  3. lower its priority (pre-built sandboxes);
  3b. enter the lean mount namespace it is given (below), still as root;
  4. drop supplementary groups, then the gid, then the uid, and verify the drop (getresuid,
     getresgid, getgroups, and that root cannot be taken back);
  5. execve() the rest of its argv (bubblewrap) with the environment it was given.

It fails closed: any step that fails exits 126 with a message on stderr, never reaching execve.

argv: helper UID GID NICE MNTNS NETNS NFDS FD... NLIMITS (RES SOFT HARD)... -- PROGRAM ARGS...
(MNTNS, NETNS: an fd of a mount / network namespace to enter, or "-").

The lean mount namespace (`helper -n KEEP...`, lean_mount_namespace()): bubblewrap 0.8 re-reads
/proc/self/mountinfo after each of its ~19 binds, and the kernel formats every mount of the
namespace each time, the host's included (under bubblewrap's /oldroot while it sets up). So
bubblewrap starts in a namespace of its own where only the mounts its set-up uses are left: the
root, those holding the KEEP paths (/usr, /proc, /dev/null, the view) and those below them.
Everything else (/sys and the cgroup hierarchies, /dev/shm, /dev/pts, /run, a container host's
overlays, other workers' views) is detached there, after its mounts were made slaves, so nothing
done there reaches the host. The sandbox sees the same: bubblewrap binds only those paths, and
detaches /oldroot before the program starts.

The nursery network namespace (`helper -N ENTRIES`, nursery_net_namespace()): every sandbox gets a
fresh network namespace, and when one goes, the kernel (a kworker, outside any process a bench
counts) purges its TIME_WAIT sockets by walking the TCP hash table it uses: the host's whole table
(262,144 buckets on a 24 GiB host; it grows with the RAM), ~0.2 ms of CPU per sandbox here. A
namespace made from one whose net.ipv4.tcp_child_ehash_entries is set (Linux >= 6.1) gets a table
of its own of that size instead, and its teardown walks only that. So bubblewrap starts in a
network namespace of the worker's own with that setting, and makes each sandbox's from there.
Nothing else passes from it to the sandbox's namespace, which is as fresh as before, and nothing
is up in it: bubblewrap's own outer process, which stays there, has no network at all (it was in
the host's before).
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
from pathlib import Path

from .cbuild import build_c, c_source

log = logging.getLogger(__name__)

SPAWNER_C = c_source("spawner.c")


def build_spawner(cache_dir: Path) -> Path:
    """Compile the helper into the root-only cache dir once (like the launcher). Root only: it is
    only ever run by the worker, as root. Linked statically (against musl where it is installed:
    cbuild.py): it is exec'd once per sandbox, and its start then costs ~0.07 ms of CPU instead
    of ~0.6 ms (glibc static) or ~0.8 ms (dynamic)."""
    return build_c(cache_dir, "spawner", SPAWNER_C, mode=0o700, what="the sandbox's spawn helper", libs=("-static",),
                   musl=True)


def spawner_argv(
    spawner: Path,
    uid: int,
    gid: int,
    nice: int,
    procs_fds: list[int],
    rlimits: list[tuple[int, int, int]],
    mntns: int | None = None,
    netns: int | None = None,
) -> list[str]:
    """The helper's own arguments; the program's argv follows. `mntns`, `netns`: a mount
    namespace's fd (lean_mount_namespace()) and a network namespace's (nursery_net_namespace())
    to enter before dropping root; they must be passed to the child."""
    ns = ["-" if fd is None else str(fd) for fd in (mntns, netns)]
    args = [str(spawner), str(uid), str(gid), str(nice), *ns, str(len(procs_fds)), *map(str, procs_fds)]
    args.append(str(len(rlimits)))
    for res, soft, hard in rlimits:
        args += [str(res), _limit(soft), _limit(hard)]
    return [*args, "--"]


def _limit(value: int) -> str:
    # resource.RLIM_INFINITY is -1 in Python; the helper parses unsigned rlim_t values.
    return str(_RLIM_INFINITY if value < 0 else value)


_RLIM_INFINITY = (1 << 64) - 1


LEAN_NAMESPACE_TIMEOUT_S = 10.0


# A sandbox's own TCP hash table (nursery_net_namespace): the smallest useful, 1 KiB of kernel
# memory. A run cannot make a TCP socket at all (seccomp.py allows AF_UNIX only), so it is empty.
CHILD_EHASH_ENTRIES = 128


def lean_mount_namespace(spawner: Path, keep: list[str]) -> int | None:
    """An fd of a new mount namespace holding only the mounts of `keep` (and /, and what is below
    them; see above), or None (logged) where it cannot be made: bubblewrap then starts in ours."""
    paths = [os.path.realpath(p) for p in keep]
    return _helper_namespace(spawner, ["-n", *paths], "mnt", "no lean mount namespace for bubblewrap")


def nursery_net_namespace(spawner: Path, entries: int = CHILD_EHASH_ENTRIES) -> int | None:
    """An fd of a new network namespace whose children get a TCP hash table of `entries` buckets
    of their own (see above), or None (logged) where it cannot be made (Linux < 6.1): bubblewrap
    then starts in ours and each sandbox's namespace shares the host's table, as before."""
    return _helper_namespace(spawner, ["-N", str(entries)], "net", "no nursery network namespace for bubblewrap")


def _helper_namespace(spawner: Path, args: list[str], kind: str, failed: str) -> int | None:
    """Run the helper in one of its namespace modes; the fd of the namespace it made, or None."""
    try:
        with subprocess.Popen(
            [str(spawner), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as proc:
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            try:
                # Within a deadline: this runs under the views' lock, which every sandbox start takes.
                ready, _, _ = select.select([proc.stdout], [], [], LEAN_NAMESPACE_TIMEOUT_S)
                if not ready:
                    proc.kill()
                    raise OSError(f"no answer within {LEAN_NAMESPACE_TIMEOUT_S} s")
                if proc.stdout.read(2) != b"ok":
                    raise OSError(proc.stderr.read().decode("utf-8", "replace").strip() or "no answer")
                return os.open(f"/proc/{proc.pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
            finally:
                proc.stdin.close()  # it exits; the fd keeps the namespace
    except OSError as e:
        log.warning("%s (%s): it starts in the worker's", failed, e)
        return None
