"""Rate limits (design 4.3) with Flask-Limiter: executions per user, sign-in attempts per address.

Counters live in Redis in the distributed mode, so every API process shares them, and in memory in
the embedded mode (one process). The moving-window strategy is one atomic Lua script per hit in
Redis: 30 concurrent requests against a limit of 10 admit exactly 10, and no burst of 2x the limit
slips through at a window boundary as it would with fixed windows.

The limit is checked before the handler runs, so a refused request creates nothing.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter

from .config import Settings


def client_address() -> str:
    # Behind a reverse proxy, run gunicorn with --forwarded-allow-ips so this is the client's.
    return request.remote_addr or "unknown"


def user_or_address() -> str:
    """The key of per-user limits: the signed-in user, or the client address for the anonymous."""
    user_id = g.get("user_id")
    return f"user:{user_id}" if user_id else f"addr:{client_address()}"


def _settings() -> Settings:
    return current_app.extensions["livecode.runtime"].settings  # type: ignore[no-any-return]


def _execution_limit() -> str:
    return _settings().execution_rate_limit


def _login_limit() -> str:
    return _settings().login_rate_limit


def _execution_message() -> str:
    return (
        f"rate limit exceeded: at most {_settings().execution_rate_limit} executions per user; "
        "see the Retry-After header"
    )


def _login_message() -> str:
    return (
        f"too many sign-in attempts from this address (limit {_settings().login_rate_limit}); "
        "see the Retry-After header"
    )


limiter = Limiter(
    key_func=user_or_address,
    strategy="moving-window",
    headers_enabled=False,  # set on refusals only, below
    key_prefix="livecode",
)


def batch_cost() -> int:
    """A batch submission costs one execution per item (a malformed body costs one and fails later)."""
    body: Any = request.get_json(silent=True)
    items = body.get("executions") if isinstance(body, dict) else None
    return max(1, len(items)) if isinstance(items, list) else 1


# Shared scope: single and batch submissions draw on the same per-user budget.
execution_limit = limiter.shared_limit(
    _execution_limit,
    scope="executions",
    error_message=_execution_message,
)
batch_execution_limit = limiter.shared_limit(
    _execution_limit,
    scope="executions",
    error_message=_execution_message,
    cost=batch_cost,
)
login_limit = limiter.shared_limit(
    _login_limit,
    scope="sign-in",
    key_func=lambda: f"addr:{client_address()}",
    error_message=_login_message,
)


def init_limiter(app: Flask, settings: Settings) -> None:
    app.config.update(
        RATELIMIT_ENABLED=settings.rate_limits_enabled,
        RATELIMIT_STORAGE_URI=settings.redis_url or "memory://",
        # Shorter than the defaults so a Redis outage is a quick 503, not a hung request.
        RATELIMIT_STORAGE_OPTIONS={"socket_connect_timeout": 1, "socket_timeout": 5} if settings.redis_url else {},
    )

    @app.after_request
    def _refusal_headers(resp: Response) -> Response:
        # Only a refusal carries the rate-limit headers: computing them costs a second Redis
        # round trip, which every admitted request would otherwise pay.
        if resp.status_code == 429:
            current = limiter.current_limit
            # A storage quota's 429 is not a rate limit: waiting does not lift it.
            if current is not None and current.breached:
                reset_at = int(current.reset_at)
                resp.headers["Retry-After"] = str(max(1, reset_at - int(time.time())))
                resp.headers["X-RateLimit-Limit"] = str(current.limit.amount)
                resp.headers["X-RateLimit-Remaining"] = str(max(0, current.remaining))
                resp.headers["X-RateLimit-Reset"] = str(reset_at)
        return resp

    @limiter.request_filter
    def _reads_and_autosaves_are_not_limited() -> bool:
        # Every limit guards a POST (execute, batch, sign-in). Exempting the other methods up
        # front skips the limiter's per-request resolution on the hot paths (autosave, polling).
        return request.method != "POST"

    limiter.init_app(app)
