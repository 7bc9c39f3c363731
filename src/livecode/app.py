"""create_app(): the only place things are wired together."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, Response, g, request
from flask.sessions import SessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from . import migrations as migrate
from .api import build_api
from .api.auth import init_auth
from .api.body import drain_unread_body
from .api.errors import register_error_handlers
from .api.headers import init_security_headers
from .api.metrics import init_metrics
from .api.playground import register_playground
from .api.ratelimit import init_limiter
from .config import Settings, load_settings
from .logging_setup import configure_logging
from .runtime import Runtime, init_runtime
from .streaming.bus import RedisEventBus
from .web.request_ids import new_request_id

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class NoCookieSession(SessionInterface):
    """The API has no cookie session (a token or an API key says who calls). Flask's default
    builds a signing serializer on every request to look for one (~3 % of a GET's CPU); this
    gives each request Flask's null session, which refuses writes."""

    def open_session(self, app: Flask, request: Any) -> None:
        return None

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        return None


class LiveCodeFlask(Flask):
    """Flask, asking once per function whether it is a coroutine function.

    Flask calls ensure_sync on every before/after-request hook and on the view, for every
    request, and each call inspects the function's code flags again. Whether a function is
    `async def` never changes: the answer is kept per function (the underlying function of a
    bound method: Flask-RESTX binds its view anew for each request). Hooks and views are a fixed
    set, so the cache stays small."""

    MAX_KNOWN = 10_000  # past this many functions, the rest are inspected at every call

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._known_sync: set[Any] = set()

    def ensure_sync(self, func: Any) -> Any:
        key = getattr(func, "__func__", func)
        try:
            if key in self._known_sync:
                return func
        except TypeError:  # an unhashable callable: asked every time
            return super().ensure_sync(func)
        made = super().ensure_sync(func)
        if made is func and len(self._known_sync) < self.MAX_KNOWN:
            self._known_sync.add(key)
        return made


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None,
               enqueue: Any = None, run_migrations: bool | None = None) -> Flask:
    settings = settings or load_settings()
    configure_logging(settings)
    rt = runtime or init_runtime(settings)
    if run_migrations is None:
        run_migrations = settings.embedded
    if run_migrations:
        if settings.embedded:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate.upgrade(rt.db.engine)

    app = LiveCodeFlask(__name__, static_folder=None)
    app.session_interface = NoCookieSession()
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        RESTX_MASK_SWAGGER=False,
        RESTX_ERROR_404_HELP=False,
        JSON_SORT_KEYS=False,
        PROPAGATE_EXCEPTIONS=False,
    )
    if enqueue is None:
        from .worker.celery_app import RedisEnqueue, configure_celery, enqueue_execution

        configure_celery(settings)
        # On Redis, the task's message is pushed with the event bus's client, in the same round
        # trip as the run's QUEUED event (services/executions.py, queue_runs).
        enqueue = RedisEnqueue(rt.events.client) if isinstance(rt.events, RedisEventBus) else enqueue_execution
    app.extensions["livecode.runtime"] = rt
    if settings.trusted_proxy_hops:
        # Only the last N hops of X-Forwarded-For were added by our own proxies; anything before
        # them is whatever the client sent. With 0 the TCP peer is the client.
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.extensions["livecode.enqueue"] = enqueue

    @app.before_request
    def _request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if REQUEST_ID_RE.match(incoming) else new_request_id()

    @app.after_request
    def _headers(resp: Response) -> Response:
        drain_unread_body()
        resp.headers["X-Request-ID"] = g.get("request_id", "")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp

    init_metrics(app, rt)  # first after the request id: it times and logs every request, 401s too
    init_auth(app, settings)  # after the request id, so a 401 is logged with it
    init_limiter(app, rt)
    init_security_headers(app)
    register_error_handlers(app)
    build_api(app)
    register_playground(app)
    return app
