"""Disk I/O of a run is bounded: a program reading a big toolchain file with O_DIRECT (no page
cache, every byte from the disk) reads at about the configured rate, not at the disk's."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from livecode.sandbox import IoLimits, Outcome, Runner

from .helpers import make_runner, requires_bwrap, run

pytestmark = requires_bwrap

LIMIT_MBPS = 10
MB = 1 << 20
_CANDIDATES = (
    "/usr/lib/jvm/*/lib/modules",
    "/usr/lib/*/libLLVM*.so*",
    "/usr/lib/*/librustc_driver*.so",
    "/usr/lib/gcc/*/*/cc1plus",
    "/usr/lib/gcc/*/*/cc1",
    "/usr/lib/go*/pkg/tool/*/compile",
)

# Reads the file from the disk for a while, 1 MiB at a time into a page-aligned buffer (mmap),
# starting over at its end; prints the rate in MiB/s.
READER = """
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 1 << 20)
total, start = 0, time.monotonic()
while time.monotonic() - start < float(sys.argv[2]):
    n = os.readv(fd, [buf])
    if n <= 0:
        os.lseek(fd, 0, os.SEEK_SET)
    total += max(n, 0)
print(total / (time.monotonic() - start) / (1 << 20))
"""


def big_system_file() -> str:
    for pattern in _CANDIDATES:
        for path in sorted(glob.glob(pattern)):
            if os.path.isfile(path) and os.path.getsize(path) >= 64 * MB:
                return path
    pytest.skip("no file of 64 MiB or more under /usr to read")


def _runner(base: Path, io: IoLimits, pool: int) -> Runner:
    return make_runner(base, pool, io_limits=io)


@pytest.fixture(scope="module")
def unlimited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    r = _runner(tmp_path_factory.mktemp("io-unlimited"), IoLimits(), pool=0)
    yield r
    r.close()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    # Pooled, as runs are by default (the limits are set when the sandbox is built).
    r = _runner(tmp_path_factory.mktemp("io-limited"), IoLimits.from_mb(LIMIT_MBPS, LIMIT_MBPS, 0), pool=1)
    yield r
    r.close()


def read_rate(runner: Runner, path: str, seconds: float = 2.0) -> float:
    res = run(runner, "python", READER, args=(path, str(seconds)), time_limit_ms=20_000)
    if res.outcome is not Outcome.OK and "Invalid argument" in res.stderr:
        pytest.skip(f"the file system of {path} does not support O_DIRECT")
    assert res.outcome is Outcome.OK, res
    return float(res.stdout.strip())


def test_direct_reads_from_disk_are_throttled_to_the_limit(unlimited: Runner, limited: Runner) -> None:
    path = big_system_file()
    free = read_rate(unlimited, path)
    if free < 4 * LIMIT_MBPS:
        pytest.skip(f"the disk reads only {free:.0f} MiB/s unthrottled: too slow to show a {LIMIT_MBPS} MiB/s bound")
    bounded = read_rate(limited, path)
    assert 0 < bounded < 3 * LIMIT_MBPS, f"read {bounded:.1f} MiB/s with a {LIMIT_MBPS} MiB/s limit ({free:.0f} free)"
