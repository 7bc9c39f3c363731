"""A tiny C program that waits inside a pre-built sandbox for its one job.

A pooled sandbox (see pool.py) is started with this launcher as its command. It blocks reading
a message from the host on a unix socket: the files to create in the work directory, rlimits,
the environment and argv, plus (SCM_RIGHTS) the program's stdin/stdout/stderr pipes, the result
pipe and the cached compiled files, all made or opened for this run only. It writes the files, forks the program
(which sets the rlimits and execs), waits for it and writes its exact exit status
("exit N" / "signal N") to a result pipe. It runs as the slot's unprivileged uid inside the
namespaces like the program itself; it only spares the request path bwrap's start-up.

Message: records of a tag byte followed by NUL-terminated fields:
  F path mode(octal) size(decimal) <size raw bytes>     create a file (O_EXCL, O_NOFOLLOW)
  D path mode(octal) fd-index                           create a file from passed fd (>= 4)
  R resource soft hard                                  setrlimit
  E KEY=VALUE                                           environment entry
  A arg                                                 argv entry (first is the program)
  C dir                                                 working directory
Passed fds: 0 stdin, 1 stdout, 2 stderr (the program's), 3 the result pipe, then D files.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import tempfile
from pathlib import Path

LAUNCHER_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ARGS 4096
#define MAX_ENV 512
#define MAX_LIMITS 32
#define MAX_FDS 64

static void die(const char *what) {
    dprintf(2, "livecode-launcher: %s: %s\n", what, strerror(errno));
    _exit(127);
}

static char *field(char **p, char *end) {
    char *start = *p;
    char *nul = memchr(start, 0, (size_t)(end - start));
    if (!nul) { errno = EINVAL; die("truncated message"); }
    *p = nul + 1;
    return start;
}

int main(int argc, char **argv) {
    if (argc != 2) { errno = EINVAL; die("usage: launcher SOCKET_FD"); }
    int sock = atoi(argv[1]);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    if (!buf) die("malloc");
    int fds[MAX_FDS];
    int nfds = 0;
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf) die("realloc");
        }
        struct iovec iov = { buf + len, cap - len };
        union { struct cmsghdr align; char raw[CMSG_SPACE(sizeof(int) * MAX_FDS)]; } control;
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                              .msg_control = control.raw, .msg_controllen = sizeof control.raw };
        ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) { if (errno == EINTR) continue; die("recvmsg"); }
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            if (nfds + k > MAX_FDS) { errno = E2BIG; die("fds"); }
            memcpy(fds + nfds, CMSG_DATA(c), sizeof(int) * (size_t)k);
            nfds += k;
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    close(sock);
    if (len == 0) _exit(0); /* the host discarded this sandbox */
    if (nfds < 4) { errno = EINVAL; die("missing stdio/result fds"); }
    int result_fd = fds[3];
    char *args[MAX_ARGS + 1], *envs[MAX_ENV + 1];
    int na = 0, ne = 0, nl = 0;
    int lres[MAX_LIMITS];
    struct rlimit lval[MAX_LIMITS];
    const char *cwd = "/";
    char *p = buf, *end = buf + len;
    while (p < end) {
        char tag = *p++;
        char *f1 = field(&p, end);
        if (tag == 'A') {
            if (na == MAX_ARGS) { errno = E2BIG; die("argv"); }
            args[na++] = f1;
        } else if (tag == 'E') {
            if (ne == MAX_ENV) { errno = E2BIG; die("env"); }
            envs[ne++] = f1;
        } else if (tag == 'C') {
            cwd = f1;
        } else if (tag == 'R') {
            char *soft = field(&p, end), *hard = field(&p, end);
            if (nl == MAX_LIMITS) { errno = E2BIG; die("rlimits"); }
            lres[nl] = atoi(f1);
            lval[nl].rlim_cur = strtoull(soft, NULL, 10);
            lval[nl].rlim_max = strtoull(hard, NULL, 10);
            nl++;
        } else if (tag == 'F') {
            mode_t mode = (mode_t)strtol(field(&p, end), NULL, 8);
            size_t size = strtoull(field(&p, end), NULL, 10);
            if (size > (size_t)(end - p)) { errno = EINVAL; die("file size"); }
            int out = open(f1, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
            if (out < 0) die(f1);
            for (size_t off = 0; off < size;) {
                ssize_t w = write(out, p + off, size - off);
                if (w < 0) { if (errno == EINTR) continue; die(f1); }
                off += (size_t)w;
            }
            if (fchmod(out, mode) < 0 || close(out) < 0) die(f1);
            p += size;
        } else if (tag == 'D') { /* file content from a passed fd (a cached compiled program) */
            mode_t mode = (mode_t)strtol(field(&p, end), NULL, 8);
            int idx = atoi(field(&p, end));
            if (idx < 4 || idx >= nfds) { errno = EINVAL; die("fd index"); }
            int out = open(f1, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
            if (out < 0) die(f1);
            for (;;) {
                ssize_t w = sendfile(out, fds[idx], NULL, 1 << 30);
                if (w < 0) { if (errno == EINTR) continue; die(f1); }
                if (w == 0) break;
            }
            if (fchmod(out, mode) < 0 || close(out) < 0) die(f1);
            close(fds[idx]);
        } else {
            errno = EINVAL;
            die("bad message");
        }
    }
    args[na] = NULL;
    envs[ne] = NULL;
    if (na == 0) { errno = EINVAL; die("no program"); }
    if (chdir(cwd) < 0) die(cwd);
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        /* The program's stdio: pipes made for this run only, never held by bubblewrap's own
           processes, so end-of-output comes as soon as the program's processes close them. */
        for (int i = 0; i < 3; i++)
            if (dup2(fds[i], i) < 0) die("dup2");
        for (int i = 0; i < nl; i++)
            if (setrlimit(lres[i], &lval[i]) < 0) die("setrlimit");
        execve(args[0], args, envs);
        die(args[0]);
    }
    /* Report the program's exact exit status the moment it ends, so the host need not wait
       for bubblewrap's own exit (pid namespace and mount teardown). Not dumpable: the program
       (same uid) cannot ptrace us or open our fds through /proc. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    for (int i = 0; i < 3; i++) close(fds[i]);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) { dup2(devnull, 0); dup2(devnull, 1); dup2(devnull, 2); }
    int status;
    while (waitpid(child, &status, 0) < 0)
        if (errno != EINTR) _exit(127);
    char line[64];
    int n;
    if (WIFEXITED(status)) n = snprintf(line, sizeof line, "exit %d\n", WEXITSTATUS(status));
    else n = snprintf(line, sizeof line, "signal %d\n", WTERMSIG(status));
    if (write(result_fd, line, (size_t)n) < 0) _exit(127);
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}
"""


def build_launcher(cache_dir: Path) -> Path | None:
    """Compile the launcher into the root-only cache dir once; None when no C compiler."""
    digest = hashlib.sha256(LAUNCHER_C.encode()).hexdigest()[:16]
    target = cache_dir / f"launcher-{digest}"
    if target.exists():
        return target
    cc = next((c for c in ("/usr/bin/gcc", "/usr/bin/cc") if os.access(c, os.X_OK)), None)
    if cc is None:
        return None
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        src = Path(tmp, "launcher.c")
        src.write_text(LAUNCHER_C)
        out = Path(tmp, "launcher")
        proc = subprocess.run(
            [cc, "-O2", "-s", "-o", str(out), str(src)],
            capture_output=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin"},
            check=False,
        )
        if proc.returncode != 0:
            return None
        out.chmod(0o755)
        os.replace(out, target)
    return target


def encode_message(
    files: list[tuple[str, int, bytes | int]],
    rlimits: list[tuple[int, int, int]],
    env: dict[str, str],
    argv: list[str],
    cwd: str,
) -> bytes:
    parts: list[bytes] = []
    for path, mode, data in files:
        if isinstance(data, int):  # index of a passed fd
            parts.append(f"D{path}\0{mode:o}\0{data}\0".encode())
        else:
            parts += [b"F", path.encode(), b"\0", f"{mode:o}".encode(), b"\0", str(len(data)).encode(), b"\0", data]
    for res, soft, hard in rlimits:
        soft = resource.RLIM_INFINITY if soft < 0 else soft
        parts.append(f"R{res}\0{soft}\0{hard}\0".encode())
    for key, value in env.items():
        if "\0" in key or "\0" in value or "=" in key:
            raise ValueError("environment entries cannot contain NUL or '=' in the name")
        parts += [b"E", f"{key}={value}".encode(), b"\0"]
    for arg in argv:
        if "\0" in arg:
            raise ValueError("arguments cannot contain NUL bytes")
        parts += [b"A", arg.encode(), b"\0"]
    parts += [b"C", cwd.encode(), b"\0"]
    return b"".join(parts)
