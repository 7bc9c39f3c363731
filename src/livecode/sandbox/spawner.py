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

from .cbuild import build_c

SPAWNER_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void die(const char *what) {
    dprintf(2, "livecode-spawner: %s: %s\n", what, strerror(errno));
    _exit(126);
}

/* A non-negative decimal that fits; anything else is a bug of the caller: fail closed. */
static unsigned long long num(const char *s, const char *what) {
    char *end;
    errno = 0;
    if (!s || *s < '0' || *s > '9') { errno = EINVAL; die(what); }
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) { errno = EINVAL; die(what); }
    return v;
}

int main(int argc, char **argv, char **envp) {
    int i = 1;
    if (argc < 6) { errno = EINVAL; die("usage"); }
    unsigned long long uid = num(argv[i++], "uid"), gid = num(argv[i++], "gid");
    if (uid == 0 || gid == 0 || uid > 0xfffffffeULL || gid > 0xfffffffeULL) { errno = EINVAL; die("uid/gid"); }
    unsigned long long prio = num(argv[i++], "nice");
    unsigned long long nfds = num(argv[i++], "fd count");
    if (nfds > 64 || i + (int)nfds >= argc) { errno = EINVAL; die("fd count"); }
    for (unsigned long long k = 0; k < nfds; k++) {
        int fd = (int)num(argv[i++], "fd");
        if (fd < 3) { errno = EINVAL; die("fd"); }
        if (write(fd, "0", 1) != 1) die("join cgroup");
        if (close(fd) < 0) die("close cgroup fd");
    }
    if (i >= argc) { errno = EINVAL; die("limit count"); }
    unsigned long long nlim = num(argv[i++], "limit count");
    if (nlim > 32 || i + 3 * (int)nlim >= argc) { errno = EINVAL; die("limit count"); }
    for (unsigned long long k = 0; k < nlim; k++) {
        int res = (int)num(argv[i++], "resource");
        struct rlimit rl;
        rl.rlim_cur = (rlim_t)num(argv[i++], "soft limit");
        rl.rlim_max = (rlim_t)num(argv[i++], "hard limit");
        if (setrlimit(res, &rl) < 0) die("setrlimit");
    }
    if (prio > 19) { errno = EINVAL; die("nice"); }
    if (prio) {
        errno = 0;
        if (nice((int)prio) == -1 && errno) die("nice");
    }
    if (strcmp(argv[i++], "--") != 0 || i >= argc) { errno = EINVAL; die("missing -- PROGRAM"); }
    /* Groups, then gid, then uid: once the uid is dropped nothing else can be changed. */
    if (setgroups(0, NULL) < 0) die("setgroups");
    if (setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) < 0) die("setresgid");
    if (setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) < 0) die("setresuid");
    uid_t r, e, s;
    gid_t gr, ge, gs;
    if (getresuid(&r, &e, &s) < 0 || r != uid || e != uid || s != uid) { errno = EPERM; die("uid not dropped"); }
    if (getresgid(&gr, &ge, &gs) < 0 || gr != gid || ge != gid || gs != gid) { errno = EPERM; die("gid not dropped"); }
    if (getgroups(0, NULL) != 0) { errno = EPERM; die("groups not dropped"); }
    if (setresuid(0, 0, 0) == 0 || setresgid(0, 0, 0) == 0) { errno = EPERM; die("root could be taken back"); }
    execve(argv[i], argv + i, envp);
    die(argv[i]);
    return 126;
}
"""


def build_spawner(cache_dir: Path) -> Path:
    """Compile the helper into the root-only cache dir once (like the launcher). Root only: it is
    only ever run by the worker, as root."""
    return build_c(cache_dir, "spawner", SPAWNER_C, mode=0o700, what="the sandbox's spawn helper")


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
