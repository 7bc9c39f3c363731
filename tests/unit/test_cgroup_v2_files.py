"""cgroup v2 bookkeeping that depends on the kernel version, on stand-in cgroup directories
(the real thing runs in scripts/test-cgroup-v2's VM, whose kernel has memory.peak)."""

from __future__ import annotations

from pathlib import Path

import pytest

from livecode.sandbox.cgroups import RunCgroup, _v2_delegate, _v2_own_cgroup
from livecode.sandbox.types import SandboxUnavailable


def fake_run_cgroup(d: Path, peak: bool) -> RunCgroup:
    (d / "cpu.stat").write_text("usage_usec 7000\nuser_usec 5000\nsystem_usec 2000\n")
    (d / "memory.current").write_text(str(30 << 20))
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    if peak:
        (d / "memory.peak").write_text(str(40 << 20))
    cg = RunCgroup({"": d}, v2=True)
    cg.limits = (64 << 20, 16)
    return cg


def test_peak_is_the_kernels_when_it_keeps_one(tmp_path: Path) -> None:
    cg = fake_run_cgroup(tmp_path, peak=True)
    assert cg.cpu_ms() == 7
    assert cg.peak_kb() == 40 << 10


def test_peak_is_sampled_on_kernels_without_memory_peak(tmp_path: Path) -> None:
    # Kernels < 5.19 (Ubuntu 22.04's 5.15): the largest memory.current seen at the CPU checks.
    cg = fake_run_cgroup(tmp_path, peak=False)
    assert cg.cpu_ms() == 7  # a CPU check samples memory.current (30 MB)...
    (tmp_path / "memory.current").write_text(str(1 << 20))  # ...which has dropped by the end
    assert cg.peak_kb() == 30 << 10
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cg.peak_kb() == 64 << 10  # usage reached the limit: the samples would under-report


def test_missing_controllers_are_named(tmp_path: Path) -> None:
    (tmp_path / "cgroup.procs").write_text("")
    (tmp_path / "cgroup.controllers").write_text("cpu io\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    with pytest.raises(SandboxUnavailable, match=r"memory, pids not delegated .*Delegate=yes"):
        _v2_delegate(tmp_path, [])


def test_own_cgroup_must_be_mounted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("livecode.sandbox.cgroups.CGROUP_ROOT", tmp_path)
    (tmp_path / "svc" / "livecode-supervisor").mkdir(parents=True)
    (tmp_path / "svc" / "cgroup.procs").write_text("")
    assert _v2_own_cgroup("/svc/livecode-supervisor") == tmp_path / "svc"  # the leaf's parent
    with pytest.raises(SandboxUnavailable, match="cgroup namespace"):
        _v2_own_cgroup("/elsewhere")
