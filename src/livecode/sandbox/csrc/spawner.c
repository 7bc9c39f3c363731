/* The sandbox's spawner: built by livecode.sandbox.cbuild (see spawner.py for what it does). */
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
