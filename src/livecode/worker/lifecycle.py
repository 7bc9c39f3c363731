"""Worker start-up and shut-down: refuse to start without a sandbox, keep a heartbeat, reconcile."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from ..infra.languages import HEARTBEAT_KEY as LANGUAGES_KEY
from ..infra.languages import LIBRARIES_KEY, advertised, advertised_libraries
from ..runtime import Runtime, runtime
from .celery_app import celery, enqueue_execution
from .heartbeat import Heartbeat, process_stats, set_identity
from .reconciler import Reconciler
from .sandbox_runner import compile_cache_stats, get_process_runner
from .webhooks import WebhookSweeper

log = logging.getLogger(__name__)

_threads: list[Any] = []


def start_background(rt: Runtime, worker_name: str, concurrency: int) -> None:
    """Heartbeat and reconciler threads for one worker process (or the embedded server)."""
    from .tasks import active_runs

    set_identity(worker_name)
    # What this worker can run, probed once before its first heartbeat: the API (which needs no
    # toolchain of its own in the distributed mode) lists and accepts the union over live workers.
    languages = advertised()
    libraries = advertised_libraries()
    hb = Heartbeat(
        rt.registry, worker_name, rt.settings.heartbeat_interval_s, rt.settings.heartbeat_ttl_s,
        lambda: _beat_info(active_runs(), concurrency, languages, libraries),
    )
    rec = Reconciler(rt, enqueue_execution, worker_name)
    hooks = WebhookSweeper(rt)
    hb.start()
    rec.start()
    hooks.start()
    _threads.extend([hb, rec, hooks])


def _beat_info(
    active: int, concurrency: int, languages: dict[str, str], libraries: dict[str, dict[str, str]] | None = None
) -> dict[str, Any]:
    info = process_stats(active, concurrency)
    info[LANGUAGES_KEY] = languages
    info[LIBRARIES_KEY] = libraries or {}
    cache = compile_cache_stats()
    if cache is not None:
        info["compile_cache"] = cache
    return info


def stop_background() -> None:
    for t in _threads:
        t.stop()
    _threads.clear()


@signals.worker_init.connect
def _check_sandbox(sender: Any = None, **_: Any) -> None:
    # Refuse to start (raise) if the host cannot give the configured isolation.
    get_process_runner(runtime().settings)
    if getattr(sender, "hostname", None):
        set_identity(sender.hostname)


@signals.worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    rt = runtime()
    if rt.settings.embedded and celery.conf.get("livecode_inprocess"):
        return  # the embedded server starts its own background threads
    name = getattr(sender, "hostname", None) or "worker"
    start_background(rt, name, int(celery.conf.worker_concurrency or 1))
    log.info("worker ready", extra={"worker": name})


@signals.worker_shutdown.connect
def _on_shutdown(sender: Any = None, **_: Any) -> None:
    stop_background()
