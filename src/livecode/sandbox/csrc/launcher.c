/* The sandbox's launcher: built by livecode.sandbox.cbuild (see launcher.py for what it does). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ARGS 4096
#define MAX_ENV 512
#define MAX_LIMITS 32
#define FDS_PER_MSG 253 /* SCM_MAX_FD */

static char *buf;
static size_t len, cap;
static int *fds;
static size_t nfds, fds_cap;
static size_t arg_at[MAX_ARGS], env_at[MAX_ENV], cwd_at;
static int na, ne, nl, have_cwd;
static int lres[MAX_LIMITS];
static struct rlimit lval[MAX_LIMITS];

static void die(const char *what) {
    dprintf(2, "livecode-launcher: %s: %s\n", what, strerror(errno));
    _exit(127);
}

/* Offsets of the n NUL-terminated fields from `at`; 0 if they have not all arrived yet. */
static int fields(size_t at, int n, size_t *start, size_t *next) {
    for (int i = 0; i < n; i++) {
        char *nul = at < len ? memchr(buf + at, 0, len - at) : NULL;
        if (!nul) return 0;
        start[i] = at;
        at = (size_t)(nul - buf) + 1;
    }
    *next = at;
    return 1;
}

/* The host checks every path (program.py); refusing a ".." component here as well means a
   mistake there still cannot write outside the work directory. */
static void check_path(const char *path) {
    for (const char *p = path; (p = strstr(p, "..")) != NULL; p += 2) {
        if ((p == path || p[-1] == '/') && (p[2] == '/' || p[2] == 0)) { errno = EINVAL; die(path); }
    }
}

static int create(const char *path, const char *mode_field, mode_t *mode) {
    *mode = (mode_t)strtol(mode_field, NULL, 8);
    check_path(path);
    int out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0) die(path);
    return out;
}

/* Handle every complete record from *pos on; stop at one that has not fully arrived. */
static void parse(size_t *pos) {
    while (*pos < len) {
        char tag = buf[*pos];
        size_t f[3], next;
        int nf = tag == 'R' || tag == 'F' || tag == 'D' ? 3 : tag == 'M' ? 2 : 1;
        if (!fields(*pos + 1, nf, f, &next)) return;
        if (tag == 'A') {
            if (na == MAX_ARGS) { errno = E2BIG; die("argv"); }
            arg_at[na++] = f[0];
        } else if (tag == 'E') {
            if (ne == MAX_ENV) { errno = E2BIG; die("env"); }
            env_at[ne++] = f[0];
        } else if (tag == 'C') {
            cwd_at = f[0];
            have_cwd = 1;
        } else if (tag == 'R') {
            if (nl == MAX_LIMITS) { errno = E2BIG; die("rlimits"); }
            lres[nl] = atoi(buf + f[0]);
            lval[nl].rlim_cur = strtoull(buf + f[1], NULL, 10);
            lval[nl].rlim_max = strtoull(buf + f[2], NULL, 10);
            nl++;
        } else if (tag == 'M') { /* a directory of the program's files, parents first */
            check_path(buf + f[0]);
            if (mkdir(buf + f[0], (mode_t)strtol(buf + f[1], NULL, 8)) < 0) die(buf + f[0]);
        } else if (tag == 'F') {
            size_t size = strtoull(buf + f[2], NULL, 10);
            if (len - next < size) return; /* the content is still on its way */
            mode_t mode;
            int out = create(buf + f[0], buf + f[1], &mode);
            for (size_t off = 0; off < size;) {
                ssize_t w = write(out, buf + next + off, size - off);
                if (w < 0) { if (errno == EINTR) continue; die(buf + f[0]); }
                off += (size_t)w;
            }
            if (fchmod(out, mode) < 0 || close(out) < 0) die(buf + f[0]);
            next += size;
        } else if (tag == 'D') { /* file content from a passed fd (a cached compiled program) */
            size_t idx = strtoull(buf + f[2], NULL, 10);
            if (idx < 4 || idx >= nfds || fds[idx] < 0) { errno = EINVAL; die("fd index"); }
            mode_t mode;
            int out = create(buf + f[0], buf + f[1], &mode);
            for (;;) {
                ssize_t w = sendfile(out, fds[idx], NULL, 1 << 30);
                if (w < 0) { if (errno == EINTR) continue; die(buf + f[0]); }
                if (w == 0) break;
            }
            if (fchmod(out, mode) < 0 || close(out) < 0) die(buf + f[0]);
            close(fds[idx]);
            fds[idx] = -1;
        } else {
            errno = EINVAL;
            die("bad message");
        }
        *pos = next;
    }
}

int main(int argc, char **argv) {
    /* First of all: not dumpable, so the program (same uid) cannot ptrace us, open our fds
       through /proc/1/fd or take them with pidfd_getfd. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (argc != 2) { errno = EINVAL; die("usage: launcher SOCKET_FD"); }
    int sock = atoi(argv[1]);
    if (sock < 3) { errno = EINVAL; die("socket fd"); }
    /* Hold nothing bubblewrap may have left open besides stdio and the socket. */
    /* The raw call: musl (the static build, cbuild.py) has no close_range() wrapper. */
    syscall(SYS_close_range, 3U, (unsigned)sock - 1, 0U);
    syscall(SYS_close_range, (unsigned)sock + 1, ~0U, 0U);
    cap = 1 << 20;
    buf = malloc(cap);
    if (!buf) die("malloc");
    size_t pos = 0;
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf) die("realloc");
        }
        struct iovec iov = { buf + len, cap - len };
        union { struct cmsghdr align; char raw[CMSG_SPACE(sizeof(int) * FDS_PER_MSG)]; } control;
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                              .msg_control = control.raw, .msg_controllen = sizeof control.raw };
        ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) { if (errno == EINTR) continue; die("recvmsg"); }
        if (msg.msg_flags & MSG_CTRUNC) { errno = EMFILE; die("descriptors lost in transit"); }
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            if (nfds + k > fds_cap) {
                fds_cap = (nfds + k) * 2;
                fds = realloc(fds, fds_cap * sizeof(int));
                if (!fds) die("realloc");
            }
            memcpy(fds + nfds, CMSG_DATA(c), sizeof(int) * k);
            nfds += k;
        }
        if (n == 0) break;
        len += (size_t)n;
        parse(&pos);
    }
    close(sock);
    if (len == 0) _exit(0); /* the host discarded this sandbox */
    if (pos != len) { errno = EINVAL; die("truncated message"); }
    if (nfds < 4) { errno = EINVAL; die("missing stdio/result fds"); }
    if (na == 0) { errno = EINVAL; die("no program"); }
    int result_fd = fds[3];
    char *args[MAX_ARGS + 1], *envs[MAX_ENV + 1];
    for (int i = 0; i < na; i++) args[i] = buf + arg_at[i];
    for (int i = 0; i < ne; i++) envs[i] = buf + env_at[i];
    args[na] = NULL;
    envs[ne] = NULL;
    const char *cwd = have_cwd ? buf + cwd_at : "/";
    if (chdir(cwd) < 0) die(cwd);
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        /* The program's stdio: pipes made for this run only, never held by bubblewrap's own
           process, so end-of-output comes as soon as the program's processes close them. */
        for (int i = 0; i < 3; i++)
            if (dup2(fds[i], i) < 0) die("dup2");
        for (int i = 0; i < nl; i++)
            if (setrlimit(lres[i], &lval[i]) < 0) die("setrlimit");
        /* Every signal at its default and none blocked, whatever the worker was started with: a
           worker started in the background (nohup, `&` in a script) ignores SIGINT and SIGQUIT,
           an ignored signal survives execve, and the program would never see a user's Ctrl-C. */
        sigset_t none;
        sigemptyset(&none);
        if (sigprocmask(SIG_SETMASK, &none, NULL) < 0) die("sigprocmask");
        for (int sig = 1; sig < NSIG; sig++)
            if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL); /* libc's own: EINVAL, fine */
        execve(args[0], args, envs);
        die(args[0]);
    }
    for (int i = 0; i < 3; i++) close(fds[i]);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) { dup2(devnull, 0); dup2(devnull, 1); dup2(devnull, 2); }
    /* As init, every orphan of the run is reparented to us: reap them all, and report only
       when the program itself has exited or was killed. A stop is a ptrace-stop of a process
       that made us its tracer (we never attach or ask for stops): detach it and deliver its
       signal, as if it had no tracer; if that fails, kill it rather than leave it hanging. */
    int status;
    for (;;) {
        pid_t pid = waitpid(-1, &status, __WALL);
        if (pid < 0) {
            if (errno == EINTR) continue;
            _exit(127); /* ECHILD: cannot happen while the program is unreaped */
        }
        if (WIFSTOPPED(status)) {
            if (ptrace(PTRACE_DETACH, pid, 0, (void *)(long)WSTOPSIG(status)) < 0 && errno != ESRCH)
                kill(pid, SIGKILL);
            continue;
        }
        if (pid == child && (WIFEXITED(status) || WIFSIGNALED(status))) break;
    }
    char line[64];
    int n;
    if (WIFEXITED(status)) n = snprintf(line, sizeof line, "exit %d\n", WEXITSTATUS(status));
    else n = snprintf(line, sizeof line, "signal %d\n", WTERMSIG(status));
    if (write(result_fd, line, (size_t)n) < 0) _exit(127);
    /* Our exit ends the pid namespace: the kernel kills whatever the program left behind. */
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}
