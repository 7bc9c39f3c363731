"""Compile once, run many (issue 13, part 1), on the real sandbox: a compiled program is compiled
once for all its test inputs; each input runs in a fresh sandbox, so a test case that forks,
floods, loops or litters cannot affect the next one; each run gets its share of the output limit;
the runs together keep to their time budget."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from livecode.sandbox import Outcome, RunInput, Runner, RunRequest, SandboxLimits, output_share, run_many
from livecode.sandbox.bwrap import BwrapRunner
from livecode.sandbox.runner import Stage, StageResult
from livecode.sandbox.types import OutputCallback

from .helpers import leftovers, no_leftovers, requires_bwrap

pytestmark = [requires_bwrap, pytest.mark.sandbox, pytest.mark.timeout(240)]

SMALL = SandboxLimits(time_limit_ms=1500, cpu_time_ms=1500, memory_mb=128, max_processes=16, max_output_bytes=64 * 1024)
ECHO_C = r"""
#include <stdio.h>
int main(int argc, char **argv) {
    char line[256];
    if (fgets(line, sizeof line, stdin)) printf("%s", line);
    for (int i = 1; i < argc; i++) printf("[%s]", argv[i]);
    return 0;
}
"""


@pytest.fixture
def stages(runner: Runner, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The kind of every stage the real runner starts ("compile" or "run"), in order."""
    seen: list[str] = []
    real = runner._execute

    def counted(stage: Stage, on_output: OutputCallback | None) -> StageResult:
        seen.append(stage.kind)
        return real(stage, on_output)

    monkeypatch.setattr(runner, "_execute", counted)
    yield seen


def many(runner: Runner, lang: str, source: str, inputs: list[RunInput], **kw: Any) -> Any:
    limits = kw.pop("limits", SMALL)
    return run_many(runner, RunRequest(lang, source, limits=limits), inputs, **kw)


def test_a_compiled_program_compiles_once_and_runs_once_per_input(runner: Runner, stages: list[str]) -> None:
    source = f"// {uuid.uuid4()}\n{ECHO_C}"  # new to the compile cache
    inputs = [RunInput(f"line {i}\n", (f"a{i}",)) for i in range(5)]
    order: list[tuple[str, int]] = []
    got = many(
        runner,
        "c",
        source,
        inputs,
        on_start=lambda i: order.append(("start", i)),
        on_finish=lambda i, r: order.append(("finish", i)),
    )
    assert got.prepared is None and not got.cached
    assert stages == ["compile"] + ["run"] * 5
    assert [r.outcome for r in got.runs] == [Outcome.OK] * 5
    assert [r.stdout for r in got.runs] == [f"line {i}\n[a{i}]" for i in range(5)]
    assert order == [(what, i) for i in range(5) for what in ("start", "finish")]
    # The same program again: from the compile cache, no compile stage at all.
    stages.clear()
    again = many(runner, "c", source, inputs[:2])
    assert again.cached and stages == ["run", "run"]


def test_a_compile_error_runs_nothing(runner: Runner, stages: list[str]) -> None:
    got = many(runner, "c", f"// {uuid.uuid4()}\nint main(void) {{ return nope; }}\n", [RunInput("1")] * 3)
    assert got.prepared is not None and got.prepared.outcome == Outcome.COMPILE_ERROR
    assert b"nope" in got.compile_output
    assert got.runs == [] and stages == ["compile"]


def test_an_interpreted_program_runs_once_per_input_without_a_compile_stage(runner: Runner, stages: list[str]) -> None:
    got = many(
        runner,
        "python",
        "import sys\nprint(sys.stdin.read()[::-1], sys.argv[1:])",
        [RunInput("abc", ("x",)), RunInput("xyz")],
    )
    assert stages == ["run", "run"]
    assert [r.stdout for r in got.runs] == ["cba ['x']\n", "zyx []\n"]


# Each hostile test case is followed by a well-behaved one that must see none of it.
FORK_DAEMON = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for _ in range(600):
            time.sleep(0.05)
            try:
                open('/tmp/daemon-was-here', 'w').write('x')
                print('daemon output', flush=True)
            except OSError:
                pass
        os._exit(0)
    os._exit(0)
open('/tmp/left-behind', 'w').write('x')
open('left-in-workdir', 'w').write('x')
print('forked', flush=True)
"""
FORK_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
FLOOD = "import sys\nwhile True:\n    sys.stdout.write('flood ' * 1000)\n"
LOOP = "while True:\n    pass\n"
MEMORY = "x = []\nwhile True:\n    x.append(' ' * 10_000_000)\n"
# The well-behaved test: what it sees of earlier tests (files, processes).
CHECK = """
import os
seen = [p for p in ('/tmp/left-behind', '/tmp/daemon-was-here', 'left-in-workdir') if os.path.exists(p)]
procs = [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]
cmdlines = [open(f'/proc/{p}/cmdline', 'rb').read() for p in procs if os.path.exists(f'/proc/{p}/cmdline')]
print('seen', seen, 'python procs', sum(b'python' in c for c in cmdlines))
"""
HOSTILE = {"fork daemon": FORK_DAEMON, "fork bomb": FORK_BOMB, "flood": FLOOD, "loop": LOOP, "memory": MEMORY}
SCRIPT = """
import sys
mode = sys.argv[1]
{cases}
"""


def dispatcher() -> str:
    """One program whose first argument picks what a test case does."""
    parts = []
    for i, (name, code) in enumerate([*HOSTILE.items(), ("check", CHECK)]):
        body = "\n".join("    " + line for line in code.strip().splitlines())
        parts.append(f"{'if' if i == 0 else 'elif'} mode == {name!r}:\n{body}")
    return SCRIPT.format(cases="\n".join(parts))


@pytest.mark.parametrize("attack", list(HOSTILE))
def test_a_hostile_test_case_does_not_affect_the_next_one(runner: Runner, attack: str) -> None:
    inputs = [RunInput("", (attack,)), RunInput("", ("check",)), RunInput("", ("check",))]
    got = many(runner, "python", dispatcher(), inputs, budget_ms=30_000)
    hostile, after, again = got.runs
    expected = {
        "fork daemon": {Outcome.OK},
        # The process cap holds the bomb until the time limit (or its copies fill the memory first).
        "fork bomb": {Outcome.TIME_LIMIT, Outcome.MEMORY_LIMIT},
        "flood": {Outcome.OUTPUT_LIMIT},
        "loop": {Outcome.TIME_LIMIT},
        "memory": {Outcome.MEMORY_LIMIT},
    }[attack]
    assert hostile.outcome in expected, (hostile.outcome, hostile.message, hostile.stderr[-500:])
    for ok in (after, again):
        assert ok.outcome == Outcome.OK, (ok.outcome, ok.stderr)
        # Nothing of the earlier run: no file, no process (only this program in its sandbox).
        assert ok.stdout == "seen [] python procs 0\n", ok.stdout
        assert not ok.stdout_truncated
    assert no_leftovers(), leftovers()


def test_each_run_is_capped_by_its_share_of_the_output_limit(runner: Runner) -> None:
    limits = SandboxLimits(time_limit_ms=5000, max_output_bytes=4000)
    program = "import sys\nsys.stdout.write('x' * int(sys.argv[1]))\nsys.stderr.write('e' * int(sys.argv[1]))"
    got = many(
        runner,
        "python",
        program,
        [RunInput("", ("1000",)), RunInput("", ("1001",)), RunInput("", ("5",)), RunInput("", ("5",))],
        limits=limits,
    )
    assert output_share(4000, 4) == 1000
    assert [r.outcome for r in got.runs] == [Outcome.OK, Outcome.OUTPUT_LIMIT, Outcome.OK, Outcome.OK]
    assert len(got.runs[0].stdout_bytes) == len(got.runs[0].stderr_bytes) == 1000
    over = got.runs[1]  # stopped at whichever stream passed its share first
    assert len(over.stdout_bytes) <= 1000 and len(over.stderr_bytes) <= 1000
    assert over.stdout_truncated or over.stderr_truncated


def test_the_runs_keep_to_their_time_budget(runner: Runner) -> None:
    limits = SandboxLimits(time_limit_ms=5000, cpu_time_ms=5000)
    program = "import time\ntime.sleep(float(input()))\nprint('slept')"
    inputs = [RunInput("0.1"), RunInput("10"), RunInput("0"), RunInput("0")]
    got = many(runner, "python", program, inputs, budget_ms=2500, limits=limits)
    assert got.runs[0].outcome == Outcome.OK
    # The second asked for 5 s but got what was left of the 2.5 s budget; the rest did not run.
    assert got.runs[1].outcome == Outcome.TIME_LIMIT and got.runs[1].wall_time_ms < 4000
    assert len(got.runs) == 2 and got.out_of_budget


# Leaves a file in /tmp, the work dir and /dev/shm and a background process in its session, after
# saying what it found of the earlier runs' (it must find nothing: each run is a fresh sandbox).
LITTER = """
import glob, os, subprocess
seen = glob.glob('/tmp/mark-*') + glob.glob('mark-*') + glob.glob('/dev/shm/mark-*')
procs = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid())]  # 1: the launcher
print('seen', seen, 'procs', len(procs), flush=True)
for d in ('/tmp', '.', '/dev/shm'):
    open(f'{d}/mark-{os.getpid()}', 'w').write('x')
subprocess.Popen(['sleep', '60'], start_new_session=True, stdout=subprocess.DEVNULL)
"""


def test_sandboxes_built_while_an_earlier_test_runs_carry_nothing_over(runner: Runner) -> None:
    """The next tests' sandboxes are set up while a test runs (pool.py's `ahead`): each is still
    used once, by its own test, with nothing from the test before it."""
    assert isinstance(runner, BwrapRunner) and runner._pool is not None
    pool = runner._pool
    built_soon: list[bool] = []
    real_build = pool._build

    def build(key: Any, soon: bool) -> Any:
        built_soon.append(soon)
        return real_build(key, soon)

    pool._build = build  # type: ignore[method-assign]
    served = pool.served
    try:
        got = many(runner, "python", LITTER, [RunInput()] * 6, budget_ms=60_000)
    finally:
        pool._build = real_build  # type: ignore[method-assign]
    assert [r.outcome for r in got.runs] == [Outcome.OK] * 6, [(r.outcome, r.stderr) for r in got.runs]
    assert [r.stdout for r in got.runs] == ["seen [] procs 0\n"] * 6
    assert any(built_soon), built_soon  # built for the tests announced to follow ...
    assert pool.served - served >= 3  # ... and they ran in them
    assert no_leftovers(), leftovers()
