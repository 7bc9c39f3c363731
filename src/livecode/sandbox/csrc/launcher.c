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
#include <time.h>
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
/* A warm start (launcher.py): the program started ahead of its job, reading its entry file
   through a FIFO until the job gives the file. */
static pid_t warm_pid;
/* An entered warm start (P, enter.py): the program is not our child but a started interpreter
   that entered the sandbox from the host's template, its parent outside (it reports the exit
   status itself); warm_pid is its pid here, for U's kill and the FIFO's wait. */
static int adopted;
static int warm_result = -1;
static size_t warm_path_at, warm_temp_at, entry_at, entry_size;
static int go, unwarmed, entry_done, first_fd = 4, entry_w = -1;
/* The host's socket. We write UP on it once we run (bubblewrap's clone of us is over) and once
   more when a warm start's program is forked: after those, no process of the sandbox is being
   forked until the job comes, so the host's renice of a spare built at a low priority cannot
   miss one (bwrap.py). The host reads them only for such a spare. A failed write is ignored:
   the host has closed its end to discard us, and our next read ends us. */
static int sock = -1;
#define UP "u"

static void tell_up(void) {
    if (send(sock, UP, 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) { /* nothing to do */ }
}

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

/* In the program's child: its pipes as stdio, its rlimits, every signal at its default, exec. */
static void exec_program(const int *stdio) {
    static char *args[MAX_ARGS + 1], *envs[MAX_ENV + 1];
    for (int i = 0; i < na; i++) args[i] = buf + arg_at[i];
    for (int i = 0; i < ne; i++) envs[i] = buf + env_at[i];
    args[na] = NULL;
    envs[ne] = NULL;
    /* The program's stdio: pipes made for this run only, never held by bubblewrap's own
       process, so end-of-output comes as soon as the program's processes close them. */
    for (int i = 0; i < 3; i++)
        if (dup2(stdio[i], i) < 0) die("dup2");
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

/* Fork the program from the records received so far (argv, env, cwd, rlimits) with `stdio`. */
static pid_t fork_program(const int *stdio) {
    if (na == 0) { errno = EINVAL; die("no program"); }
    const char *cwd = have_cwd ? buf + cwd_at : "/";
    if (chdir(cwd) < 0) die(cwd);
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) exec_program(stdio);
    return child;
}

/* A warm start's program, kept until it has opened its entry FIFO: its argv, environment and
   rlimits (restored if it must be started again) and our copies of its stdio. */
static int warm_na, warm_ne, warm_nl, warm_stdio[3] = { -1, -1, -1 };

/* W: start the program now, its entry file a FIFO it blocks on at the end of its start-up
   (an interpreter opens its script once it is initialized); the job comes later (G). */
static void start_warm(size_t path_at, size_t temp_at) {
    if (warm_pid || unwarmed) { errno = EINVAL; die("warm start twice"); }
    if (nfds < 4) { errno = EINVAL; die("missing stdio/result fds"); }
    check_path(buf + path_at);
    check_path(buf + temp_at);
    if (mkfifo(buf + path_at, 0600) < 0) die(buf + path_at);
    warm_path_at = path_at;
    warm_temp_at = temp_at;
    warm_pid = fork_program(fds);
    tell_up();
    memcpy(warm_stdio, fds, sizeof warm_stdio);
    warm_result = fds[3];
    warm_na = na, warm_ne = ne, warm_nl = nl;
    na = ne = nl = 0; /* the job's records start afresh (a G job has none: these stay as they are) */
    /* Its four pipes were the first message's; descriptors of the job that came in the same
       read (a sandbox taken as soon as it was built) are the job's first. */
    nfds -= 4;
    memmove(fds, fds + 4, nfds * sizeof(int));
}

/* P: the program entered the sandbox already (enter.py); it makes its own FIFO at `path`. */
static void adopt_warm(size_t pid_at, size_t path_at, size_t temp_at) {
    if (warm_pid || unwarmed) { errno = EINVAL; die("warm start twice"); }
    check_path(buf + path_at);
    check_path(buf + temp_at);
    long pid = strtol(buf + pid_at, NULL, 10);
    if (pid <= 1) { errno = EINVAL; die("adopted pid"); }
    warm_pid = (pid_t)pid;
    adopted = 1;
    warm_path_at = path_at;
    warm_temp_at = temp_at;
    tell_up();
    na = ne = nl = 0;
}

/* Whether the warm start's program has ended (an adopted one is not ours to wait for). */
static int warm_ended(void) {
    if (adopted) return kill(warm_pid, 0) < 0 && errno == ESRCH;
    siginfo_t si;
    si.si_pid = 0;
    return waitid(P_PID, (id_t)warm_pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == warm_pid;
}

static void drop_warm_stdio(void) {
    for (int i = 0; i < 3; i++) {
        if (warm_stdio[i] >= 0) close(warm_stdio[i]);
        warm_stdio[i] = -1;
    }
}

/* U: the job is not for the program started ahead: stop it, and take the job as usual. */
static void unwarm(void) {
    kill(warm_pid, SIGKILL);
    if (!adopted)
        while (waitpid(warm_pid, NULL, __WALL) < 0 && errno == EINTR) {}
    /* An adopted program makes its FIFO itself: it may have ended before it did. */
    if (unlink(buf + warm_path_at) < 0 && !(adopted && errno == ENOENT)) die(buf + warm_path_at);
    drop_warm_stdio();
    if (warm_result >= 0) close(warm_result);
    adopted = 0;
    warm_pid = 0;
    warm_result = -1;
    unwarmed = 1;
    have_cwd = 0;
}

/* The FIFO's write end, once the program has opened it (it may still be starting: 1 ms naps,
   ENXIO from a non-blocking open while there is no reader); -1 if it ended before. */
static int entry_writer(void) {
    const char *path = buf + warm_path_at;
    for (;;) {
        int w = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (w >= 0) {
            if (fcntl(w, F_SETFL, 0) < 0) die("fcntl");
            return w;
        }
        if (errno == EINTR) continue;
        if (errno != ENXIO && !(adopted && errno == ENOENT)) die(path);
        if (warm_ended()) return -1;
        struct timespec ms = { 0, 1000000 };
        nanosleep(&ms, NULL);
    }
}

/* G's entry file, written aside at `temp`: once the program has its FIFO open, the file takes
   the FIFO's place (now, so that the directory lists it where a cold start's would be) and the
   FIFO's write end is returned, for its content once every file is in place. A program started
   ahead that ended before it opened the FIFO (killed while it waited for a run) is started
   again, once; -1 if that one ends before too (the reaping loop reports how). */
static int place_entry(void) {
    int w = entry_writer();
    if (w < 0 && adopted) {
        /* Ended before its run came (the host checks just before it sends the job, so only
           in that moment): its parent outside reports how; the entry is put in place all the same. */
        if (unlink(buf + warm_path_at) < 0 && errno != ENOENT) die(buf + warm_path_at);
        if (rename(buf + warm_temp_at, buf + warm_path_at) < 0) die(buf + warm_path_at);
        return -1;
    }
    if (w < 0) {
        while (waitpid(warm_pid, NULL, __WALL) < 0 && errno == EINTR) {}
        na = warm_na, ne = warm_ne, nl = warm_nl;
        warm_pid = fork_program(warm_stdio);
        na = ne = nl = 0;
        w = entry_writer();
    }
    drop_warm_stdio(); /* the program holds them now (or is gone) */
    if (rename(buf + warm_temp_at, buf + warm_path_at) < 0) die(buf + warm_path_at);
    return w;
}

static void feed_entry(int w) {
    if (w < 0) return;
    for (size_t off = 0; off < entry_size;) {
        ssize_t n = write(w, buf + entry_at + off, entry_size - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            break; /* EPIPE: the program is gone; the reaping loop says how */
        }
        off += (size_t)n;
    }
    close(w);
}

/* Handle every complete record from *pos on; stop at one that has not fully arrived. */
static void parse(size_t *pos) {
    while (*pos < len) {
        char tag = buf[*pos];
        size_t f[3], next;
        int nf = tag == 'R' || tag == 'F' || tag == 'D' || tag == 'P' ? 3 : tag == 'M' || tag == 'W' ? 2 : 1;
        if (!fields(*pos + 1, nf, f, &next)) return;
        if (tag == 'F' && strtoull(buf + f[2], NULL, 10) > len - next) return; /* content on its way */
        if (warm_pid && !go && tag != 'G' && tag != 'U') {
            errno = EINVAL; /* a job for a warm sandbox says first how it takes the program */
            die("warm start: G or U first");
        }
        if (go && tag != 'M' && tag != 'F' && tag != 'D') {
            errno = EINVAL; /* the program was started with its own: a G job brings files only */
            die("warm start: files only after G");
        }
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
        } else if (tag == 'W') {
            start_warm(f[0], f[1]);
        } else if (tag == 'P') {
            adopt_warm(f[0], f[1], f[2]);
        } else if (tag == 'G' || tag == 'U') {
            if (!warm_pid || go) { errno = EINVAL; die("G/U without a warm start"); }
            if (tag == 'G') {
                go = 1;
                first_fd = 0; /* the program has its pipes: only the cached files' fds come now */
            } else {
                unwarm();
            }
        } else if (tag == 'F') {
            size_t size = strtoull(buf + f[2], NULL, 10);
            mode_t mode;
            int is_entry = go && strcmp(buf + f[0], buf + warm_path_at) == 0;
            if (is_entry) { /* written aside; it takes the FIFO's place when the job is complete */
                if (entry_done) { errno = EEXIST; die("entry"); }
                entry_done = 1;
                entry_at = next;
                entry_size = size;
            }
            int out = create(is_entry ? buf + warm_temp_at : buf + f[0], buf + f[1], &mode);
            for (size_t off = 0; off < size;) {
                ssize_t w = write(out, buf + next + off, size - off);
                if (w < 0) { if (errno == EINTR) continue; die(buf + f[0]); }
                off += (size_t)w;
            }
            if (fchmod(out, mode) < 0 || close(out) < 0) die(buf + f[0]);
            if (is_entry) entry_w = place_entry();
            next += size;
        } else if (tag == 'D') { /* file content from a passed fd (a cached compiled program) */
            size_t idx = strtoull(buf + f[2], NULL, 10);
            if (idx < (size_t)first_fd || idx >= nfds || fds[idx] < 0) { errno = EINVAL; die("fd index"); }
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

static void on_child(int sig) { (void)sig; }

/* An adopted program's run: its parent outside reports its exit status; we only reap what is
   reparented to us (the program's orphans) until the host ends the sandbox. */
static void reap_only(void) {
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) { dup2(devnull, 0); dup2(devnull, 1); dup2(devnull, 2); }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_child;
    sigaction(SIGCHLD, &sa, NULL);
    sigset_t chld, old;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &old);
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, __WALL | WNOHANG);
        if (pid > 0) {
            if (WIFSTOPPED(status) && ptrace(PTRACE_DETACH, pid, 0, (void *)(long)WSTOPSIG(status)) < 0 && errno != ESRCH)
                kill(pid, SIGKILL);
            continue;
        }
        if (pid < 0 && errno == EINTR) continue;
        sigsuspend(&old); /* until a child of ours changes state */
    }
}

int main(int argc, char **argv) {
    /* First of all: not dumpable, so the program (same uid) cannot ptrace us, open our fds
       through /proc/1/fd or take them with pidfd_getfd. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    signal(SIGPIPE, SIG_IGN); /* a program that is gone before it read its entry: EPIPE, not death */
    if (argc != 2) { errno = EINVAL; die("usage: launcher SOCKET_FD"); }
    sock = atoi(argv[1]);
    if (sock < 3) { errno = EINVAL; die("socket fd"); }
    /* Never the program's: a warm start forks it while the job is still to come on the socket. */
    if (fcntl(sock, F_SETFD, FD_CLOEXEC) < 0) die("socket fd");
    /* Hold nothing bubblewrap may have left open besides stdio and the socket. */
    /* The raw call: musl (the static build, cbuild.py) has no close_range() wrapper. */
    syscall(SYS_close_range, 3U, (unsigned)sock - 1, 0U);
    syscall(SYS_close_range, (unsigned)sock + 1, ~0U, 0U);
    tell_up();
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
        /* ECONNRESET: the host closed its end with our UP bytes unread (a spare it discards). */
        if (n < 0 && errno == ECONNRESET) n = 0;
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
    if (warm_pid && !go) _exit(0); /* discarded before its job: our exit ends the program started ahead */
    if (pos != len) { errno = EINVAL; die("truncated message"); }
    pid_t child;
    int result_fd;
    if (go) {
        if (!entry_done) { errno = EINVAL; die("a warm start's job without its entry file"); }
        child = warm_pid;
        result_fd = warm_result;
        feed_entry(entry_w);
        if (adopted) reap_only();
    } else {
        if (nfds < 4) { errno = EINVAL; die("missing stdio/result fds"); }
        child = fork_program(fds);
        for (int i = 0; i < 3; i++) close(fds[i]);
        result_fd = fds[3];
    }
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
