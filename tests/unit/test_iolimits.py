"""The per-run disk I/O settings and the cgroup lines built from them (v1 and v2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from livecode.config import ConfigError, load_settings
from livecode.sandbox import SandboxConfig
from livecode.sandbox.iolimits import MB, IoLimits, disks_behind, whole_disk


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIVECODE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LIVECODE_SANDBOX_IO_READ_MBPS", "10")
    monkeypatch.setenv("LIVECODE_SANDBOX_IO_WRITE_MBPS", "0")
    monkeypatch.setenv("LIVECODE_SANDBOX_IO_IOPS", "300")
    assert load_settings("embedded").sandbox_config.io_limits == IoLimits(10 * MB, 0, 300, 300)
    monkeypatch.setenv("LIVECODE_SANDBOX_IO_IOPS", "many")
    with pytest.raises(ConfigError, match="LIVECODE_SANDBOX_IO_IOPS"):
        load_settings("embedded")


def test_defaults_bound_every_run() -> None:
    limits = SandboxConfig().io_limits
    assert limits.enabled and limits.read_bps > 0 and limits.read_iops > 0
    assert not IoLimits().enabled


def test_cgroup_v1_rules_skip_unlimited_values() -> None:
    assert IoLimits(read_bps=10 * MB, read_iops=500).v1_rules("254:0") == [
        ("blkio.throttle.read_bps_device", "254:0 10485760"),
        ("blkio.throttle.read_iops_device", "254:0 500"),
    ]


def test_cgroup_v2_line_names_every_key() -> None:
    # io.max takes one line per device; "max" removes a bound.
    assert IoLimits(read_bps=10 * MB, write_iops=7).v2_line("8:0") == "8:0 rbps=10485760 wbps=max riops=max wiops=7"


def test_the_root_file_system_resolves_to_a_whole_disk_or_falls_back_to_all() -> None:
    disk = whole_disk(os.stat("/").st_dev)
    disks = disks_behind(["/", "/usr"])
    if disk is not None:
        assert disk in disks
        assert not os.path.exists(f"/sys/dev/block/{disk}/partition")  # blk-throttle refuses partitions
    assert all(d.count(":") == 1 for d in disks)
