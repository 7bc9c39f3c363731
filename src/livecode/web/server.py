"""Gunicorn as the production WSGI server, for `livecode api` and `livecode serve`: its gthread
worker with a front that reads each request before it takes a thread (livecode.web.front_worker)."""

from __future__ import annotations

import gc
import resource
from collections.abc import Callable
from typing import Any

from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from ..logging_setup import RedactSecretsFilter, redact
from .front_worker import FrontLimits, GuardedThreadWorker, error_response


def _write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Gunicorn answers a request it cannot parse (request line or headers too long, bad header
    characters) itself, before Flask sees it; answer in the API's JSON error shape, not HTML."""
    code = reason.upper().replace(" ", "_").replace("-", "_")
    gunicorn_util.write_nonblock(sock, error_response(f"{status_int} {reason}", code, f"{reason}: {redact(mesg)}"))


gunicorn_util.write_error = _write_json_error


class RedactingLogger(GunicornLogger):  # type: ignore[misc]
    """gunicorn's own log lines echo what it could not parse (a request line with
    ?access_token=..., an Authorization header with a bad byte): redact them like ours."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            if not any(isinstance(f, RedactSecretsFilter) for f in log.filters):
                log.addFilter(RedactSecretsFilter())


class GunicornServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, app_factory: Callable[[], Any], options: dict[str, Any]) -> None:
        self.app_factory = app_factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key.lower(), value)

    def load(self) -> Any:
        app = self.app_factory()
        # What start-up made (modules, the API's models, SQLAlchemy's tables and cached statements,
        # ~150,000 objects) lives as long as the process: out of the collector's reach, a full
        # collection looks only at what requests made since, 1-2 ms instead of 100-200 ms during
        # which every thread of the process stands still (under 32 connections of autosaves, one
        # every few seconds: they were the p99; docs/performance.md). Collected first, so that
        # start-up's garbage is freed rather than kept for good.
        gc.collect()
        gc.freeze()
        return app


def _allow_open_files(wanted: int) -> None:
    """Raise the soft limit on open files to what the connections need (up to the hard limit):
    past it accept() fails and the worker process exits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def front_limits(settings: Any) -> FrontLimits:
    return FrontLimits(
        header_timeout_s=settings.header_timeout_s, body_timeout_s=settings.body_timeout_s,
        send_timeout_s=settings.send_timeout_s, connections_per_address=settings.connections_per_address,
        connections_per_process=settings.connections_per_process,
        exempt=tuple(settings.connection_limit_exempt), max_body_bytes=settings.max_request_bytes,
    )


def serve(app_factory: Callable[[], Any], *, host: str, port: int, workers: int, threads: int,
          limits: FrontLimits | None = None, **hooks: Any) -> None:
    # Set before gunicorn forks its workers, which inherit it.
    GuardedThreadWorker.limits = limits = limits or FrontLimits()
    # Open connections, as many lingering closes, and the database, Redis, logs, sandbox pipes.
    _allow_open_files(2 * limits.connections_per_process + 256)
    options = {
        "bind": f"{host}:{port}" if ":" not in host else f"[{host}]:{port}",
        "workers": workers,
        "worker_class": f"{GuardedThreadWorker.__module__}.{GuardedThreadWorker.__qualname__}",
        "threads": threads,
        "worker_connections": limits.connections_per_process,
        "timeout": 60,
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": None,
        "logger_class": RedactingLogger,
        "preload_app": False,
        **hooks,
    }
    GunicornServer(app_factory, options).run()
