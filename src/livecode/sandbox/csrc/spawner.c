/* The sandbox's spawner: built by livecode.sandbox.cbuild (see spawner.py for what it does). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
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

/* Whether mount point `mp` is kept in the lean namespace: the root of, or an ancestor of, or
   below one of the `keep` paths (absolute, canonical). */
static int kept(const char *mp, char **keep, int nkeep) {
    for (int k = 0; k < nkeep; k++) {
        size_t m = strlen(mp), p = strlen(keep[k]);
        if (m <= p && strncmp(mp, keep[k], m) == 0 && (m == p || keep[k][m] == '/' || m == 1)) return 1;
        if (m > p && strncmp(mp, keep[k], p) == 0 && mp[p] == '/') return 1;
    }
    return 0;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo: undo it in place. */
static void unescape(char *s) {
    char *o = s;
    for (; *s; s++, o++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
            *o = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
            s += 3;
        } else {
            *o = *s;
        }
    }
    *o = 0;
}

/* The namespace is made: say so, and hold it until stdin closes (the caller opens
   /proc/PID/ns/..., which keeps it once this process is gone). */
static int made_and_held(void) {
    if (write(1, "ok", 2) != 2) die("write");
    char c;
    while (read(0, &c, 1) > 0) {}
    return 0;
}

/* `-n KEEP...`: a mount namespace for bubblewrap to start in, holding only the mounts a sandbox's
   set-up needs. Its mounts are made slaves first, so nothing done here reaches the host; then
   every mount that is not kept is detached. Prints "ok" and waits for stdin to close, so the
   caller can open /proc/PID/ns/mnt (which keeps the namespace once this process is gone). */
static int lean_namespace(int nkeep, char **keep) {
    if (unshare(CLONE_NEWNS) < 0) die("unshare");
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) die("make / a slave");
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) die("mountinfo");
    char **points = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t linecap = 0;
    while (getline(&line, &linecap, f) > 0) {
        char mp[4096];
        if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1) continue;
        unescape(mp);
        if (kept(mp, keep, nkeep)) continue;
        if (n == cap && !(points = realloc(points, (cap = cap ? 2 * cap : 64) * sizeof *points))) die("realloc");
        if (!(points[n++] = strdup(mp))) die("strdup");
    }
    fclose(f);
    while (n > 0) umount2(points[--n], MNT_DETACH); /* children first; a detached parent took its own */
    return made_and_held();
}

/* `-N ENTRIES`: a network namespace for bubblewrap to start in, where the sandbox's own network
   namespace is then made: with tcp_child_ehash_entries set here, that namespace gets a TCP hash
   table of its own of ENTRIES buckets instead of sharing the host's, and its teardown walks those
   instead of every bucket of the host's table. Nothing else is set up here (no interface is up).
   Prints "ok" and waits for stdin to close, as -n does. */
static int nursery_namespace(const char *entries) {
    (void)num(entries, "entries");
    if (unshare(CLONE_NEWNET) < 0) die("unshare");
    int fd = open("/proc/sys/net/ipv4/tcp_child_ehash_entries", O_WRONLY | O_CLOEXEC);
    if (fd < 0) die("tcp_child_ehash_entries");
    size_t len = strlen(entries);
    if (write(fd, entries, len) != (ssize_t)len) die("write tcp_child_ehash_entries");
    if (close(fd) < 0) die("close tcp_child_ehash_entries");
    return made_and_held();
}

int main(int argc, char **argv, char **envp) {
    int i = 1;
    if (argc >= 2 && strcmp(argv[1], "-n") == 0) return lean_namespace(argc - 2, argv + 2);
    if (argc == 3 && strcmp(argv[1], "-N") == 0) return nursery_namespace(argv[2]);
    if (argc < 8) { errno = EINVAL; die("usage"); }
    unsigned long long uid = num(argv[i++], "uid"), gid = num(argv[i++], "gid");
    if (uid == 0 || gid == 0 || uid > 0xfffffffeULL || gid > 0xfffffffeULL) { errno = EINVAL; die("uid/gid"); }
    unsigned long long prio = num(argv[i++], "nice");
    int mntns = strcmp(argv[i], "-") == 0 ? (i++, -1) : (int)num(argv[i++], "mount namespace fd");
    int netns = strcmp(argv[i], "-") == 0 ? (i++, -1) : (int)num(argv[i++], "network namespace fd");
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
    if (mntns >= 0) { /* still root: bubblewrap sets up in the lean namespace (-n) */
        if (setns(mntns, CLONE_NEWNS) < 0) die("setns");
        if (close(mntns) < 0) die("close mount namespace fd");
    }
    if (netns >= 0) { /* still root: bubblewrap makes the sandbox's network namespace from there (-N) */
        if (setns(netns, CLONE_NEWNET) < 0) die("setns");
        if (close(netns) < 0) die("close network namespace fd");
    }
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
