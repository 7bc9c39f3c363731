"""The sandbox's own settings, each declared once: field name, environment variable, default and
doc (the field's metadata; the parser follows from the default's type).

The sandbox never reads the environment. Whoever builds a runner hands it a `SandboxConfig`:
`SandboxConfig()` is the defaults, and `livecode.config` reads these same declarations from the
environment as part of `Settings` (`settings.sandbox_config`) and writes them into `.env.example`.
They are declared here rather than in `livecode.config` so that the sandbox stays usable alone
(it imports nothing of the rest of LiveCode) and its knobs sit next to the code that uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import DEFAULT_MAX_MB
from .hostfs import DEFAULT_LOCK_DIR
from .iolimits import IoLimits


def _declare(env: str, default: Any, doc: str, **meta: Any) -> Any:
    """A field carrying its environment variable and doc, read by `livecode.config`."""
    return field(default=default, metadata={"env": env, "doc": doc, **meta})


@dataclass(frozen=True)
class SandboxConfig:
    uid_base: int = _declare(
        "LIVECODE_SANDBOX_UID_BASE",
        61000,
        "Run uids per host (uid base + n), shared by every worker on it: each holds about its concurrency "
        "+ pool size + 2 (a compile's sandbox built ahead), and while it runs an execution's test cases up "
        "to 4 more (16 while the program compiles, only of those free then). Keep the range free of real "
        "users (61000-61063 stays below systemd's DynamicUser range, 61184 and up).",
    )
    slots: int = _declare("LIVECODE_SANDBOX_SLOTS", 64, "How many run uids (slots) the range holds.")
    pool_size: int = _declare(
        "LIVECODE_SANDBOX_POOL", 2, "Sandboxes each worker process sets up ahead of time (0 = none)."
    )
    warm_start: bool = _declare(
        "LIVECODE_SANDBOX_WARM_START",
        True,
        "Start the interpreter of the last runs' language (Python, Node) in each spare sandbox before its run "
        "comes, its script a FIFO until then (docs/sandbox.md, warm starts): a run no longer waits "
        "for the interpreter's start-up (~12 ms; Node's ~40). false: every run starts its program when it comes.",
    )
    enter: bool = _declare(
        "LIVECODE_SANDBOX_ENTER",
        True,
        "A spare's warm-started Python is a copy of one started once per worker, which enters the spare's "
        "sandbox, instead of a new interpreter (docs/sandbox.md, entered warm starts): ~3 ms less CPU per run. "
        "false: each spare starts its own.",
    )
    lock_dir: Path = _declare(
        "LIVECODE_SANDBOX_LOCK_DIR",
        DEFAULT_LOCK_DIR,
        "Host-wide directory of the per-uid slot locks: every worker of a host, in every container, must "
        "use the same one (compose and Kubernetes mount the host's /run/livecode/slots).",
    )
    # Per-run disk I/O bounds: enough for a toolchain's cold start from disk, far from a disk's
    # full bandwidth (a run reading 530 MB/s made the host's fsync latency 7x worse).
    io_read_mbps: int = _declare(
        "LIVECODE_SANDBOX_IO_READ_MBPS",
        64,
        "Per-run disk I/O limits on the disks behind /usr, /etc and the cache (MiB/s, operations/s of "
        "each of reads and writes; 0 = none).",
    )
    io_write_mbps: int = _declare("LIVECODE_SANDBOX_IO_WRITE_MBPS", 64, "")
    io_iops: int = _declare("LIVECODE_SANDBOX_IO_IOPS", 2000, "")
    compile_cache_max_mb: int = _declare(
        "LIVECODE_COMPILE_CACHE_MAX_MB",
        DEFAULT_MAX_MB,
        "Bound of the compiled-program cache in MB; least recently used entries are evicted past it. "
        "Every process sharing the cache directory should agree.",
    )

    @property
    def io_limits(self) -> IoLimits:
        return IoLimits.from_mb(self.io_read_mbps, self.io_write_mbps, self.io_iops)
