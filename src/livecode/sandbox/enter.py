"""Entered warm starts: a spare sandbox's Python is a copy of an interpreter started once, not a
new one (issue 11: a Python start-up is ~8-9 ms of a sandboxed hello world's ~15 ms of CPU).

A warm start (warm.py) starts the interpreter in each spare sandbox ahead of its run: the
start-up is off the run's path but still paid once per run. Here the worker keeps one template
per language environment (`/usr/bin/python3 -E -s main.py`, started as a cold start in the sandbox
is: the same argv, environment and view of /etc and of Python's site hooks; enter_template.py).
For each spare, once bubblewrap has set it up and its launcher is up, the template forks a copy
into the spare's pid namespace, which enters the rest of the sandbox: its own session, the run's
cgroups, the namespaces (the user namespace last), the sandbox's uid, no capabilities,
no_new_privs, the stage's rlimits and nice, bubblewrap's seccomp filter, only its pipes; it makes
its entry FIFO and blocks reading it, as the warm start forked by the launcher does. The launcher
is told (P) and serves the run as any warm start (G, or U when the run is another program); the
template, the copy's parent, reports its exit status. The template holds nothing of any run:
only descriptors and a sandbox to enter pass through it, never code or input.

What differs from a cold start, for a program that looks (docs/sandbox.md, entered warm starts):
its parent is outside its pid namespace (`os.getppid()` is 0), its module frame has the
template's below it, and the copies of one template share its string hash seed and address-space
layout (a template serves at most `_USES` spares, then a new one starts). The rest a cold start
shows, it shows (tests/sandbox/test_warm.py compares them).

Any failure (no template, a request refused or unanswered) builds the spare as before: the
launcher starts the interpreter itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from .warm import WarmStart

log = logging.getLogger(__name__)

_TEMPLATE = (Path(__file__).parent / "enter_template.py").read_text()
TEMPLATE_CAPS = ("CAP_SYS_ADMIN", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SETGID")  # enter_template.py's _KEEP
_USES = 256  # spares per template: runs sharing its hash seed and layout; then a fresh one
_ANSWER_S = 5.0  # a template answers within ~3 ms; one that does not is replaced
_BUSY_S = 0.05  # how long a run's own path waits for another request to the template


def exited(pidfd: int) -> bool:
    """Whether the process of this pidfd has exited (poll: any descriptor number)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


class EnterError(Exception):
    """The template could not put a program in the sandbox (the spare is built the usual way)."""


class EnterBusy(EnterError):
    """No template up and free right now (a request that would not wait): nothing was sent."""


class Template:
    """One started interpreter and its socket; requests one at a time."""

    def __init__(self, root: Path, warm: WarmStart, seccomp: bytes, bwrap: str, etc: str | None,
                 hooks: Sequence[tuple[str, bytes]]) -> None:
        self.uses = 0
        # What its start-up read of the sandbox's view: a template whose view has changed since
        # (the host's /etc, Python's site hooks: a package installed) is replaced, as a cold start
        # would read the new one.
        self.view_of = (etc, tuple(hooks))
        key = hashlib.sha256(repr((warm.argv, warm.env, _TEMPLATE)).encode()).hexdigest()[:16]
        self.dir = root / f"enter-{key}"
        self.dir.mkdir(mode=0o700, exist_ok=True)
        script = self.dir / os.path.basename(warm.entry)
        if not script.exists() or script.read_text() != _TEMPLATE:
            script.write_text(_TEMPLATE)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        data_fds: list[int] = []
        try:
            # The template's view of the host is the sandbox's where a Python start-up looks:
            # the prepared /etc (no sitecustomize) and the site hooks as rewritten (pysite.py).
            # Not --die-with-parent: that follows the thread that started it (the pool's filler,
            # which ends before the spares are discarded), and a template that dies leaves its
            # programs to the worker, a subreaper. It exits at its socket's end, once they have.
            # Its script at /tmp/main.py (a tmpfs of its own), not under the worker's cache: the
            # template's frame below a program's (warnings' stacklevel, inspect) names no host path.
            # Its own network, IPC and UTS namespaces (its copies take the sandbox's), and only the
            # capabilities entering needs (bubblewrap as root keeps them all unless told to drop
            # them): setns (SYS_ADMIN, SYS_CHROOT), other uids' /proc/PID/ns (SYS_PTRACE), root's
            # groups dropped (SETGID), and SETPCAP for the template to cut its bounding set to
            # those at its start (enter_template.py), then its own. In the sandbox's user namespace
            # a copy has every capability there, which it drops.
            argv = [bwrap, "--ro-bind", "/", "/", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                    "--cap-drop", "ALL", *(a for cap in (*TEMPLATE_CAPS, "CAP_SETPCAP") for a in ("--cap-add", cap)),
                    "--tmpfs", "/tmp",
                    "--ro-bind", str(script), f"/tmp/{script.name}"]
            if etc is not None:
                argv += ["--ro-bind", etc, "/etc"]
            for dest, data in hooks:
                fd = os.memfd_create("livecode-hook")
                os.write(fd, data)
                os.lseek(fd, 0, os.SEEK_SET)
                data_fds.append(fd)
                argv += ["--ro-bind-data", str(fd), dest]
            # bubblewrap adds PWD to the environment: env(1) execs the interpreter with the runs' own,
            # in their order (what /proc/self/environ shows), as the launcher does.
            # --default-signal: every signal at its default, as the launcher resets a program's (a
            # worker started with SIGINT ignored would pass that on: a user's Ctrl-C never seen).
            env_argv = ["/usr/bin/env", "-i", "--default-signal", *(f"{k}={v}" for k, v in warm.env)]
            argv += ["--chdir", "/tmp", "--", *env_argv, *warm.argv]
            # Its stdio pipes (closed at our end), as a sandbox's program has: the interpreter decides
            # at its start what its stdio is (buffering, seekable()), and its copies keep that.
            stdin_r, stdin_w = os.pipe()
            out_r, out_w = os.pipe()
            os.close(stdin_w)
            os.close(out_r)
            data_fds += [stdin_r, out_w]
            self.proc = subprocess.Popen(
                argv, env={"PATH": "/usr/bin:/bin"}, stdin=stdin_r, stdout=out_w, stderr=out_w,
                pass_fds=[theirs.fileno(), *data_fds],
                start_new_session=True,  # not in the worker's session or process group
            )
        finally:
            theirs.close()
            for fd in data_fds:
                os.close(fd)
        self.sock = ours
        self.sock.settimeout(_ANSWER_S)
        self._seq = 0
        self.serving = True  # False once it closed its end (it stopped taking requests)
        self.timeouts = 0  # requests in a row it did not answer in time
        self.pidfd: int | None = None
        try:
            self.sock.send(seccomp)
            self.pid = int(self.sock.recv(64) or b"0")
            self.pidfd = os.pidfd_open(self.pid)  # its parent is bubblewrap: watched, not waited for
            # At nice 0 whatever the worker's: a copy (no capabilities) can raise its nice to its
            # spare's, never lower it to a run's 0.
            os.setpriority(os.PRIO_PROCESS, self.pid, 0)
        except (OSError, ValueError) as e:
            self.close()
            raise EnterError(f"the template did not start: {e}") from e

    def enter(self, launcher: int, uid: int, nice: int, entry: str, work: str, procs: Sequence[int],
              pipes: Sequence[int], rlimits: Sequence[tuple[int, int, int]]) -> tuple[int, int]:
        """Put a started program in the sandbox whose pid 1 is host pid `launcher`: (its pid
        there, a pidfd of it, ours to close). `pipes`: stdin, stdout, stderr and the result pipe.
        A program slow to come up (a loaded host) costs this spare only: the template answers
        other requests and reports other programs meanwhile, and its late answer is dropped."""
        for field in (entry, work):
            if not field or any(c.isspace() for c in field):
                raise EnterError(f"unusable path {field!r}")
        self._seq += 1
        seq = str(self._seq)
        limits = ";".join(f"{res},{soft if soft >= 0 else -1},{hard}" for res, soft, hard in rlimits)
        message = f"{seq} {launcher} {uid} {nice} {entry} {work} {len(procs)} {limits}".encode()
        self.uses += 1
        deadline = time.monotonic() + _ANSWER_S
        try:
            socket.send_fds(self.sock, [message], [*procs, *pipes])
            while True:
                self.sock.settimeout(max(0.001, deadline - time.monotonic()))
                data, fds, _, _ = socket.recv_fds(self.sock, 4096, 1)
                if not data:
                    self.serving = False
                    raise EnterError("the template takes no more requests")
                got, _, answer = data.decode().partition(" ")
                if got == seq:
                    break
                for fd in fds:  # a late answer to a request given up on
                    os.close(fd)
        except OSError as e:
            # One copy slow to come up (a loaded host) costs its spare only; a template that
            # misses twice in a row is stuck or gone: replaced.
            self.timeouts += 1
            if self.timeouts >= 2:
                self.serving = False
            raise EnterError(f"the template did not answer: {e}") from e
        self.timeouts = 0
        try:
            if answer.startswith("!") or len(fds) != 1:
                raise EnterError(answer[1:] or "no pidfd in the answer")
            nspid = int(answer)
        except (EnterError, ValueError, IndexError) as e:
            for fd in fds:
                os.close(fd)
            raise EnterError(str(e)) from e
        return nspid, fds[0]

    @property
    def alive(self) -> bool:
        """The template runs (its programs' parent, which reports their exit status)."""
        return self.pidfd is not None and not exited(self.pidfd)

    @property
    def spent(self) -> bool:
        return self.uses >= _USES or not self.serving or not self.alive

    def gone(self) -> bool:
        """Whether it has exited and been reaped (by bubblewrap, or by us when bubblewrap went
        first and left it to the worker, a subreaper)."""
        if self.proc.poll() is None:
            return False
        if self.pidfd is not None:
            with contextlib.suppress(ChildProcessError):  # that very process, only if it is ours
                os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG)
            if self.alive:
                return False
            os.close(self.pidfd)
            self.pidfd = None
        return True

    def retire(self) -> None:
        """No more requests: the template exits once the programs it made have ended (each has
        its parent outside, a child of the template, which must not be orphaned: the worker, a
        subreaper, would inherit it and its program)."""
        self.sock.close()

    def close(self, wait_s: float = 5.0) -> None:
        self.retire()
        deadline = time.monotonic() + wait_s
        while not self.gone():
            if time.monotonic() > deadline:
                log.warning("an entered warm starts' template still waits for its programs; killing it")
                if self.pidfd is not None:
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
                deadline = time.monotonic() + wait_s
            time.sleep(0.01)


class Templates:
    """The worker's templates, one per warm start in use (a few: the runs' languages and limits)."""

    def __init__(self, root: Path, seccomp: bytes, bwrap: str) -> None:
        self._root = root
        self._seccomp = seccomp
        self._bwrap = bwrap
        self._lock = threading.Lock()
        # By argv and environment (a language's and the limits' own): the rlimits, the users'
        # choice, go with each request, so they make no template of their own.
        self._by_warm: dict[tuple[object, ...], Template] = {}
        self._retired: list[Template] = []  # until their programs have ended

    @contextlib.contextmanager
    def serving(self, warm: WarmStart, etc: str | None, hooks: Sequence[tuple[str, bytes]],
                wait: bool = True) -> Iterator[Template]:
        """The template for `warm`'s runs (started if none is up), for one request at a time.
        `wait` False (a run's own path): EnterBusy if another request holds it longer than one
        takes (_BUSY_S), if it would have to be started, or if it missed its last answer. A
        template that has died, or missed twice, is replaced."""
        if not self._lock.acquire(timeout=-1 if wait else _BUSY_S):
            raise EnterBusy("the template is serving another request")
        try:
            self._retired = [t for t in self._retired if not t.gone()]
            key = (warm.argv, warm.env)
            t = self._by_warm.get(key)
            if t is not None and (t.spent or t.view_of != (etc, tuple(hooks))):
                self._retire(key)
                t = None
            if t is None or (not wait and t.timeouts):
                if not wait:
                    raise EnterBusy("no template up" if t is None else "the template is slow to answer")
                if len(self._by_warm) >= 8:  # a language's environment per memory limit: keep few
                    for old in list(self._by_warm):
                        self._retire(old)
                t = self._by_warm[key] = Template(self._root, warm, self._seccomp, self._bwrap, etc, hooks)
            try:
                yield t
            except EnterError:
                if t.spent:
                    self._retire(key)
                raise
        finally:
            self._lock.release()

    def _retire(self, key: tuple[object, ...]) -> None:
        t = self._by_warm.pop(key)
        t.retire()
        self._retired.append(t)

    def live(self) -> list[Template]:
        with self._lock:
            return [t for t in self._by_warm.values() if t.alive]

    def close(self) -> None:
        """Once the spares are gone (their programs with them): every template exits."""
        with self._lock:
            for t in [*self._by_warm.values(), *self._retired]:
                t.close()
            self._by_warm.clear()
            self._retired.clear()
