"""Start `livecode` processes for the tests by forking a Python that has already imported the
libraries they use, instead of a fresh interpreter each time.

The suite starts about a hundred API, worker and embedded processes (`tests/support/procs.py`);
each spent ~0.5 s of CPU importing Flask, Flask-RESTX, SQLAlchemy, Celery, kombu, redis-py,
gunicorn and the rest before running a line of LiveCode. This server imports those once per test
process; each start is then a `fork` that runs the real `livecode` console script
(`runpy.run_path` of `.venv/bin/livecode`, as `python .venv/bin/livecode ARGS` would) with the
requested arguments, environment, working directory and output file, in a session of its own.
LiveCode's own modules are imported in the child, as a fresh process imports them: some keep what
they found when imported (the worker's boot time, `worker/heartbeat.py`'s BOOTED_AT, which tells a
restarted worker's runs from its previous life's; prometheus_client's multiprocess directory, from
the environment), so the server never imports them, nor prometheus_client. The libraries it
imports keep nothing of the kind that LiveCode reads (their random generators are re-seeded in
each child by Python's fork hooks).

The child is the server's: the test process gets a pidfd (over the socket) to wait for and
signal it without racing a reused pid, and asks the server for its exit status. The server reaps
its children as they end. `LIVECODE_TEST_FORKSERVER=0` starts every process with a fresh
interpreter instead.

Run as a script by `ForkServer` (the test side, below); not imported by the server side.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
from typing import Any

# ---- the server (this file run as a script) ------------------------------------------------------

# What `livecode api`, `livecode worker` and `livecode serve` import, found by a probe child that
# imports LiveCode's entry points and reports sys.modules. The server imports all of it but these.
NOT_PRELOADED = ("livecode", "prometheus_client", "__main__", "__mp_main__", "tests")
PROBE = (
    "livecode.cli", "livecode.app", "livecode.web.server", "livecode.worker.tasks", "livecode.worker.embedded",
    "livecode.worker.lifecycle", "livecode.worker.metrics", "livecode.worker.sandbox_runner",
    "celery.bin.celery", "celery.bin.worker", "celery.apps.worker", "celery.worker.consumer",
    "celery.concurrency.thread", "gunicorn.arbiter", "gunicorn.workers.gthread",
)


def _probe_modules() -> list[str]:
    """The modules LiveCode's processes import, listed by a child that imports them (and exits)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the probe: never returns
        os.close(read)
        code = 0
        try:
            import importlib

            for name in PROBE:
                importlib.import_module(name)
            os.write(write, json.dumps(list(sys.modules)).encode())  # in the order they were imported
        except BaseException:  # noqa: BLE001 - reported as "nothing to preload"
            code = 1
        os._exit(code)
    os.close(write)
    data = b""
    while chunk := os.read(read, 1 << 16):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    return json.loads(data) if data else []


def _preload() -> int:
    import importlib

    count = 0
    for name in _probe_modules():
        if name.split(".", 1)[0] in NOT_PRELOADED:
            continue
        try:
            importlib.import_module(name)
            count += 1
        except Exception:  # noqa: BLE001 - a module that cannot be imported alone is imported later, by the child
            pass
    assert "prometheus_client" not in sys.modules, "a preloaded library imported prometheus_client"
    import threading

    assert threading.active_count() == 1, "a preloaded library started a thread: forking would copy its locks"
    assert not any(m == "livecode" or m.startswith("livecode.") for m in sys.modules)
    return count


def _child(request: dict, conn: socket.socket, in_session: int) -> None:
    """In the forked child: become the requested `livecode` process. Raises SystemExit (or the
    program's exception) up to the script's top level, so that the interpreter ends as a process
    started afresh would: atexit handlers, threads joined, buffers flushed."""
    import io
    import runpy

    conn.close()
    os.setsid()
    os.close(in_session)  # the server answers the spawn only now: its process group exists
    os.chdir(request["cwd"])
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    err = os.open(request["err"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if request.get("err") else out
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    for fd in {null, out, err}:
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))

    def stream(fd: int, line_buffering: bool) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w", closefd=False)
        binary: Any = raw if unbuffered else io.BufferedWriter(raw)
        return io.TextIOWrapper(binary, encoding="utf-8", errors="backslashreplace" if fd == 2 else "strict",
                                line_buffering=line_buffering, write_through=unbuffered)

    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)))  # type: ignore[misc]
    sys.stdout = sys.__stdout__ = stream(1, False)  # type: ignore[misc]
    sys.stderr = sys.__stderr__ = stream(2, True)  # type: ignore[misc]
    script = request["argv"][0]
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(script)  # as `python SCRIPT` sets it
    try:
        runpy.run_path(script, run_name="__main__")
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - reported as the interpreter would, from the script's frame on
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next
        exc = exc.with_traceback(tb or exc.__traceback__)  # printed from the exception's own traceback
        sys.excepthook(type(exc), exc, exc.__traceback__)
        raise SystemExit(1) from None
    raise SystemExit(0)


def serve(conn: socket.socket) -> None:
    """Take requests (one JSON line each) until the test process closes its end:
    {"op": "spawn", argv, env, cwd, log, err} -> {"pid"} and the child's pidfd (its output goes to
    the file `log`, its standard error to `err` if given);
    {"op": "status", pid} -> {"returncode"} once it has ended (the test side waits on the pidfd first)."""
    spawned: set[int] = set()
    ended: dict[int, int] = {}
    buffer = b""

    def reap(block_on: int | None = None) -> None:
        while True:
            try:
                pid, status = os.waitpid(block_on if block_on else -1, 0 if block_on else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in spawned:
                spawned.discard(pid)
                ended[pid] = os.waitstatus_to_exitcode(status)
            if block_on:
                return

    while True:
        ready, _, _ = select.select([conn], [], [], 0.2)
        reap()  # a child ends as a zombie until this process waits for it: not for long
        if not ready:
            continue
        chunk = conn.recv(1 << 20)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            if request["op"] == "spawn":
                has_session, in_session = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(has_session)
                    _child(request, conn, in_session)  # never returns
                os.close(in_session)
                os.read(has_session, 1)  # EOF once the child has its session (or has died)
                os.close(has_session)
                spawned.add(pid)
                ended.pop(pid, None)  # an earlier child's, with the same pid, that nobody asked for
                pidfd = os.pidfd_open(pid)
                socket.send_fds(conn, [json.dumps({"pid": pid}).encode() + b"\n"], [pidfd])
                os.close(pidfd)
            elif request["op"] == "status":
                pid = request["pid"]
                if pid not in ended and pid in spawned:
                    reap(block_on=pid)
                conn.sendall(json.dumps({"returncode": ended.pop(pid, None)}).encode() + b"\n")


# ---- the test side ---------------------------------------------------------------------------------


class ForkedProcess:
    """What the tests use of `subprocess.Popen`, for a process the server forked."""

    def __init__(self, server: ForkServer, args: list[str], pid: int, pidfd: int) -> None:
        import threading

        self.server, self.args, self.pid, self._pidfd = server, args, pid, pidfd
        self.returncode: int | None = None
        self._lock = threading.Lock()  # one thread at a time asks for the status and closes the pidfd

    def _ended(self, timeout: float | None) -> bool:
        with self._lock:
            return self._ended_locked(timeout)

    def _ended_locked(self, timeout: float | None) -> bool:
        if self.returncode is None:
            poller = select.poll()  # a pidfd is readable once its process has ended
            poller.register(self._pidfd, select.POLLIN)
            if not poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
                return False
            self.returncode = self.server.status(self.pid)
            os.close(self._pidfd)
        return True

    def poll(self) -> int | None:
        self._ended(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import subprocess

        if not self._ended(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        import signal

        with self._lock:
            if self.returncode is None:
                try:
                    signal.pidfd_send_signal(self._pidfd, sig)
                except ProcessLookupError:
                    pass

    def terminate(self) -> None:
        import signal

        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        import signal

        self.send_signal(signal.SIGKILL)


class ForkServer:
    """The server process of this test process, started on first use."""

    def __init__(self, python: str, env: dict[str, str]) -> None:
        import subprocess
        import threading

        ours, theirs = socket.socketpair()
        self._lock = threading.Lock()
        self._proc = subprocess.Popen([python, __file__, str(theirs.fileno())], env=env, pass_fds=[theirs.fileno()],
                                      stdin=subprocess.DEVNULL, start_new_session=True)  # not killed by Ctrl-C
        theirs.close()
        self._conn = ours
        self._line()  # {"ready": N}: it has imported what it preloads

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str, log: str, err: str | None = None) -> ForkedProcess:
        request = {"op": "spawn", "argv": argv, "env": env, "cwd": cwd, "log": log, "err": err}
        with self._lock:
            self._conn.sendall(json.dumps(request).encode() + b"\n")
            # the reply's line and the pidfd come in one message; nothing is buffered before it
            message, fds, _flags, _addr = socket.recv_fds(self._conn, 4096, 1)
        if not fds:
            raise RuntimeError(f"the fork server did not start {argv}: {message!r}")
        return ForkedProcess(self, argv, json.loads(message)["pid"], fds[0])

    def status(self, pid: int) -> int:
        with self._lock:
            self._conn.sendall(json.dumps({"op": "status", "pid": pid}).encode() + b"\n")
            code = self._line()["returncode"]
        if code is None:
            raise RuntimeError(f"the fork server has no exit status for {pid}")
        return int(code)

    def _line(self) -> dict:
        """One reply (a request's, under the lock: nothing else is in flight)."""
        line = b""
        while not line.endswith(b"\n"):
            chunk = self._conn.recv(4096)
            if not chunk:
                raise RuntimeError("the fork server is gone")
            line += chunk
        return json.loads(line)

    def close(self) -> None:
        self._conn.close()
        self._proc.wait(10)


if __name__ == "__main__":
    sys.path[0] = os.path.dirname(sys.executable)  # the console scripts' directory, not tests/support
    _conn = socket.socket(fileno=int(sys.argv[1]))
    _count = _preload()
    _conn.sendall(json.dumps({"ready": _count}).encode() + b"\n")
    serve(_conn)  # in a child, SystemExit from the livecode process arrives here and ends it
    sys.exit(0)
