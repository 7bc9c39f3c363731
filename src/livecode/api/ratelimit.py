"""Rate limits (design 4.3) with Flask-Limiter: executions per user, sign-in attempts per address.

Counters live in Redis in the distributed mode, so every API process shares them, and in memory in
the embedded mode (one process). The moving-window strategy is one atomic Lua script per hit in
Redis: 30 concurrent requests against a limit of 10 admit exactly 10, and no burst of 2x the limit
slips through at a window boundary as it would with fixed windows.

Executions are charged to two budgets: the user's (or, signed out, the client address's) and the
client address's whoever is signed in (LIVECODE_EXECUTION_RATE_LIMIT_PER_ADDRESS), so fresh
accounts do not multiply one address's budget. A single submission is charged before the handler
runs; a batch is charged its number of runs by the batch service, after checking the batch and
right before inserting it. Either way a refused request creates nothing and charges nothing. In
Redis both budgets are charged by one Lua script on the moving-window lists `limits` keeps (one
round trip per submission instead of three; both budgets or neither, atomically). A single
submission's script is written before its handler runs and its answer read after the session read,
before anything is written (execution_charge_sent): that round trip overlaps PostgreSQL's.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, request
from flask.globals import request_ctx
from flask_limiter import Limiter
from limits import RateLimitItem
from limits import parse as parse_limit
from limits.storage import RedisClusterStorage, RedisStorage
from redis.exceptions import NoScriptError

from .. import redis_split
from ..config import Settings
from ..errors import ApiError
from ..runtime import Runtime


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


def execution_charge_sent(fn: F) -> F:
    """execution_charge whose answer the handler need not wait for: the charge is sent to Redis
    before the handler runs, and settled (429 if refused) when the handler calls
    `settle_charge()`, which it must do before it writes anything (the submission does it right
    after its session read, so the two round trips overlap). A charge the handler did not settle
    is settled when it returns or raises; a refusal answers 429 whatever else the handler found
    (a bad body, a missing session), as when the charge came first."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.execution_charge = start_charge(1)
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            settle_charge()
            raise
        settle_charge()
        return result

    return cast(F, wrapper)


def settle_charge() -> None:
    """Wait for the request's pending charge (execution_charge_sent): 429 if it was refused."""
    pending: PendingCharge | None = g.pop("execution_charge", None)
    if pending is not None:
        pending.settle()


class RateLimited(ApiError):
    status = 429
    code = "RATE_LIMITED"


def charge_executions(cost: int) -> None:
    """Take `cost` executions from the caller's budgets (the user's and the client address's), both
    or neither, or answer 429 naming the budget that refused. The batch service calls it once it
    knows how many rows it will insert, right before inserting them, so what is charged is what is
    queued, whatever the body looked like to anyone else."""
    start_charge(cost).settle()


class PendingCharge:
    """A charge sent; settle() waits for its answer (once) and answers 429 if it was refused."""

    def __init__(self, budgets: list[Budget], cost: int, refused: Budget | None = None,
                 sent: redis_split.Pending | None = None, call: tuple[list[str], list[Any]] = ([], [])) -> None:
        self.budgets, self.cost, self.refused = budgets, cost, refused
        self.sent, self.call = sent, call  # the script's EVALSHA on the wire; its keys and arguments

    def settle(self) -> None:
        if self.sent is not None:
            sent, self.sent = self.sent, None
            try:
                index = int(sent.replies()[0])
            except NoScriptError:  # Redis lost its scripts (a restart, SCRIPT FLUSH): nothing was charged
                index = int(_script[1](*self.call))  # loads the script and runs it
            self.refused = self.budgets[index - 1] if index else None
        if self.refused is not None:
            _refuse(self.refused.item, self.refused.key, self.cost, self.refused.what)


def start_charge(cost: int) -> PendingCharge:
    """Take `cost` executions from the caller's budgets, both or neither, without waiting for
    Redis's answer: the returned PendingCharge's settle() waits for it and answers 429."""
    settings = _settings()
    if cost <= 0 or not settings.rate_limits_enabled:
        return PendingCharge([], cost)
    # The same keys flask-limiter builds for its shared limits: prefix, key, scope. The address
    # budget comes first: when both are spent, the refusal names it.
    budgets: list[Budget] = []
    address = settings.execution_rate_limit_per_address
    if address:
        budgets.append(
            Budget(
                _parsed(address),
                [KEY_PREFIX, f"addr:{client_address()}", ADDRESS_SCOPE],
                f"{address} executions per client address, whichever account sends them",
            )
        )
    budgets.append(
        Budget(
            _parsed(settings.execution_rate_limit),
            [KEY_PREFIX, user_or_address(), EXECUTIONS_SCOPE],
            f"{settings.execution_rate_limit} executions per user",
        )
    )
    return _acquire_all(budgets, cost)


@dataclass(frozen=True)
class Budget:
    item: RateLimitItem
    key: list[str]
    what: str  # for the refusal's message


# limits' moving-window acquire (acquire_moving_window.lua: a list per key, newest timestamp first,
# trimmed to the limit) over several keys: every key is checked before any is charged, so a
# refusal by one budget charges none, and two requests cannot both pass a check that only one of
# them fits. Returns the 1-based index of the key that refused, or 0.
_ACQUIRE_ALL = b"""
local now, amount = tonumber(ARGV[1]), tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
    local limit, expiry = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
    if amount > limit then return i end
    local entry = redis.call('lindex', key, limit - amount)
    if entry and tonumber(entry) >= now - expiry then return i end
end
local entries = {}
for j = 1, amount do entries[j] = now end
for i, key in ipairs(KEYS) do
    local limit, expiry = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
    for j = 1, amount, 5000 do
        redis.call('lpush', key, unpack(entries, j, math.min(j + 4999, amount)))
    end
    redis.call('ltrim', key, 0, limit - 1)
    redis.call('expire', key, expiry)
end
return 0
"""
_script: list[Any] = [None, None]  # the storage it was registered on, the registered script


def _acquire_all(budgets: list[Budget], cost: int) -> PendingCharge:
    """Charge `cost` to every budget or to none (the answer: the budget that refused, or none)."""
    storage = limiter.limiter.storage
    if isinstance(storage, RedisStorage) and not isinstance(storage, RedisClusterStorage):
        client = storage.get_connection()
        if _script[0] is not storage:  # a new app (its own storage): register once more
            _script[:] = [storage, client.register_script(_ACQUIRE_ALL)]
        keys = [storage.prefixed_key(b.item.key_for(*b.key)) for b in budgets]
        args: list[Any] = [time.time(), cost]
        for b in budgets:
            args += [b.item.amount, b.item.get_expiry()]
        # EVALSHA written now; its answer read by settle(). The script is atomic in Redis: when
        # the answer is read changes nothing of what it charged.
        sent = redis_split.send(client, [("EVALSHA", _script[1].sha, len(keys), *keys, *args)])
        return PendingCharge(budgets, cost, sent=sent, call=(keys, args))
    # Other storages (the embedded mode's memory: one process, no round trips): look at the others,
    # charge the last (the user's) atomically, then the others.
    *others, last = budgets
    for b in others:
        if not limiter.limiter.test(b.item, *b.key, cost=cost):
            return PendingCharge(budgets, cost, refused=b)
    if not limiter.limiter.hit(last.item, *last.key, cost=cost):
        return PendingCharge(budgets, cost, refused=last)
    for b in others:
        limiter.limiter.hit(b.item, *b.key, cost=cost)
    return PendingCharge(budgets, cost)


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


def _limiter_used() -> bool:
    """Whether Flask-Limiter looked at this request: its per-request context is made by the
    first use (a decorated limit, `current_limit`) and lives on the request context."""
    return hasattr(request_ctx._get_current_object(), "_limiter_request_context")  # type: ignore[attr-defined]


def _only_where_used(app: Flask) -> None:
    """Flask-Limiter's after-request hook (its X-RateLimit headers when headers_enabled, its
    `deduct_when` deductions) and its teardown (the reset of its per-request context) ran on every
    request, each making that context first (~100 Python calls a GET). With nothing recorded in
    it, both do nothing: they now run only for a request the limiter looked at (sign-in's limit,
    a 429's headers), as before."""
    inject = getattr(Limiter, "_Limiter__inject_headers", None)
    hooks = app.after_request_funcs.get(None, [])
    for i, fn in enumerate(hooks):
        if isinstance(fn, functools.partial) and fn.func is inject and fn.args == (limiter,):
            hooks[i] = _when_used(fn, passthrough=True)
    teardowns = app.teardown_request_funcs.get(None, [])
    release = getattr(limiter, "_Limiter__release_context", None)
    for i, fn in enumerate(teardowns):
        if release is not None and fn == release:
            teardowns[i] = _when_used(fn, passthrough=False)


def _when_used(fn: Callable[[Any], Any], *, passthrough: bool) -> Callable[[Any], Any]:
    @wraps(fn)
    def hook(arg: Any) -> Any:
        if _limiter_used():
            return fn(arg)
        return arg if passthrough else None

    return hook


def init_limiter(app: Flask, rt: Runtime) -> None:
    app.config.update(
        RATELIMIT_ENABLED=rt.settings.rate_limits_enabled,
        RATELIMIT_STORAGE_URI=rt.limiter_storage.uri,  # Redis or memory: the runtime's choice
        RATELIMIT_STORAGE_OPTIONS=rt.limiter_storage.options,
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

    limiter.init_app(app)
    _only_where_used(app)
    # Flask-Limiter's before_request hook applies default and application-wide limits; LiveCode
    # has none (sign-in's limit is its route's decorator, executions are charged by
    # charge_executions), so on every request the hook only resolved that there was nothing to
    # do (~0.05 ms of a 2 ms GET). Decorated limits do not need it: their decorator checks them.
    hooks = app.before_request_funcs.get(None, [])
    if limiter._check_request_limit in hooks:  # not there when rate limits are off
        hooks.remove(limiter._check_request_limit)
