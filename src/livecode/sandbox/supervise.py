"""Feed stdin, read capped stdout/stderr, enforce wall and CPU time, for one child process.

Shared by the bubblewrap runner and the unsandboxed development runner. Output comes back
only through pipes; nothing the program wrote to disk is ever read.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import selectors
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from signal import SIGKILL

from .types import OutputCallback, SignalSource, StdinSource

_CHUNK = 65536
_TICK_S = 0.05  # how often CPU time and interactive stdin are polled
_DRAIN_S = 2.0  # after the tree is killed, how long to wait for the pipes' EOF


@dataclass
class StreamSpec:
    fd: int  # read end, owned by supervise() once passed
    cap: int
    name: str | None  # on_output stream name, or None to not stream it
    sink: int | None = None  # write the stream to this file (ours, not closed) instead of memory


@dataclass
class Supervised:
    status: int | None = None  # raw wait status of the direct child
    rusage_cpu_ms: int | None = None
    rusage_maxrss_kb: int | None = None
    data: dict[int, bytearray] = field(default_factory=dict)  # by StreamSpec index
    truncated: dict[int, bool] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)  # bytes kept, in memory or in the sink
    wall_ms: int = 0
    killed_for: str | None = None  # "wall" | "cpu" | "output" | "signal" (a SIGKILL on request)
    reaped: bool = False  # the direct child was waited for (else the caller must)
    exact: bool = False  # status came from the launcher: the program's own wait status
    sent_signals: set[int] = field(default_factory=set)  # delivered on request (SignalSource)


@dataclass
class Watch:
    """What supervise() needs from the runner besides pipes."""

    pid: int
    kill_tree: Callable[[], object]  # kill every process of the run; must be idempotent
    wall_limit_s: float
    cpu_limit_ms: int | None = None
    cpu_used_ms: Callable[[], int | None] | None = None  # whole-tree CPU time, if known
    result_fd: int | None = None  # the launcher's "exit N" / "signal N" line
    kill_now: Callable[[], object] | None = None  # one SIGKILL pass, no waiting (after result)
    # Send a signal to the program's own process (not the whole tree); False if it is not there.
    signal_program: Callable[[int], bool] | None = None
    # The result pipe closing with no report ends the run (its writer is not the sandbox's pid 1,
    # whose exit would: an entered warm start's parent outside, enter.py).
    result_eof_ends: bool = False


def _set_nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)


def supervise(
    watch: Watch,
    streams: list[StreamSpec],
    stdin_fd: int | None,
    stdin_data: bytes,
    stdin_source: StdinSource | None,
    on_output: OutputCallback | None,
    signals: SignalSource | None = None,
) -> Supervised:
    res = Supervised()
    start = time.monotonic()
    deadline = start + watch.wall_limit_s
    sel = selectors.DefaultSelector()
    pidfd = os.pidfd_open(watch.pid)
    sel.register(pidfd, selectors.EVENT_READ, "exit")
    if watch.result_fd is not None:
        _set_nonblocking(watch.result_fd)
        sel.register(watch.result_fd, selectors.EVENT_READ, "result")
    result_buf = bytearray()
    result_done = False  # the result pipe is unregistered
    decoders = {i: codecs.getincrementaldecoder("utf-8")("replace") for i in range(len(streams))}
    for i, s in enumerate(streams):
        _set_nonblocking(s.fd)
        sel.register(s.fd, selectors.EVENT_READ, i)
        res.data[i] = bytearray()
        res.truncated[i] = False
        res.sizes[i] = 0
    pending = bytearray(stdin_data)
    stdin_eof = stdin_source is None  # the whole input is already in `pending`
    if stdin_fd is not None:
        _set_nonblocking(stdin_fd)
    stdin_registered = False
    open_streams = len(streams)
    exited = False
    killed = False

    def close_stdin() -> None:
        nonlocal stdin_fd, stdin_registered
        if stdin_fd is None:
            return
        if stdin_registered:
            sel.unregister(stdin_fd)
            stdin_registered = False
        with contextlib.suppress(OSError):
            os.close(stdin_fd)
        stdin_fd = None

    def kill(reason: str | None) -> None:
        nonlocal killed
        if reason and res.killed_for is None:
            res.killed_for = reason
        if not killed:
            killed = True
            watch.kill_tree()

    waiting_signals: list[int] = []  # asked for before the program's process was there

    def deliver_signals() -> None:
        assert signals is not None
        for _ in range(16):  # a few per turn: a flood of requests cannot starve the loop
            try:
                sig = signals()
            except Exception:  # noqa: BLE001 - a failed poll is retried at the next turn
                break
            if sig is None:
                break
            waiting_signals.append(sig)
        while waiting_signals:
            sig = waiting_signals[0]
            if watch.signal_program is not None and watch.signal_program(sig):
                res.sent_signals.add(sig)
            elif sig == SIGKILL:  # no single process to reach: stop them all
                res.sent_signals.add(sig)
                kill("signal")
            else:
                return  # not started yet: tried again at the next turn
            waiting_signals.pop(0)

    def on_chunk(i: int, chunk: bytes) -> None:
        spec = streams[i]
        room = spec.cap - res.sizes[i]
        if len(chunk) > room:
            chunk = chunk[: max(room, 0)]
            res.truncated[i] = True
        res.sizes[i] += len(chunk)
        if spec.sink is None:
            res.data[i] += chunk
        else:  # a compiled program: straight to disk, never held in memory
            view = memoryview(chunk)
            while view:
                view = view[os.write(spec.sink, view) :]
        if spec.name and on_output and chunk:
            text = decoders[i].decode(chunk)
            if text:
                with contextlib.suppress(Exception):  # a broken listener must not break the run
                    on_output(spec.name, text)
        if res.truncated[i]:
            kill("output")

    try:
        drain_deadline: float | None = None
        next_cpu_check = start + _TICK_S  # RLIMIT_CPU covers a single process before that
        while True:
            now = time.monotonic()
            if exited and (open_streams == 0 or (drain_deadline and now >= drain_deadline)):
                break
            if not exited and now >= deadline:
                kill("wall")
            if exited and drain_deadline is None:
                drain_deadline = now + _DRAIN_S
            # Feed stdin.
            if stdin_fd is not None and stdin_source is not None and not stdin_eof:
                try:
                    more = stdin_source()
                except Exception:
                    more = b""
                if more is not None:
                    if more == b"":
                        stdin_eof = True
                    else:
                        pending += more
            if stdin_fd is not None:
                if pending and not stdin_registered:
                    sel.register(stdin_fd, selectors.EVENT_WRITE, "stdin")
                    stdin_registered = True
                elif not pending and stdin_eof:
                    close_stdin()
            if signals is not None and not exited:
                deliver_signals()
            cpu_due = now >= next_cpu_check
            if cpu_due and watch.cpu_limit_ms is not None and watch.cpu_used_ms is not None and not killed:
                next_cpu_check = now + _TICK_S
                used = watch.cpu_used_ms()
                if used is not None and used > watch.cpu_limit_ms:
                    kill("cpu")
            timeout = (drain_deadline or deadline) - time.monotonic()
            if killed and not exited:
                timeout = _TICK_S  # the exit will wake us; just don't spin
            if watch.cpu_used_ms is not None or signals is not None or (stdin_source is not None and not stdin_eof):
                timeout = min(timeout, _TICK_S)
            for key, _ in sel.select(max(timeout, 0.0)):
                tag = key.data
                if tag == "exit":
                    sel.unregister(pidfd)
                    _, status, ru = os.wait4(watch.pid, 0)
                    res.reaped = True
                    if not exited and watch.result_fd is not None and not result_done:
                        # The launcher writes its line before it exits, and bubblewrap exits
                        # after it: a line not read yet is in the pipe now, and it wins.
                        result_done = True
                        sel.unregister(watch.result_fd)
                        with contextlib.suppress(OSError):
                            result_buf += os.read(watch.result_fd, 64)
                        status_now = _parse_result(bytes(result_buf))
                        if status_now is not None:
                            res.status, res.exact = status_now, True
                    if exited:
                        continue  # the launcher already reported the program's status
                    if not res.exact:
                        res.status = status  # not the program's: the caller reports no status
                    res.rusage_cpu_ms = int((ru.ru_utime + ru.ru_stime) * 1000)
                    res.rusage_maxrss_kb = ru.ru_maxrss
                    exited = True
                    res.wall_ms = int((time.monotonic() - start) * 1000)
                    # Whatever the program left behind (daemons, setsid, double forks) dies now.
                    kill(None)
                elif tag == "result":
                    assert watch.result_fd is not None
                    if result_done:
                        continue  # read and unregistered by the "exit" event of this same batch
                    try:
                        chunk = os.read(watch.result_fd, 64)
                    except BlockingIOError:
                        continue
                    result_buf += chunk
                    status_now = _parse_result(bytes(result_buf))
                    if not chunk or status_now is not None:
                        sel.unregister(watch.result_fd)
                        result_done = True
                    if status_now is None and not chunk and not exited and watch.result_eof_ends:
                        # The pipe closed with no report, and the sandbox's pid 1 will not end by
                        # itself: the program's parent outside (an entered warm start, enter.py)
                        # is gone, the program with it. End the sandbox: its exit ends the run.
                        kill(None)
                    if status_now is None or exited:
                        continue  # no report (the launcher was killed): bwrap's exit ends the run
                    res.status, res.exact, exited = status_now, True, True
                    res.wall_ms = int((time.monotonic() - start) * 1000)
                    # SIGKILL everything now; waiting for the namespaces' teardown is left to
                    # the caller's clean-up, off the request path.
                    if not killed and watch.kill_now is not None:
                        watch.kill_now()
                    elif not killed:
                        kill(None)
                elif tag == "stdin":
                    assert stdin_fd is not None
                    try:
                        n = os.write(stdin_fd, pending[:_CHUNK])
                        del pending[:n]
                    except BlockingIOError:
                        pass
                    except OSError as e:  # EPIPE: the program stopped reading
                        if e.errno not in (errno.EPIPE, errno.EBADF):
                            raise
                        pending.clear()
                        stdin_eof = True
                        close_stdin()
                    if stdin_registered and not pending:
                        sel.unregister(stdin_fd)  # type: ignore[arg-type]
                        stdin_registered = False
                else:
                    i = int(tag)
                    try:
                        chunk = os.read(streams[i].fd, _CHUNK)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        sel.unregister(streams[i].fd)
                        open_streams -= 1
                    elif res.truncated[i]:
                        continue  # keep draining so writers are not blocked; drop the data
                    else:
                        on_chunk(i, chunk)
        # Flush decoders so a trailing partial character is reported.
        for i, spec in enumerate(streams):
            tail = decoders[i].decode(b"", final=True)
            if tail and spec.name and on_output:
                with contextlib.suppress(Exception):
                    on_output(spec.name, tail)
    finally:
        if not exited:
            kill(None)
            _, status, ru = os.wait4(watch.pid, 0)
            res.status, res.reaped = status, True
            res.wall_ms = int((time.monotonic() - start) * 1000)
        close_stdin()
        sel.close()
        os.close(pidfd)
        for s in streams:
            with contextlib.suppress(OSError):
                os.close(s.fd)
    return res


def _parse_result(data: bytes) -> int | None:
    """The launcher's line as a wait status (exit N -> N << 8, signal N -> N)."""
    if not data.endswith(b"\n"):
        return None
    kind, _, num = data.decode("ascii", "replace").strip().partition(" ")
    if not num.isdigit():
        return None
    if kind == "exit":
        return (int(num) & 0xFF) << 8
    if kind == "signal":
        return int(num) & 0x7F
    return None
