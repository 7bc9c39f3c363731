"""One sandbox runner per worker process, checked once at start-up."""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from typing import Any

from ..config import Settings
from ..sandbox import Runner, get_runner

log = logging.getLogger(__name__)

_runner: Runner | None = None
_lock = threading.Lock()


def get_process_runner(settings: Settings) -> Runner:
    """The runner for this process. Raises SandboxUnavailable if the host cannot sandbox."""
    global _runner
    with _lock:
        if _runner is None:
            runner = get_runner(
                settings.sandbox,
                settings.sandbox_config,
                work_root=str(settings.data_dir / "runs") if settings.embedded else None,
                cache_dir=str(settings.data_dir / "compile-cache"),
            )
            runner.check()
            if settings.sandbox == "none":
                log.warning("LIVECODE_SANDBOX=none: user code runs WITHOUT isolation (development only)")
            _runner = runner
        return _runner


def compile_cache_stats() -> dict[str, Any] | None:
    """This process's compile cache figures (the whole cache directory, shared by every worker
    process of the host that uses it), for the heartbeat; None before the runner exists."""
    runner = _runner
    return asdict(runner.cache.stats()) if runner is not None else None
