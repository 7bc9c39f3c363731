"""Sandbox speed: hello worlds through the sandbox against the same without it.

    sudo .venv/bin/python bench/bench_sandbox.py [--n 40] [--mode bwrap] [--compare-seccomp] [--no-warm]

Prints median and p95 (ms) of: a Python hello world and /bin/true, bare and sandboxed; and for
C++, Java, Go and Rust the compile-and-run time (cold cache), the cached re-run time, and the
bare run time of the same binary. --compare-seccomp adds the same hello worlds in a second
sandbox without the seccomp filter (its own uid range, right after the first one), alternating
with the others. Figures go in docs/sandbox.md. Never a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from livecode.sandbox import Outcome, RunRequest, SandboxLimits, get_language, get_runner  # noqa: E402
from livecode.sandbox.config import SandboxConfig  # noqa: E402
from livecode.sandbox.runner import Runner, Stage  # noqa: E402

HELLO = {
    "cpp": '#include <iostream>\nint main() { std::cout << "Hello World!" << std::endl; }\n',
    "java": 'public class Main { public static void main(String[] a) { System.out.println("Hello World!"); } }\n',
    "go": 'package main\nimport "fmt"\nfunc main() { fmt.Println("Hello World!") }\n',
    "rust": 'fn main() { println!("Hello World!"); }\n',
}
COMMENT = {"cpp": "//", "java": "//", "go": "//", "rust": "//"}


PAUSE_S = 0.0


def timed(fn: Callable[[], object], n: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        time.sleep(PAUSE_S)
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def paired(a: Callable[[], object], b: Callable[[], object], n: int) -> tuple[list[float], list[float]]:
    """Alternate a and b so both see the same background load (CI machines are noisy)."""
    xs, ys = interleaved([a, b], n)
    return xs, ys


def interleaved(fns: list[Callable[[], object]], n: int) -> list[list[float]]:
    outs: list[list[float]] = [[] for _ in fns]
    for _ in range(2):
        for fn in fns:
            fn()
    order = list(zip(fns, outs, strict=True))
    shuffle = random.Random(0).shuffle  # a different order each round: no position bias
    for _ in range(n):
        shuffle(order)
        for fn, out in order:
            time.sleep(PAUSE_S)
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
    return outs


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return f"median {statistics.median(xs):7.1f}  p95 {p95:7.1f}"


def bare(argv: list[str], cwd: str | None = None) -> None:
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, check=True, env={"PATH": "/usr/bin:/bin"})


def sandboxed(runner: Runner, lang: str, src: str) -> None:
    res = runner.run(RunRequest(lang, src))
    if res.outcome is not Outcome.OK or "Hello" not in res.stdout:
        raise SystemExit(f"{lang} failed: {res}")


def sandboxed_true(runner: Runner) -> None:
    d = SandboxLimits()
    stage = Stage("run", ["/bin/true"], {"PATH": "/usr/bin:/bin"}, [], 10_000, 10_000, d.memory_mb, d.max_processes,
                  d.max_file_size_kb, d.max_disk_kb, d.max_open_files, 4096, 4096)  # fmt: skip
    sr = runner._execute(stage, None)
    if sr.exit_code != 0:
        raise SystemExit(f"/bin/true failed: {sr}")


def compiled_rows(runner: Runner, n: int) -> None:
    for lang, src in HELLO.items():
        language = get_language(lang)
        if language is None or not language.available:
            print(f"{lang:6} toolchain missing")
            continue
        # Cold: a source the cache has never seen.
        cold = []
        for _ in range(3):
            fresh = f"{src}{COMMENT[lang]} {uuid.uuid4()}\n"
            t = time.perf_counter()
            res = runner.run(RunRequest(lang, fresh))
            cold.append((time.perf_counter() - t) * 1000)
            assert res.outcome is Outcome.OK and not res.cached, res
        warm_src = f"{src}{COMMENT[lang]} warm\n"
        first = runner.run(RunRequest(lang, warm_src))
        assert first.outcome is Outcome.OK, first
        # Bare: the same compiler and flags on the host, then the binary run directly.
        with tempfile.TemporaryDirectory() as d:
            Path(d, language.source_file).write_text(warm_src)
            assert language.compile is not None
            env = {"PATH": "/usr/bin:/bin", "HOME": d, **language.compile_env}
            env.update({k: os.path.join(d, k.lower()) for k in ("GOCACHE", "GOPATH") if k in env})
            subprocess.run(list(language.compile), cwd=d, check=True, env=env, capture_output=True)
            run_argv = list(language.run)
            bare_runs, cached = paired(
                lambda d=d, argv=run_argv: bare(argv, cwd=d),
                lambda lang=lang, s=warm_src: sandboxed(runner, lang, s),
                n,
            )
        print(f"{lang:6} compile+run  {stats(cold)}")
        print(
            f"{lang:6} cached run   {stats(cached)}   (x{statistics.median(cached) / statistics.median(bare_runs):.2f})"
        )
        print(f"{lang:6} bare run     {stats(bare_runs)}")


def compare_seccomp(runner: Runner, base: Path, n: int) -> None:
    """Hello worlds bare, sandboxed, and sandboxed without the seccomp filter, round-robin."""
    from livecode.sandbox.bwrap import BwrapRunner

    assert isinstance(runner, BwrapRunner)
    bare_runner = BwrapRunner(
        base / "work-nofilter",
        base / "cache-nofilter",
        uid_base=runner.uid_base + runner.slot_count,  # its own uids: slots are per runner
        slots=runner.slot_count,
        pool_size=runner.pool_size,
        seccomp=False,
    )
    bare_runner.check()
    time.sleep(1)  # let both pools fill
    print(f"# {platform.node()}: {os.cpu_count()} cores, kernel {platform.release()}, {platform.python_version()}")
    print(f"# seccomp comparison n={n} pool={runner.pool_size} (ms per whole run() call)")
    print(f"# load average before: {os.getloadavg()}")
    rows = {
        "python": (
            lambda: bare(["/usr/bin/python3", "-c", "print('Hello World!')"]),
            lambda: sandboxed(runner, "python", "print('Hello World!')"),
            lambda: sandboxed(bare_runner, "python", "print('Hello World!')"),
        ),
        "/bin/true": (lambda: bare(["/bin/true"]), lambda: sandboxed_true(runner), lambda: sandboxed_true(bare_runner)),
    }
    for name, fns in rows.items():
        host, filtered, unfiltered = interleaved(list(fns), n)
        ratio = statistics.median(filtered) / statistics.median(host)
        ratio_nf = statistics.median(unfiltered) / statistics.median(host)
        print(f"{name:10} bare               {stats(host)}")
        print(f"{name:10} sandbox            {stats(filtered)}   (x{ratio:.2f})")
        print(f"{name:10} sandbox, no filter {stats(unfiltered)}   (x{ratio_nf:.2f})")
    # CPU time of the run's cgroup: what the filter costs, less blurred by other load than wall time.
    cpu: dict[str, list[float]] = {"sandbox": [], "sandbox, no filter": []}
    for _ in range(n):
        for label, r in (("sandbox", runner), ("sandbox, no filter", bare_runner)):
            time.sleep(PAUSE_S)
            res = r.run(RunRequest("python", "print('Hello World!')"))
            cpu[label].append(float(res.cpu_time_ms or 0))
    for label, xs in cpu.items():
        print(f"python     cpu ms, {label:18} {stats(xs)}")
    bare_runner.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--mode", default="bwrap")
    ap.add_argument("--skip-compiled", action="store_true")
    ap.add_argument("--pool", type=int, default=None, help="pre-built sandboxes (0: none; default: env or 2)")
    ap.add_argument("--pause-ms", type=int, default=0, help="idle time between runs (lets the pool refill)")
    ap.add_argument("--uid-base", type=int, default=None, help="first slot uid (default: env or 61000)")
    ap.add_argument("--slots", type=int, default=None, help="slot uids per runner (default: env or 16)")
    ap.add_argument("--compare-seccomp", action="store_true", help="also run without the seccomp filter")
    ap.add_argument("--no-warm", action="store_true", help="spares without a warm-started interpreter (warm.py)")
    args = ap.parse_args()
    global PAUSE_S
    PAUSE_S = args.pause_ms / 1000
    base = Path(tempfile.mkdtemp(prefix="livecode-bench-"))
    base.chmod(0o700)
    pool = None if args.pool is None else args.pool
    runner = get_runner(
        args.mode,
        SandboxConfig(warm_start=not args.no_warm),
        work_root=str(base / "work"),
        cache_dir=str(base / "cache"),
        pool_size=pool,
        uid_base=args.uid_base,
        slots=args.slots,
    )
    runner.check()
    if args.compare_seccomp:
        compare_seccomp(runner, base, args.n)
        runner.close()
        shutil.rmtree(base, ignore_errors=True)
        return
    time.sleep(1)  # let the pool fill
    print(f"# {platform.node()}: {os.cpu_count()} cores, kernel {platform.release()}, {platform.python_version()}")
    print(f"# mode={args.mode} n={args.n} pool={pool} pause={args.pause_ms}ms warm={not args.no_warm} "
          "(ms per whole run() call)")
    print(f"# load average before: {os.getloadavg()}")
    py_bare, py_box = paired(
        lambda: bare(["/usr/bin/python3", "-c", "print('Hello World!')"]),
        lambda: sandboxed(runner, "python", "print('Hello World!')"),
        args.n,
    )
    true_bare, true_box = paired(lambda: bare(["/bin/true"]), lambda: sandboxed_true(runner), args.n)
    print(f"python bare      {stats(py_bare)}")
    print(f"python sandbox   {stats(py_box)}   (x{statistics.median(py_box) / statistics.median(py_bare):.2f})"
          f"   warm-started: {getattr(runner, 'warm_runs', 0)}")
    print(f"/bin/true bare   {stats(true_bare)}")
    print(f"/bin/true sandbox {stats(true_box)}")
    if not args.skip_compiled:
        compiled_rows(runner, max(10, args.n // 4))
    runner.close()
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
