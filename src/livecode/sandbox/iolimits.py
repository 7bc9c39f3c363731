"""Per-run disk I/O limits: which block devices, and the cgroup lines that bound them.

A run can read only the read-only binds of the system (/usr, /etc files, ...) and, through the
launcher, cached compiled files; everything it writes goes to tmpfs (memory). So the devices to
bound are the whole disks behind those paths. blk-throttle (cgroup v1 blkio.throttle.*, v2
io.max) accepts whole disks only, not partitions, and sees only I/O that reaches the block
layer: page-cache hits are memory reads and are not bounded (nor need to be).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MB = 1024 * 1024
SYSTEM_PATHS = ("/", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/opt")
_SYS_BLOCK = Path("/sys/block")
_SYS_DEV_BLOCK = Path("/sys/dev/block")
_VIRTUAL_DISKS = ("ram", "zram", "loop")  # memory-backed or file-backed on another disk


@dataclass(frozen=True)
class IoLimits:
    """Per-run bounds; 0 means unlimited."""

    read_bps: int = 0
    write_bps: int = 0
    read_iops: int = 0
    write_iops: int = 0

    @classmethod
    def from_mb(cls, read_mbps: int, write_mbps: int, iops: int) -> IoLimits:
        return cls(max(read_mbps, 0) * MB, max(write_mbps, 0) * MB, max(iops, 0), max(iops, 0))

    @property
    def enabled(self) -> bool:
        return any((self.read_bps, self.write_bps, self.read_iops, self.write_iops))

    def v1_rules(self, device: str) -> list[tuple[str, str]]:
        """(blkio file, line) pairs for one "major:minor" device; zero values write no rule."""
        values = [
            ("blkio.throttle.read_bps_device", self.read_bps),
            ("blkio.throttle.write_bps_device", self.write_bps),
            ("blkio.throttle.read_iops_device", self.read_iops),
            ("blkio.throttle.write_iops_device", self.write_iops),
        ]
        return [(name, f"{device} {value}") for name, value in values if value > 0]

    def v2_line(self, device: str) -> str:
        """One io.max line for a "major:minor" device."""
        keys = [("rbps", self.read_bps), ("wbps", self.write_bps)]
        keys += [("riops", self.read_iops), ("wiops", self.write_iops)]
        return f"{device} " + " ".join(f"{k}={v if v > 0 else 'max'}" for k, v in keys)


def whole_disk(st_dev: int) -> str | None:
    """"major:minor" of the whole disk holding device `st_dev`; None if it is no block device
    (overlayfs, btrfs subvolumes, tmpfs, network file systems have anonymous device numbers)."""
    node = _SYS_DEV_BLOCK / f"{os.major(st_dev)}:{os.minor(st_dev)}"
    try:
        if (node / "partition").exists():
            node = node.resolve().parent  # a partition's sysfs directory sits in its disk's
        return (node / "dev").read_text().strip() or None
    except OSError:
        return None


def all_disks() -> list[str]:
    """Every real whole disk of the host (the fallback when a path's disk cannot be named)."""
    found = []
    try:
        entries = sorted(_SYS_BLOCK.iterdir())
    except OSError:
        return []
    for entry in entries:
        if entry.name.startswith(_VIRTUAL_DISKS):
            continue
        try:
            found.append((entry / "dev").read_text().strip())
        except OSError:
            continue
    return [d for d in found if d]


def disks_behind(paths: list[str]) -> list[str]:
    """The whole disks a run's reads of `paths` can reach: each path's own disk, or every real
    disk when one of them lives on a file system without a single block device (a container's
    overlayfs, btrfs)."""
    disks: set[str] = set()
    unresolved = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        disk = whole_disk(st.st_dev)
        if disk is None:
            unresolved.append(path)
        else:
            disks.add(disk)
    if unresolved:
        log.info("no single block device behind %s: bounding the I/O of runs on every disk", unresolved)
        disks.update(all_disks())
    return sorted(disks)
