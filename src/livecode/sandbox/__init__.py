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
    "list_languages",
    "text_view",
]

DEFAULT_UID_BASE = 61000
DEFAULT_SLOTS = 16


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
) -> Runner:
    """A runner for `mode` "bwrap" (the sandbox) or "none" (development only, no isolation).

    work_root: root-only directory for per-run state (slot locks; "none": work dirs).
    cache_dir: compiled-program cache, never visible to user code.
    uid_base/slots: run slot n uses host uid uid_base+n (env LIVECODE_SANDBOX_UID_BASE,
    LIVECODE_SANDBOX_SLOTS); these uids must not belong to anything else on the host.
    pool_size: sandboxes set up ahead of time (env LIVECODE_SANDBOX_POOL, default 2; 0 = none).
    """
    root = Path(work_root or os.path.join(tempfile.gettempdir(), "livecode-sandbox"))
    cache = Path(cache_dir) if cache_dir else _default_cache_dir()
    if mode == "bwrap":
        from .bwrap import BwrapRunner

        return BwrapRunner(
            root,
            cache,
            uid_base=uid_base or int(os.environ.get("LIVECODE_SANDBOX_UID_BASE", DEFAULT_UID_BASE)),
            slots=slots or int(os.environ.get("LIVECODE_SANDBOX_SLOTS", DEFAULT_SLOTS)),
            pool_size=pool_size if pool_size is not None else int(os.environ.get("LIVECODE_SANDBOX_POOL", 2)),
        )
    if mode == "none":
        from .local import UnsandboxedRunner

        return UnsandboxedRunner(root, cache)
    raise ValueError(f"unknown sandbox mode {mode!r}; use 'bwrap' or 'none'")
