"""Signals a user sends to a running program (a Stop button, Piston's `signal` message): they
reach the program's own process inside the sandbox, the result says which one ended it, and a
program that handles one reports its own exit."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from livecode.sandbox import Outcome, Runner, RunRequest, SandboxLimits

from .helpers import make_runner, requires_bwrap, run

# Programs that run until stopped (also used by tests/integration/test_cancel.py).
LOOP = "import time\nprint('started', flush=True)\nwhile True:\n    time.sleep(0.01)\n"
HANDLER = (  # and one that handles Ctrl-C
    "import time\n"
    "try:\n"
    "    print('started', flush=True)\n"
    "    while True:\n"
    "        time.sleep(0.01)\n"
    "except KeyboardInterrupt:\n"
    "    print('caught KeyboardInterrupt')\n"
)


def after_output(sig: int, marker: str = "started") -> tuple[Callable[[str, str], None], Callable[[], int | None]]:
    """An on_output and a SignalSource that sends `sig` once the program printed `marker`."""
    seen: list[str] = []
    sent: list[int] = []

    def on_output(stream: str, text: str) -> None:
        seen.append(text)

    def source() -> int | None:
        if not sent and marker in "".join(seen):
            sent.append(sig)
            return sig
        return None

    return on_output, source


def _run(runner: Runner, src: str, sig: int, lang: str = "python", marker: str = "started"):  # type: ignore[no-untyped-def]
    on_output, source = after_output(sig, marker)
    start = time.monotonic()
    res = runner.run(
        RunRequest(lang, src, limits=SandboxLimits(time_limit_ms=20_000, cpu_time_ms=20_000)),
        on_output=on_output,
        signal_source=source,
    )
    return res, time.monotonic() - start


@requires_bwrap
def test_sigkill_stops_a_busy_program_at_once(runner: Runner) -> None:
    res, took = _run(runner, LOOP, signal.SIGKILL)
    assert res.outcome is Outcome.CANCELLED, res
    assert res.signal == signal.SIGKILL and res.exit_code is None
    assert res.stdout == "started\n"
    assert "SIGKILL" in res.message
    assert took < 15, took  # far below its 20 s limit


@requires_bwrap
def test_sigint_raises_keyboard_interrupt_in_python(runner: Runner) -> None:
    res, _ = _run(runner, HANDLER, signal.SIGINT)
    # It handled the signal and exited by itself: its own outcome, with its handler's output.
    assert res.outcome is Outcome.OK, res
    assert res.stdout == "started\ncaught KeyboardInterrupt\n"
    assert res.exit_code == 0 and res.signal is None


DISPOSITIONS = (  # SIGINT's default in Python is KeyboardInterrupt; False where ignored
    "import signal\n"
    "print([signal.getsignal(signal.SIGINT) is signal.default_int_handler]\n"
    "      + [signal.getsignal(getattr(signal, n)) == signal.SIG_DFL for n in ('SIGQUIT', 'SIGTERM', 'SIGUSR1')])\n"
    "print(sorted(s.name for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])))\n"
)


@requires_bwrap
def test_the_program_gets_default_signals_whatever_the_worker_ignores_or_blocks(tmp_path: Path) -> None:
    """A worker started in the background (nohup, `&`) ignores SIGINT and SIGQUIT, and an ignored
    signal survives execve: the program must still start with every signal at its default and
    none blocked, or a user's Ctrl-C would never reach it."""
    ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1)}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    try:
        r = make_runner(tmp_path, 0)  # no pool: the sandbox is spawned now, from this state
        try:
            res = run(r, "python", DISPOSITIONS)
            stopped, _ = _run(r, HANDLER, signal.SIGINT)
        finally:
            r.close()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for sig, handler in ignored.items():
            signal.signal(sig, handler)
    assert res.outcome is Outcome.OK, res
    assert res.stdout.splitlines() == ["[True, True, True, True]", "[]"], res.stdout
    assert stopped.outcome is Outcome.OK and stopped.stdout == "started\ncaught KeyboardInterrupt\n", stopped


@requires_bwrap
def test_an_unhandled_sigterm_ends_the_program(runner: Runner) -> None:
    res, _ = _run(runner, LOOP, signal.SIGTERM)
    assert res.outcome is Outcome.CANCELLED, res
    assert res.signal == signal.SIGTERM


@requires_bwrap
def test_the_signal_reaches_the_program_not_a_child_it_started(runner: Runner) -> None:
    # The program's own process (the shell) gets it, as a terminal's process would; its
    # children die with the sandbox.
    src = "sleep 30 &\ntrap 'echo got USR1; exit 3' USR1\necho started\nwhile true; do sleep 0.05; done\n"
    res, _ = _run(runner, src, signal.SIGUSR1, lang="bash")
    assert res.outcome is Outcome.RUNTIME_ERROR, res  # it handled the signal: its own exit 3
    assert res.exit_code == 3
    assert "got USR1" in res.stdout


@requires_bwrap
def test_a_signal_during_compilation_stops_it(runner: Runner) -> None:
    # A C program whose compilation takes a while (a large generated source).
    body = "".join(f"int f{i}(int x) {{ return x * {i} + {i % 7}; }}\n" for i in range(20000))
    src = body + f"int main(void) {{ return 0; }}\n// {uuid.uuid4()}\n"  # never in the compile cache
    polls: list[float] = []

    def source() -> int | None:
        polls.append(time.monotonic())
        return signal.SIGKILL if len(polls) == 3 else None

    res = runner.run(RunRequest("c", src), signal_source=source)
    if res.outcome is Outcome.OK:
        pytest.skip("the compiler finished before the signal (a cached build)")
    assert res.outcome is Outcome.CANCELLED, res
    assert res.signal == signal.SIGKILL
    assert res.message.startswith("compilation stopped by signal 9"), res.message


def test_dev_runner_delivers_signals(dev_runner: Runner) -> None:
    res, _ = _run(dev_runner, LOOP, signal.SIGTERM)
    assert res.outcome is Outcome.CANCELLED, res
    assert res.signal == signal.SIGTERM


@requires_bwrap
def test_a_program_that_ignores_signals_is_still_stopped_by_sigkill_with_its_children(runner: Runner) -> None:
    # Hostile: it ignores every signal it may, and leaves a child behind that does the same.
    src = (
        "import os, signal, time\n"
        "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1):\n"
        "    signal.signal(s, signal.SIG_IGN)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    while True: time.sleep(0.01)\n"
        "print('started', flush=True)\n"
        "while True: time.sleep(0.01)\n"
    )
    sent: list[int] = []
    seen: list[str] = []

    def source() -> int | None:
        if "started" not in "".join(seen):
            return None
        if not sent:
            sent.append(time.monotonic())  # type: ignore[arg-type]
            return signal.SIGTERM  # ignored
        if time.monotonic() - sent[0] > 1.0 and len(sent) == 1:
            sent.append(signal.SIGKILL)
            return signal.SIGKILL
        return None

    res = runner.run(
        RunRequest("python", src, limits=SandboxLimits(time_limit_ms=20_000, cpu_time_ms=20_000)),
        on_output=lambda _s, t: seen.append(t),
        signal_source=source,
    )
    assert len(sent) == 2, "SIGTERM did not keep it from running: it should have been ignored"
    assert res.outcome is Outcome.CANCELLED and res.signal == signal.SIGKILL, res
    assert res.wall_time_ms < 15_000, res  # not its time limit
