"""Rate limits (design 4.3) with Flask-Limiter: executions per user, sign-in attempts per address.

Counters live in Redis in the distributed mode, so every API process shares them, and in memory in
the embedded mode (one process). The moving-window strategy is one atomic Lua script per hit in
Redis: 30 concurrent requests against a limit of 10 admit exactly 10, and no burst of 2x the limit
slips through at a window boundary as it would with fixed windows.

Executions are charged to two budgets: the user's (or, signed out, the client address's) and the
client address's whoever is signed in (LIVECODE_EXECUTION_RATE_LIMIT_PER_ADDRESS), so fresh
accounts do not multiply one address's budget. A single submission is charged before the handler
runs; a batch is charged its number of runs by the batch service, after checking the batch and
right before inserting it (one atomic hit per budget with that cost). Either way a refused request
creates nothing.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter
from limits import parse as parse_limit

from ..config import Settings
from ..errors import ApiError


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


def _login_limit() -> str:
    return _settings().login_rate_limit


def _login_message() -> str:
    return (
        f"too many sign-in attempts from this address (limit {_settings().login_rate_limit}); "
        "see the Retry-After header"
    )


F = TypeVar("F", bound=Callable[..., Any])

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
ADDRESS_SCOPE = "executions-by-address"  # beside the user's: every run from one client address


def execution_charge(fn: F) -> F:
    """For the execute route: charge one execution to the user's and the client address's budgets
    before the handler runs (so a refused request creates nothing), or answer 429."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        charge_executions(1)
        return fn(*args, **kwargs)

    return cast(F, wrapper)


class RateLimited(ApiError):
    status = 429
    code = "RATE_LIMITED"


def charge_executions(cost: int) -> None:
    """Take `cost` executions from the caller's budgets (the user's and the client address's) in
    atomic steps (one Lua script each in Redis), or answer 429. The batch service calls it once it
    knows how many rows it will insert, right before inserting them, so what is charged is what is
    queued, whatever the body looked like to anyone else."""
    settings = _settings()
    if cost <= 0 or not settings.rate_limits_enabled:
        return
    user_item = _parsed(settings.execution_rate_limit)
    # The same keys flask-limiter builds for the shared limits above: prefix, key, scope.
    user_key = [KEY_PREFIX, user_or_address(), EXECUTIONS_SCOPE]
    address = settings.execution_rate_limit_per_address
    address_item = _parsed(address) if address else None
    address_key = [KEY_PREFIX, f"addr:{client_address()}", ADDRESS_SCOPE]
    # The address budget is looked at first so that a refusal there charges nothing; two batches
    # racing between this look and the hit below can pass it by at most one batch.
    if address_item is not None and not limiter.limiter.test(address_item, *address_key, cost=cost):
        _refuse(address_item, address_key, cost,
                f"{address} executions per client address, whichever account sends them")
    if not limiter.limiter.hit(user_item, *user_key, cost=cost):
        _refuse(user_item, user_key, cost, f"{settings.execution_rate_limit} executions per user")
    if address_item is not None:
        limiter.limiter.hit(address_item, *address_key, cost=cost)


@functools.lru_cache(maxsize=64)
def _parsed(limit: str) -> Any:
    """A limit string ("30/minute") parsed once, not on every submission."""
    return parse_limit(limit)


def _refuse(item: Any, key: list[str], cost: int, what: str) -> None:
    stats = limiter.limiter.get_window_stats(item, *key)
    reset_at = int(stats.reset_time)
    raise RateLimited(
        f"rate limit exceeded: at most {what}; this request asks for {cost} and "
        f"{max(0, stats.remaining)} are left; see the Retry-After header",
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
