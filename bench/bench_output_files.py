"""What collecting out/ costs a run, and what a matplotlib plot costs (issue 13, part 3).

    sudo .venv/bin/python bench/bench_output_files.py [--n 30] [--uid-base 63000]

Prints the median and p95 (ms) of a bash run that writes nothing and one that writes a file, each
without and with collection (interleaved), and of a Python run that saves a matplotlib plot, with
its CPU time and peak memory, with the font list built on the host and without it (fontcache.py).
Figures go in docs/output-files.md. Never a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from livecode.sandbox import Outcome, RunRequest, get_runner  # noqa: E402
from livecode.sandbox.fontcache import font_list  # noqa: E402
from livecode.sandbox.outputs import OutputLimits  # noqa: E402

PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.savefig('out/plot.png')\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--uid-base", type=int, default=int(os.environ.get("LIVECODE_TEST_UID_BASE", "63000")))
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="lc-bench-out-"))
    runner = get_runner(
        "bwrap",
        work_root=str(base / "work"),
        cache_dir=str(base / "cache"),
        uid_base=args.uid_base,
        slots=8,
        pool_size=2,
    )
    runner.check()
    cases = {
        "bash, nothing written, not collected": ("bash", "true", None),
        "bash, nothing written, collected": ("bash", "true", OutputLimits()),
        "bash, one file written, not collected": ("bash", "echo x > out/a", None),
        "bash, one file written, collected": ("bash", "echo x > out/a", OutputLimits()),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.n):
        for name, (lang, src, outputs) in cases.items():  # interleaved: a busy moment hits all alike
            t = time.perf_counter()
            res = runner.run(RunRequest(lang, src, outputs=outputs))
            times[name].append((time.perf_counter() - t) * 1000)
            assert res.outcome == Outcome.OK, res.stderr
    for name, ts in times.items():
        ts.sort()
        print(f"{name:40s} median {statistics.median(ts):6.1f} ms  p95 {ts[int(len(ts) * 0.95) - 1]:6.1f} ms")
    font_list("/usr/bin/python3", wait_s=120)  # the steady state: the host's font list is ready
    import livecode.sandbox.runner as runner_module

    with_list = runner_module.font_cache_files
    for label, files_for in (("with the host's font list", with_list), ("building its own", lambda lang: [])):
        runner_module.font_cache_files = files_for  # type: ignore[assignment]
        wall, cpu, memory = [], [], []
        for _ in range(max(3, args.n // 4)):
            t = time.perf_counter()
            res = runner.run(RunRequest("python", PLOT, outputs=OutputLimits()))
            wall.append((time.perf_counter() - t) * 1000)
            assert res.outcome == Outcome.OK and res.files, res.stderr
            cpu.append(res.cpu_time_ms or 0)
            memory.append(res.memory_kb or 0)
        print(
            f"python, matplotlib savefig, {label:26s} median {statistics.median(wall):6.1f} ms wall, "
            f"{statistics.median(cpu):5.0f} ms CPU, peak memory {statistics.median(memory) / 1024:.0f} MB"
        )
    runner_module.font_cache_files = with_list  # type: ignore[assignment]
    runner.close()


if __name__ == "__main__":
    main()
