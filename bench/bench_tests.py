"""Test cases, compile once and run many (issue 13, part 1): a C++ program with 50 tests through
the sandbox, against one compile plus 50 bare runs of the same program on the host.

    sudo .venv/bin/python bench/bench_tests.py [--tests 50] [--rounds 3] [--uid-base N] [--api]

Each round takes a source the compile cache has never seen, so the sandboxed figure includes
the compile, as the bare one does. Rows, in ms (median of the rounds):
- tests:      run_many() of the program with 50 inputs (one compile stage, 50 fresh sandboxes),
              each output checked;
- bare:       the same compiler and flags on the host, then the binary run 50 times directly;
- one by one: the sandboxed compile, then 50 separate sandboxed runs (the compiled program from the
              cache): what a client gets from 50 separate executions, without the queue;
- api:        with --api, the same through `livecode serve` (its own data dir): one POST of the
              program with 50 tests (?wait=true) until the finished execution is back, every
              verdict ACCEPTED.
The figure is tests / bare; the target is below 2x. On a shared machine, compare the median of
each round's ratio too (both rows of a round ran seconds apart). Never a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from livecode.sandbox import Outcome, RunInput, RunRequest, SandboxLimits, get_language, get_runner  # noqa: E402
from livecode.sandbox.program import expand  # noqa: E402
from livecode.sandbox.runner import Runner  # noqa: E402

SUM_CPP = """#include <iostream>
int main() {
    long a, b;
    std::cin >> a >> b;
    std::cout << a + b << std::endl;
}
"""
LIMITS = SandboxLimits(time_limit_ms=5000)


def fresh_source() -> str:
    return f"{SUM_CPP}// {uuid.uuid4()}\n"  # new to the compile cache


def inputs(n: int) -> list[RunInput]:
    return [RunInput(f"{i} {i * 3}\n") for i in range(n)]


def with_tests(runner: Runner, n: int) -> float:
    from livecode.sandbox import run_many

    t = time.perf_counter()
    got = run_many(runner, RunRequest("cpp", fresh_source(), limits=LIMITS), inputs(n))
    elapsed = (time.perf_counter() - t) * 1000
    assert got.prepared is None and not got.cached, got.prepared
    assert [r.stdout for r in got.runs] == [f"{4 * i}\n" for i in range(n)], [r.outcome for r in got.runs]
    return elapsed


def bare(n: int) -> float:
    language = get_language("cpp")
    assert language is not None and language.compile is not None
    with tempfile.TemporaryDirectory() as d:
        Path(d, language.source_file).write_text(fresh_source())
        env = {"PATH": "/usr/bin:/bin", "HOME": d}
        t = time.perf_counter()
        files = [language.source_file]
        compile_argv = expand(language.compile, language.source_file, files, language.sources)
        run_argv = expand(language.run, language.source_file, files, language.sources)
        subprocess.run(compile_argv, cwd=d, check=True, env=env, capture_output=True)
        for i, given in enumerate(inputs(n)):
            out = subprocess.run(run_argv, cwd=d, input=given.stdin.encode(), capture_output=True, check=True, env=env)
            assert out.stdout == f"{4 * i}\n".encode()
        return (time.perf_counter() - t) * 1000


def one_by_one(runner: Runner, n: int) -> float:
    source = fresh_source()
    t = time.perf_counter()
    for i, given in enumerate(inputs(n)):
        res = runner.run(RunRequest("cpp", source, stdin=given.stdin, limits=LIMITS))
        assert res.outcome is Outcome.OK and res.stdout == f"{4 * i}\n", res
    return (time.perf_counter() - t) * 1000


def through_api(base: str, n: int) -> float:
    from tests.support.client import ApiClient

    api = ApiClient(base)
    sid = api.create_session(fresh_source(), "cpp")["session_id"]
    tests = [{"stdin": given.stdin, "expected_output": str(4 * i)} for i, given in enumerate(inputs(n))]
    t = time.perf_counter()
    r = api.request(
        "POST",
        f"/api/v1/executions/session/{sid}/execute?wait=true&timeout_ms=30000",
        json={"tests": tests, "time_limit_ms": LIMITS.time_limit_ms},
        timeout=120,
    )
    assert r.status_code in (200, 202), r.text
    done = r.json() if r.status_code == 200 else api.wait_execution(r.json()["execution_id"], 120)
    elapsed = (time.perf_counter() - t) * 1000
    assert done["summary"] == {"passed": n, "total": n, "verdict": "ACCEPTED"}, done["summary"]
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--uid-base", type=int, default=None, help="first slot uid (default: env or 61000)")
    ap.add_argument("--slots", type=int, default=None)
    ap.add_argument("--api", action="store_true", help="also through `livecode serve` (embedded)")
    args = ap.parse_args()
    language = get_language("cpp")
    if language is None or not language.available:
        raise SystemExit("g++ is not installed")
    base = Path(tempfile.mkdtemp(prefix="livecode-bench-tests-"))
    base.chmod(0o700)
    runner = get_runner(
        "bwrap", work_root=str(base / "work"), cache_dir=str(base / "cache"), uid_base=args.uid_base, slots=args.slots
    )
    runner.check()
    stack = None
    if args.api:
        from bench.common import embedded_stack

        stack = embedded_stack(str(base / "serve"))
    try:
        time.sleep(1)  # let the pool fill
        print(
            f"# {platform.node()}: {os.cpu_count()} cores, kernel {platform.release()}, "
            f"{platform.python_version()}; load average before: {os.getloadavg()}"
        )
        print(f"# C++ program, {args.tests} tests, {args.rounds} rounds (ms, whole round; cold compile each)")
        rows: dict[str, list[float]] = {"tests": [], "bare": [], "one by one": []}
        if stack is not None:
            rows["api"] = []
            through_api(stack.base, 2)
        with_tests(runner, 2)  # warm-up: toolchain pages in the page cache
        bare(2)
        for _ in range(args.rounds):  # interleaved, so that drift in load hits each alike
            rows["tests"].append(with_tests(runner, args.tests))
            rows["bare"].append(bare(args.tests))
            rows["one by one"].append(one_by_one(runner, args.tests))
            if stack is not None:
                rows["api"].append(through_api(stack.base, args.tests))
        med = {name: statistics.median(xs) for name, xs in rows.items()}
        for name, xs in rows.items():
            print(f"{name:11} median {med[name]:8.0f}   all {', '.join(f'{x:.0f}' for x in xs)}")
        ratio = med["tests"] / med["bare"]
        print(f"tests / (one compile + {args.tests} bare runs) = {ratio:.2f}x (target < 2x)")
        # Each round's own ratio: its two rows ran seconds apart, so a shared machine's load
        # drifting between rounds moves this median less than the ratio of the medians.
        rounds = [t / b for t, b in zip(rows["tests"], rows["bare"], strict=True)]
        print(f"  the same, median of each round's ratio = {statistics.median(rounds):.2f}x "
              f"(all {', '.join(f'{r:.2f}' for r in rounds)})")
        print(f"tests / one by one = {med['tests'] / med['one by one']:.2f}x")
        if stack is not None:
            print(f"api / (one compile + {args.tests} bare runs) = {med['api'] / med['bare']:.2f}x")
    finally:
        if stack is not None:
            stack.stop()
        runner.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
