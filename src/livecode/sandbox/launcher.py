"""A tiny C program that is pid 1 of every sandbox and runs its one job.

Every sandbox (pre-built ones from pool.py, and those built for a run) is started with this
launcher as its command and bubblewrap's `--as-pid-1`: there is no bubblewrap init inside, so
the launcher is the pid namespace's init. It blocks reading a message from the host on a unix
socket: the files to create in the work directory, rlimits, the environment and argv, plus
(SCM_RIGHTS) the program's stdin/stdout/stderr pipes, the result pipe and the cached compiled
files, all made or opened for this run only. It writes the files, forks the program (which sets
the rlimits and execs), reaps every process that is reparented to it, and writes the program's
exact exit status ("exit N" / "signal N") to the result pipe once the program has really ended.

Why pid 1: the kernel ignores signals sent to a namespace's init from inside the namespace
unless it handles them (the launcher handles none), and the launcher is not dumpable from its
first instruction, so the program (same uid) can neither kill, ptrace nor take fds from it
(/proc/1/fd, pidfd_getfd). A program that makes the launcher its tracer (PTRACE_TRACEME) is
detached at its first stop, with its signal delivered; a stop is never taken for an exit.

Message: records of a tag byte followed by NUL-terminated fields:
  M path mode(octal)                                    create a directory (parents come first)
  F path mode(octal) size(decimal) <size raw bytes>     create a file (O_EXCL, O_NOFOLLOW)
  D path mode(octal) fd-index                           create a file from passed fd (>= 4)
  R resource soft hard                                  setrlimit
  E KEY=VALUE                                           environment entry
  A arg                                                 argv entry (first is the program)
  C dir                                                 working directory
  W entry temp                                          warm start (below)
  P pid entry temp                                      entered warm start (below)
  G                                                     the job is for the warm-started program
  U                                                     it is not: stop that program first
Passed fds, numbered in the order they arrive: 0 stdin, 1 stdout, 2 stderr (the program's; 1 and
2 are the same pipe when the run merges stderr into stdout),
3 the result pipe, then the D files. The host sends the D files in batches (send_job), each
batch's fds attached to the first byte of its records; the launcher creates each file as soon
as its record is complete and closes its fd, so any number of files passes through a bounded
number of open descriptors.

A warm start (warm.py) sends two messages. The first, when the sandbox is built, is a program
(A, E, R, C and its four pipes) ending with W: the launcher makes a FIFO at `entry` and forks the
program at once, which blocks opening its entry file when its start-up is done (an interpreter
reads its script only then). The second is the job: G, then the files only (no pipes: the
program has them; D indices count from 0); the launcher writes the entry's content to `temp`
(created like every file), and once all files are in place and the program has opened the FIFO,
renames `temp` over the FIFO and writes the same content into it. Or U, then a job as above: the
program started ahead is killed and reaped, its FIFO removed, and the job runs as usual. A
sandbox closed after W and before either is discarded; the program dies with its pid namespace.

An entered warm start (enter.py) is the same but for its first message: P names the program, a
copy of the worker's template that entered the sandbox (pid `pid` here), not the launcher's
child: it makes its own FIFO, and its parent outside writes its exit status to the result pipe;
the launcher only puts the entry in place (or, for U, kills it) and reaps the orphans.

The launcher writes one byte (UP) on the socket when it starts, and one more when it has forked
a warm start's program (or been told of an entered one): the host waits for them before it
renices a spare (bwrap.py).
"""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

from .cbuild import build_c, c_source

# Descriptors per sendmsg (SCM_RIGHTS carries at most 253). The launcher may hold two batches
# at once (one recvmsg can return the end of a batch's records and the next batch's fds), plus
# the run's four pipes, its socket and stdio: LAUNCHER_NOFILE must stay above that.
FD_BATCH = 100
LAUNCHER_NOFILE = 256
assert 2 * FD_BATCH + 16 <= LAUNCHER_NOFILE

LAUNCHER_C = c_source("launcher.c")


def build_launcher(cache_dir: Path) -> Path:
    """Compile the launcher into the root-only cache dir once: statically against musl where it
    is installed (cbuild.py: ~35 KB, copied into every sandbox), else dynamically with gcc (a
    static glibc build would put 700 KB on every run's disk)."""
    return build_c(cache_dir, "launcher", LAUNCHER_C, mode=0o755,
                   what="the sandbox's launcher (pid 1 of every sandbox)", musl=True)


def send_job(
    sock: socket.socket,
    pipes: list[int],
    files: list[tuple[str, int, bytes | Callable[[], int]]],
    rlimits: list[tuple[int, int, int]],
    env: dict[str, str],
    argv: list[str],
    cwd: str | None,
    dirs: Sequence[str] = (),
    lead: bytes = b"",
) -> None:
    """Send one job: `pipes` (stdin, stdout, stderr, result; none for a warm start's job) with
    the first byte, `lead` (a warm start's G or U record) before the other records, then the
    cached files (given as a function returning a new read-only fd at offset 0) in batches of
    FD_BATCH descriptors, each batch closed on our side once sent. `dirs`: directories the
    files need, parents first (made before any file). The caller closes `pipes`."""
    inline = [(path, mode, data) for path, mode, data in files if isinstance(data, bytes)]
    _send(sock, lead + encode_message(inline, rlimits, env, argv, cwd, dirs), pipes)
    cached = [(path, mode, src) for path, mode, src in files if not isinstance(src, bytes)]
    index = len(pipes)
    for start in range(0, len(cached), FD_BATCH):
        batch = cached[start : start + FD_BATCH]
        fds: list[int] = []
        try:
            for _, _, opener in batch:
                fds.append(opener())
            records = [(path, mode, index + i) for i, (path, mode, _) in enumerate(batch)]
            _send(sock, encode_message(records, [], {}, [], None), fds)
        finally:
            for fd in fds:
                os.close(fd)
        index += len(batch)
    sock.shutdown(socket.SHUT_WR)


def send_warm(
    sock: socket.socket, pipes: list[int], rlimits: list[tuple[int, int, int]], env: dict[str, str],
    argv: list[str], cwd: str, entry: str, temp: str,
) -> None:
    """A warm start's first message: the program, started now, with `pipes` as in send_job,
    reading its entry file `entry` (a FIFO until the job comes); `temp`: where the launcher
    writes the entry's content before it takes the FIFO's place."""
    for path in (entry, temp):
        if "\0" in path:
            raise ValueError("paths cannot contain NUL bytes")
    record = b"W" + entry.encode() + b"\0" + temp.encode() + b"\0"
    _send(sock, encode_message([], rlimits, env, argv, cwd) + record, pipes)


def send_adopt(sock: socket.socket, pid: int, entry: str, temp: str) -> None:
    """An entered warm start's message (enter.py): the program, pid `pid` in the sandbox, is
    already there (a template's copy, not our child), and makes its own FIFO at `entry`."""
    for path in (entry, temp):
        if "\0" in path:
            raise ValueError("paths cannot contain NUL bytes")
    sock.sendall(b"P" + str(pid).encode() + b"\0" + entry.encode() + b"\0" + temp.encode() + b"\0")


GO = b"G\0"  # lead of a job for the program started ahead
UNWARM = b"U\0"  # lead of a job for another program: the one started ahead is stopped


def _send(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    # The fds travel with the first byte: a stream socket may send the rest in several pieces.
    if not fds:
        sock.sendall(data)
        return
    socket.send_fds(sock, [data[:1]], fds)
    sock.sendall(data[1:])


def encode_message(
    files: Sequence[tuple[str, int, bytes | int]],
    rlimits: list[tuple[int, int, int]],
    env: dict[str, str],
    argv: list[str],
    cwd: str | None,
    dirs: Sequence[str] = (),
) -> bytes:
    parts: list[bytes] = [f"M{path}\0{0o755:o}\0".encode() for path in dirs]
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
    if cwd is not None:
        parts += [b"C", cwd.encode(), b"\0"]
    return b"".join(parts)
