"""Where workers put their execution figures, read by any API process at scrape time: one Redis
hash (HINCRBYs, batched about once a second per worker process) in the distributed mode, a dict
in memory in the embedded one.

Fields: "tasks|<outcome>", "n|<status>|<language>", and histograms "dur|<language>|..." and
"wait|<queue>|..." as bucket counts "b<i>", "sum" and "count".
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import Any, Protocol

log = logging.getLogger(__name__)

REDIS_KEY = "livecode:metrics:executions"
WAIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
FLUSH_S = 1.0  # how often a worker process sends its execution figures to Redis
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ExecutionMetricsStore(Protocol):
    def add(self, increments: dict[str, float]) -> None: ...

    def read(self) -> dict[str, float]: ...


class RedisMetricsStore:
    """Increments are added up in this process and sent in one pipeline about once a second
    (`FLUSH_S`) by a background thread, not per execution: the per-run path costs a dict update,
    not a Redis round trip. What a failed flush could not send is kept for the next one (the
    fields are a bounded set), so Redis being down loses no counts; what is pending when the
    process dies is lost (at most one interval's counts)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None

    def add(self, increments: dict[str, float]) -> None:
        with self._lock:
            for field, value in increments.items():
                self._pending[field] = self._pending.get(field, 0.0) + value
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="metrics-flush", daemon=True)
                self._flusher.start()
                atexit.register(self._flush_quietly)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for field, value in pending.items():
                if float(value).is_integer():
                    pipe.hincrby(REDIS_KEY, field, int(value))
                else:
                    pipe.hincrbyfloat(REDIS_KEY, field, value)
            pipe.execute()
        except Exception:
            # Not sent (or not known to be): kept for the next flush. A pipeline that failed half
            # way may count some twice; a figure is a monitoring aid, the rows are the truth.
            with self._lock:
                for field, value in pending.items():
                    self._pending[field] = self._pending.get(field, 0.0) + value
            raise

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - kept for the next flush, or lost with the process
            log.debug("could not flush execution metrics", exc_info=True)

    def _flush_loop(self) -> None:
        while True:
            time.sleep(FLUSH_S)
            self._flush_quietly()

    def read(self) -> dict[str, float]:
        raw = self.client.hgetall(REDIS_KEY)
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}


class MemoryMetricsStore:
    def __init__(self) -> None:
        self._values: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, increments: dict[str, float]) -> None:
        with self._lock:
            for field, value in increments.items():
                self._values[field] = self._values.get(field, 0.0) + value

    def read(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)


def _bucket_index(value: float, buckets: tuple[float, ...]) -> int:
    for i, bound in enumerate(buckets):
        if value <= bound:
            return i
    return len(buckets)  # +Inf


def histogram_increments(prefix: str, value: float, buckets: tuple[float, ...]) -> dict[str, float]:
    return {f"{prefix}|b{_bucket_index(value, buckets)}": 1, f"{prefix}|sum": value, f"{prefix}|count": 1}


def histogram_from(
    values: dict[str, float], prefix: str, buckets: tuple[float, ...]
) -> tuple[list[tuple[str, float]], float]:
    cumulative = 0.0
    out: list[tuple[str, float]] = []
    for i, bound in enumerate(buckets):
        cumulative += values.get(f"{prefix}|b{i}", 0.0)
        out.append((repr(float(bound)), cumulative))
    cumulative += values.get(f"{prefix}|b{len(buckets)}", 0.0)
    out.append(("+Inf", cumulative))
    return out, values.get(f"{prefix}|sum", 0.0)
