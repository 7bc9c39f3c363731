"""Rate limits (design 4.3) with Flask-Limiter: executions per user, sign-in attempts per address.

Counters live in Redis in the distributed mode, so every API process shares them, and in memory in
the embedded mode (one process). The moving-window strategy is one atomic Lua script per hit in
Redis: 30 concurrent requests against a limit of 10 admit exactly 10, and no burst of 2x the limit
slips through at a window boundary as it would with fixed windows.

A single submission's limit is checked before the handler runs; a batch is charged its number of
runs by the batch service, after checking the batch and right before inserting it (one atomic
hit with that cost). Either way a refused request creates nothing.
"""

from __future__ import annotations

import time

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter
from limits import parse as parse_limit

from .config import Settings
from .errors import ApiError


def client_address() -> str:
    # The TCP peer, or behind LIVECODE_TRUSTED_PROXY_HOPS reverse proxies the address they saw
    # (werkzeug's ProxyFix, installed by create_app, rewrites remote_addr from X-Forwarded-For).
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


KEY_PREFIX = "livecode"

limiter = Limiter(
    key_func=user_or_address,
    strategy="moving-window",
    headers_enabled=False,  # set on refusals only, below
    key_prefix=KEY_PREFIX,
)


EXECUTIONS_SCOPE = "executions"

# A single submission costs one, checked before the handler. A batch is charged by
# charge_executions() with the number of runs it queues, in the same bucket.
execution_limit = limiter.shared_limit(
    _execution_limit,
    scope=EXECUTIONS_SCOPE,
    error_message=_execution_message,
)


class RateLimited(ApiError):
    status = 429
    code = "RATE_LIMITED"


def charge_executions(cost: int) -> None:
    """Take `cost` executions from the caller's budget in one atomic step (one Lua script in
    Redis), or take none and answer 429. The batch service calls it once it knows how many rows
    it will insert, right before inserting them, so what is charged is what is queued, whatever
    the body looked like to anyone else."""
    settings = _settings()
    if cost <= 0 or not settings.rate_limits_enabled:
        return
    item = parse_limit(settings.execution_rate_limit)
    # The same key flask-limiter builds for the shared limit above: prefix, key, scope.
    key = [KEY_PREFIX, user_or_address(), EXECUTIONS_SCOPE]
    if limiter.limiter.hit(item, *key, cost=cost):
        return
    stats = limiter.limiter.get_window_stats(item, *key)
    reset_at = int(stats.reset_time)
    raise RateLimited(
        f"rate limit exceeded: at most {settings.execution_rate_limit} executions per user; this request "
        f"asks for {cost} and {max(0, stats.remaining)} are left; see the Retry-After header",
        details={"cost": cost, "remaining": max(0, stats.remaining)},
        headers={
            "Retry-After": str(max(1, reset_at - int(time.time()))),
            "X-RateLimit-Limit": str(item.amount),
            "X-RateLimit-Remaining": str(max(0, stats.remaining)),
            "X-RateLimit-Reset": str(reset_at),
        },
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
            if current is not None:
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
