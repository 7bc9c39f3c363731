"""Run untrusted code: isolation, limits, and the language registry.

    runner = get_runner("bwrap")      # or "none" for local development (no isolation!)
    runner.check()                    # raises SandboxUnavailable at worker start-up
    result = runner.run(RunRequest(language="python", source="print(1)"))

Knows nothing of Flask, Celery or SQL.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .cache import DEFAULT_MAX_MB, CacheStats
from .hostfs import DEFAULT_LOCK_DIR
from .iolimits import IoLimits
from .languages import Language, get_language, list_languages
from .runner import Runner
from .types import (
    Outcome,
    OutputCallback,
    RunRequest,
    RunResult,
    SandboxLimits,
    SandboxUnavailable,
    StdinSource,
    text_view,
)

__all__ = [
    "CacheStats",
    "IoLimits",
    "Language",
    "Outcome",
    "OutputCallback",
    "RunRequest",
    "RunResult",
    "Runner",
    "SandboxLimits",
    "SandboxUnavailable",
    "StdinSource",
    "get_language",
    "get_runner",
    "io_limits_from_env",
    "list_languages",
    "text_view",
]

DEFAULT_UID_BASE = 61000
DEFAULT_SLOTS = 64  # shared by every worker on the host; uids 61000-61063 stay below systemd DynamicUser (61184+)
# Per-run disk I/O bounds: enough for a toolchain's cold start from disk, far from a disk's
# full bandwidth (a run reading 530 MB/s made the host's fsync latency 7x worse).
DEFAULT_IO_READ_MBPS = 64
DEFAULT_IO_WRITE_MBPS = 64
DEFAULT_IO_IOPS = 2000


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def io_limits_from_env() -> IoLimits:
    """LIVECODE_SANDBOX_IO_READ_MBPS, _WRITE_MBPS (MiB/s) and _IOPS (each of reads and writes)
    per run; 0 = unlimited."""
    return IoLimits.from_mb(
        _env_int("LIVECODE_SANDBOX_IO_READ_MBPS", DEFAULT_IO_READ_MBPS),
        _env_int("LIVECODE_SANDBOX_IO_WRITE_MBPS", DEFAULT_IO_WRITE_MBPS),
        _env_int("LIVECODE_SANDBOX_IO_IOPS", DEFAULT_IO_IOPS),
    )


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "livecode" / "compiled"


def get_runner(
    mode: str = "bwrap",
    *,
    work_root: str | None = None,
    cache_dir: str | None = None,
    uid_base: int | None = None,
    slots: int | None = None,
    pool_size: int | None = None,
    cache_max_mb: int | None = None,
    lock_dir: str | None = None,
    io_limits: IoLimits | None = None,
) -> Runner:
    """A runner for `mode` "bwrap" (the sandbox) or "none" (development only, no isolation).

    work_root: root-only directory for per-run state ("none": the work dirs).
    cache_dir: compiled-program cache, never visible to user code.
    uid_base/slots: run slot n uses host uid uid_base+n (env LIVECODE_SANDBOX_UID_BASE,
    LIVECODE_SANDBOX_SLOTS); these uids must not belong to anything else on the host.
    pool_size: sandboxes set up ahead of time (env LIVECODE_SANDBOX_POOL, default 2; 0 = none).
    cache_max_mb: bound of the compile cache, least recently used entries evicted past it (env
    LIVECODE_COMPILE_CACHE_MAX_MB, default 2048); every process sharing cache_dir should agree.
    lock_dir: where slot uids are locked (env LIVECODE_SANDBOX_LOCK_DIR, default
    /run/livecode/slots). uids are host-wide, so every worker on a host, in every container,
    must see the same directory; it does not depend on TMPDIR or the data directory.
    io_limits: per-run disk I/O bounds (default from io_limits_from_env()).
    """
    root = Path(work_root or os.path.join(tempfile.gettempdir(), "livecode-sandbox"))
    cache = Path(cache_dir) if cache_dir else _default_cache_dir()
    if cache_max_mb is None:
        cache_max_mb = _env_int("LIVECODE_COMPILE_CACHE_MAX_MB", DEFAULT_MAX_MB)
    if mode == "bwrap":
        from .bwrap import BwrapRunner

        return _bounded(BwrapRunner(
            root,
            cache,
            uid_base=uid_base or int(os.environ.get("LIVECODE_SANDBOX_UID_BASE", DEFAULT_UID_BASE)),
            slots=slots or int(os.environ.get("LIVECODE_SANDBOX_SLOTS", DEFAULT_SLOTS)),
            pool_size=pool_size if pool_size is not None else int(os.environ.get("LIVECODE_SANDBOX_POOL", 2)),
            lock_dir=Path(lock_dir or os.environ.get("LIVECODE_SANDBOX_LOCK_DIR") or DEFAULT_LOCK_DIR),
            io_limits=io_limits if io_limits is not None else io_limits_from_env(),
        ), cache_max_mb)  # fmt: skip
    if mode == "none":
        from .local import UnsandboxedRunner

        return _bounded(UnsandboxedRunner(root, cache), cache_max_mb)
    raise ValueError(f"unknown sandbox mode {mode!r}; use 'bwrap' or 'none'")


def _bounded(runner: Runner, cache_max_mb: int) -> Runner:
    runner.cache.max_bytes = cache_max_mb * 1024 * 1024
    return runner
