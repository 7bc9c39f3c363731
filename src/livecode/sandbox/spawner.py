"""A tiny C exec helper that starts bubblewrap as the run's slot uid.

The worker used to do this in a Python `preexec_fn`, and a `preexec_fn` makes CPython `fork()`
the whole worker (150 MB: ~8 ms of parent CPU and ~40 ms wall per sandbox) instead of `vfork()`.
This helper does the same steps after a plain `vfork` + `execve`, still as root, in this order:

  1. join the run's cgroups: write "0" to each pre-opened cgroup.procs fd, then close it;
  2. set the rlimits;
  3. lower its priority (pre-built sandboxes);
  4. drop supplementary groups, then the gid, then the uid, and verify the drop (getresuid,
     getresgid, getgroups, and that root cannot be taken back);
  5. execve() the rest of its argv (bubblewrap) with the environment it was given.

It fails closed: any step that fails exits 126 with a message on stderr, never reaching execve.

argv: helper UID GID NICE NFDS FD... NLIMITS (RES SOFT HARD)... -- PROGRAM ARGS...
"""

from __future__ import annotations

from pathlib import Path

from .cbuild import build_c, c_source

SPAWNER_C = c_source("spawner.c")


def build_spawner(cache_dir: Path) -> Path:
    """Compile the helper into the root-only cache dir once (like the launcher). Root only: it is
    only ever run by the worker, as root. Linked statically (against musl where it is installed:
    cbuild.py): it is exec'd once per sandbox, and its start then costs ~0.07 ms of CPU instead
    of ~0.6 ms (glibc static) or ~0.8 ms (dynamic)."""
    return build_c(cache_dir, "spawner", SPAWNER_C, mode=0o700, what="the sandbox's spawn helper", libs=("-static",),
                   musl=True)


def spawner_argv(
    spawner: Path, uid: int, gid: int, nice: int, procs_fds: list[int], rlimits: list[tuple[int, int, int]]
) -> list[str]:
    """The helper's own arguments; the program's argv follows."""
    args = [str(spawner), str(uid), str(gid), str(nice), str(len(procs_fds)), *map(str, procs_fds)]
    args.append(str(len(rlimits)))
    for res, soft, hard in rlimits:
        args += [str(res), _limit(soft), _limit(hard)]
    return [*args, "--"]


def _limit(value: int) -> str:
    # resource.RLIM_INFINITY is -1 in Python; the helper parses unsigned rlim_t values.
    return str(_RLIM_INFINITY if value < 0 else value)


_RLIM_INFINITY = (1 << 64) - 1
