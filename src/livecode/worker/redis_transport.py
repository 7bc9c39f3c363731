"""kombu's Redis transport with one reusable client per channel.

The stock channel builds a new `redis.Redis` object (whose `__init__` fills a dict of response
callbacks) for every message published and, with `acks_late`, for every delivery's and every
ack's QoS bookkeeping: about 2.5 ms of worker CPU per execution. A client object is only a
handle on the channel's connection pool and is thread-safe, so one per channel (rebuilt when
the channel replaces its pool after a connection error) does the same work. Nothing else
changes: the same commands, the same pool, the same visibility timeout and unacked bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    _sync_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        cached = self._sync_client
        pool = self.pool  # a new pool after _disconnect_pools(): build a client on it
        if cached is None or cached.connection_pool is not pool:
            cached = self._sync_client = self._create_client()
        yield cached


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
