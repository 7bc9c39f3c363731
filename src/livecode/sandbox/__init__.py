"""Run untrusted code: isolation, limits, and the language registry.

    runner = get_runner("bwrap", SandboxConfig())  # or "none" for local development (no isolation!)
    runner.check()                    # raises SandboxUnavailable at worker start-up
    result = runner.run(RunRequest(language="python", source="print(1)"))

Knows nothing of Flask, Celery or SQL.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from .cache import CacheStats
from .config import SandboxConfig
from .iolimits import IoLimits
from .languages import Language, get_language, list_languages
from .program import InvalidProgram, SourceFile, path_problem
from .runner import Prepared, Runner
from .testrun import ManyResult, RunInput, output_share, run_many
from .types import (
    Outcome,
    OutputCallback,
    RunRequest,
    RunResult,
    SandboxLimits,
    SandboxUnavailable,
    SignalSource,
    StdinSource,
    text_view,
)

__all__ = [
    "CacheStats",
    "InvalidProgram",
    "IoLimits",
    "Language",
    "ManyResult",
    "Outcome",
    "OutputCallback",
    "Prepared",
    "RunInput",
    "RunRequest",
    "RunResult",
    "Runner",
    "SandboxConfig",
    "SandboxLimits",
    "SandboxUnavailable",
    "SourceFile",
    "SignalSource",
    "StdinSource",
    "get_language",
    "get_runner",
    "list_languages",
    "output_share",
    "path_problem",
    "run_many",
    "text_view",
]

def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "livecode" / "compiled"


def get_runner(
    mode: str = "bwrap",
    config: SandboxConfig | None = None,
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

    config: the sandbox's settings (SandboxConfig: run uids, pool, lock directory, I/O bounds,
    cache bound; the defaults when None). The sandbox reads no environment variable: the worker
    passes `Settings.sandbox_config`, read from LIVECODE_SANDBOX_* and LIVECODE_COMPILE_CACHE_MAX_MB.
    work_root: root-only directory for per-run state ("none": the work dirs).
    cache_dir: compiled-program cache, never visible to user code.
    uid_base, slots, pool_size, cache_max_mb, lock_dir, io_limits: when given, override `config`.
    Run slot n uses host uid uid_base+n; these uids must not belong to anything else on the host,
    and every worker on a host, in every container, must lock them in the same lock_dir.
    """
    config = config or SandboxConfig()
    overrides: dict[str, Any] = {"uid_base": uid_base, "slots": slots, "pool_size": pool_size,
                                 "compile_cache_max_mb": cache_max_mb, "lock_dir": Path(lock_dir) if lock_dir else None}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    root = Path(work_root or os.path.join(tempfile.gettempdir(), "livecode-sandbox"))
    cache = Path(cache_dir) if cache_dir else _default_cache_dir()
    if mode == "bwrap":
        from .bwrap import BwrapRunner

        return _bounded(BwrapRunner(
            root,
            cache,
            uid_base=config.uid_base,
            slots=config.slots,
            pool_size=config.pool_size,
            warm_start=config.warm_start,
            enter=config.enter,
            lock_dir=config.lock_dir,
            io_limits=io_limits if io_limits is not None else config.io_limits,
        ), config.compile_cache_max_mb)  # fmt: skip
    if mode == "none":
        from .local import UnsandboxedRunner

        return _bounded(UnsandboxedRunner(root, cache), config.compile_cache_max_mb)
    raise ValueError(f"unknown sandbox mode {mode!r}; use 'bwrap' or 'none'")


def _bounded(runner: Runner, cache_max_mb: int) -> Runner:
    runner.cache.max_bytes = cache_max_mb * 1024 * 1024
    return runner
