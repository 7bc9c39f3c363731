"""Stream slots: how many SSE and WebSocket followers an API process serves at once, and how
many of them one user (or, without an account, one client address) may hold.

Each follower holds a server thread for as long as it follows. Past the process's limit a new
one is refused (503 STREAMS_BUSY) rather than queued behind the others, so that ordinary requests
always find a free thread; past the caller's own cap it is refused with 429 TOO_MANY_STREAMS, so
that one client cannot take every slot.

A slot is a `Lease`, given back exactly once however the request ends. The lease is handed to the
WSGI middleware below, which gives it back when the server closes the response (PEP 3333: the
server calls close() on every response iterable, whether it was sent in full, cut off
by the client, not sent at all (HEAD), or replaced by an error response) or when the application
raises. A generator's `finally` is not enough: a generator that was never started (HEAD, a
failure before the first write) does not run it when closed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import current_app, request
from prometheus_client import Gauge

from ..errors import ApiError, ServiceUnavailable

LEASES_KEY = "livecode.stream_leases"

IN_USE = Gauge("livecode_stream_slots_in_use", "SSE and WebSocket followers holding a stream slot",
               multiprocess_mode="livesum")


class TooManyStreams(ApiError):
    status = 429
    code = "TOO_MANY_STREAMS"


class Lease:
    """One held slot; release() gives it back, once."""

    def __init__(self, slots: StreamSlots, key: str) -> None:
        self._slots, self.key = slots, key
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._slots._give_back(self.key)


class StreamSlots:
    """`limit` followers per process (None: no limit, outside `livecode api|serve`), at most
    `per_user` of one user and `per_address` of one client address without an account (0: no cap)."""

    def __init__(self, limit: int | None, per_user: int = 0, per_address: int = 0) -> None:
        self.limit, self.per_user, self.per_address = limit, per_user, per_address
        self.active = 0
        self.by_key: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_server(cls, threads: int | None, per_user: int = 0, per_address: int = 0) -> StreamSlots:
        """`threads`: the server's threads per process (Settings.api_threads; None outside
        `livecode api|serve`: no process-wide limit)."""
        if threads is None:
            return cls(None, per_user, per_address)
        return cls(max(1, threads - max(4, threads // 4)), per_user, per_address)

    def acquire(self, user_id: Any, address: str | None) -> Lease:
        """A slot for a follower of `user_id` (None: no account, counted by `address`)."""
        key, cap = (f"user:{user_id}", self.per_user) if user_id is not None else (f"addr:{address}", self.per_address)
        with self._lock:
            if self.limit is not None and self.active >= self.limit:
                raise ServiceUnavailable(
                    f"this API process follows {self.limit} executions at once already; retry shortly, "
                    "or poll GET /api/v1/executions/{id}",
                    code="STREAMS_BUSY", headers={"Retry-After": "2"}, details={"limit": self.limit},
                )
            if cap and self.by_key.get(key, 0) >= cap:
                who = "this account" if user_id is not None else "this address"
                raise TooManyStreams(
                    f"{who} already follows {cap} executions at once on this API process; close one, "
                    "or poll GET /api/v1/executions/{id}",
                    headers={"Retry-After": "2"}, details={"limit": cap},
                )
            self.active += 1
            self.by_key[key] = self.by_key.get(key, 0) + 1
        IN_USE.inc()
        return Lease(self, key)

    def _give_back(self, key: str) -> None:
        with self._lock:
            self.active -= 1
            left = self.by_key.get(key, 0) - 1
            if left > 0:
                self.by_key[key] = left
            else:
                self.by_key.pop(key, None)
        IN_USE.dec()


def slots() -> StreamSlots:
    return current_app.extensions["livecode.stream_slots"]  # type: ignore[no-any-return]


def hold_slot(user_id: Any) -> Lease:
    """Take a slot for this request; it is given back when the response is closed."""
    lease = slots().acquire(user_id, request.remote_addr)
    request.environ.setdefault(LEASES_KEY, []).append(lease)
    return lease


def _release_all(leases: list[Lease]) -> None:
    for lease in leases:
        lease.release()


class _ReleasingIterable:
    def __init__(self, inner: Iterable[bytes], leases: list[Lease]) -> None:
        self.inner, self.leases = inner, leases

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.inner)

    def close(self) -> None:
        try:
            close = getattr(self.inner, "close", None)
            if close is not None:
                close()
        finally:
            _release_all(self.leases)


class ReleaseStreamSlots:
    """WSGI middleware: every slot taken during a request is given back when the server closes
    the response, or at once when the application raises (flask-sock ends a WebSocket under
    gunicorn by raising StopIteration)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        leases: list[Lease] = []
        environ[LEASES_KEY] = leases
        try:
            result = self.app(environ, start_response)
        except BaseException:
            _release_all(leases)
            raise
        if not leases:
            return result  # the common case: nothing to give back, nothing wrapped
        return _ReleasingIterable(result, leases)
