"""Prometheus metrics (design: monitoring) with the official client, served at GET /metrics.

Where each figure comes from, and why:
- API request latency and database pool usage: measured in each API process. `livecode api` runs
  gunicorn with several processes, so it uses prometheus_client's multiprocess mode
  (PROMETHEUS_MULTIPROC_DIR); a scrape of any process reports the sum over all of them.
- Execution outcomes, durations, queue wait and tasks processed: recorded by the workers, which
  are separate processes on other hosts and serve no HTTP. Each worker (worker/metrics.py) adds
  its figures to one Redis hash (a few HINCRBY per execution) and the API reads the hash at scrape
  time, so any API process reports the totals of all workers. In the embedded mode the hash is in
  memory (infra/metrics_store.py).
- Queue length (Redis LLEN) and worker CPU and memory (the workers' heartbeats) are read at scrape
  time, so they are current and cost nothing between scrapes.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import ApiError
from ..infra.metrics_store import DURATION_BUCKETS, WAIT_BUCKETS, histogram_from
from ..runtime import Runtime
from ..services.stats import broker_queue_lengths
from ..web import after_response, parking

log = logging.getLogger(__name__)

# Label values come from fixed sets only, so no request can add series: a made-up method is
# "other", a path no route matches is "<unmatched>" (the route template, never the path).
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"

HTTP_LATENCY = Histogram(
    "livecode_http_request_duration_seconds", "API request latency by endpoint, method and status",
    ["endpoint", "method", "status"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DB_POOL_CHECKED_OUT = Gauge("livecode_db_pool_checked_out", "Database connections in use",
                            ["engine"], multiprocess_mode="livesum")
DB_POOL_SIZE = Gauge("livecode_db_pool_size", "Database connections kept in the pool",
                     ["engine"], multiprocess_mode="livesum")
DB_POOL_OVERFLOW = Gauge("livecode_db_pool_overflow", "Database connections beyond the pool size",
                         ["engine"], multiprocess_mode="livesum")


# ---- scrape side: read at GET /metrics ------------------------------------------------------


class RuntimeCollector(Collector):
    """Figures read at scrape time: queues, workers, and the workers' execution figures."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        yield from self._queues()
        yield from self._workers()
        yield from self._executions()

    def _queues(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily("livecode_queue_length", "Messages waiting in each queue", labels=["queue"])
        try:
            for queue, length in broker_queue_lengths(self.rt).items():
                gauge.add_metric([queue], length)
        except Exception:  # noqa: BLE001 - a scrape still answers when Redis is down
            log.warning("queue length unavailable", exc_info=True)
        yield gauge

    def _workers(self) -> Iterable[Metric]:
        alive = GaugeMetricFamily("livecode_workers_alive", "Workers with a fresh heartbeat")
        cpu = CounterMetricFamily("livecode_worker_cpu_seconds", "CPU time used by each worker process",
                                  labels=["worker"])
        rss = GaugeMetricFamily("livecode_worker_memory_rss_bytes", "Resident memory of each worker process",
                                labels=["worker"])
        active = GaugeMetricFamily("livecode_worker_active_runs", "Runs in progress on each worker",
                                   labels=["worker"])
        try:
            workers = self.rt.registry.alive()
        except Exception:  # noqa: BLE001
            workers = {}
        alive.add_metric([], len(workers))
        for name, info in sorted(workers.items()):
            cpu.add_metric([name], float(info.get("cpu_seconds") or 0))
            rss.add_metric([name], float(info.get("rss_bytes") or 0))
            active.add_metric([name], float(info.get("active") or 0))
        yield from (alive, cpu, rss, active)
        yield from _compile_cache(workers)

    def _executions(self) -> Iterable[Metric]:
        try:
            values = self.rt.metrics.read()
        except Exception:  # noqa: BLE001
            log.warning("execution metrics unavailable", exc_info=True)
            values = {}
        tasks = CounterMetricFamily("livecode_tasks_processed", "Execution tasks handled by workers, by outcome",
                                    labels=["outcome"])
        outcomes = CounterMetricFamily("livecode_executions", "Finished executions by status and language",
                                       labels=["status", "language"])
        duration = HistogramMetricFamily("livecode_execution_duration_seconds",
                                         "Execution wall time by language", labels=["language"])
        wait = HistogramMetricFamily("livecode_queue_wait_seconds",
                                     "Time from queued to started, by queue", labels=["queue"])
        histograms: dict[str, set[str]] = {"dur": set(), "wait": set()}
        for field, value in sorted(values.items()):
            parts = field.split("|")
            if parts[0] == "tasks" and len(parts) == 2:
                tasks.add_metric([parts[1]], value)
            elif parts[0] == "n" and len(parts) == 3:
                outcomes.add_metric([parts[1], parts[2]], value)
            elif parts[0] in histograms and len(parts) == 3:
                histograms[parts[0]].add(parts[1])
        for language in sorted(histograms["dur"]):
            duration.add_metric([language], *histogram_from(values, f"dur|{language}", DURATION_BUCKETS))
        for queue in sorted(histograms["wait"]):
            wait.add_metric([queue], *histogram_from(values, f"wait|{queue}", WAIT_BUCKETS))
        yield from (tasks, outcomes, duration, wait)


def _compile_cache(workers: dict[str, dict[str, Any]]) -> Iterable[Metric]:
    """The compile cache as each worker sees it (from its heartbeat). Workers of one host that
    share a cache directory report the same figures: aggregate with max by host, not sum."""
    size = GaugeMetricFamily("livecode_compile_cache_bytes", "Bytes of compiled programs in the cache",
                             labels=["worker"])
    bound = GaugeMetricFamily("livecode_compile_cache_max_bytes", "Bound of the compile cache (LRU eviction)",
                              labels=["worker"])
    entries = GaugeMetricFamily("livecode_compile_cache_entries", "Compiled programs in the cache",
                                labels=["worker"])
    evictions = CounterMetricFamily("livecode_compile_cache_evictions",
                                    "Compiled programs evicted to keep the cache under its bound", labels=["worker"])
    for name, info in sorted(workers.items()):
        cache = info.get("compile_cache")
        if not isinstance(cache, dict):
            continue
        size.add_metric([name], float(cache.get("bytes") or 0))
        bound.add_metric([name], float(cache.get("max_bytes") or 0))
        entries.add_metric([name], float(cache.get("entries") or 0))
        evictions.add_metric([name], float(cache.get("evictions") or 0))
    yield from (size, bound, entries, evictions)


def multiprocess_enabled() -> bool:
    """Whether prometheus_client writes its values to PROMETHEUS_MULTIPROC_DIR's files: it decides
    once, when it is first imported (`livecode api` sets the variable before that)."""
    from prometheus_client import values

    return values.ValueClass is not values.MutexValue


def render(rt: Runtime) -> bytes:
    """The whole exposition: this process's (or all API processes') metrics plus scrape-time ones."""
    scrape = CollectorRegistry(auto_describe=True)
    scrape.register(RuntimeCollector(rt))
    if multiprocess_enabled():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(scrape)
        return generate_latest(scrape)
    return generate_latest(REGISTRY) + generate_latest(scrape)


POOL_EVERY_S = 1.0  # the pool gauges are refreshed at most this often per process
_pool_recorded = [0.0]


def _record_pool(rt: Runtime, force: bool = False) -> None:
    """The database pool gauges of this process. In multiprocess mode each set is a write to the
    process's mmapped file, so it is done at most once per POOL_EVERY_S, not per request."""
    now = time.monotonic()
    if now - _pool_recorded[0] < POOL_EVERY_S and not force:
        return
    _pool_recorded[0] = now
    engines = {"primary": rt.db.engine}
    if rt.db.replica_engine is not rt.db.engine:
        engines["replica"] = rt.db.replica_engine
    for name, engine in engines.items():
        pool: Any = engine.pool
        if hasattr(pool, "checkedout"):
            DB_POOL_CHECKED_OUT.labels(name).set(pool.checkedout())
            DB_POOL_SIZE.labels(name).set(pool.size())
            DB_POOL_OVERFLOW.labels(name).set(max(0, pool.overflow()))


def check_metrics_token(expected: str | None) -> None:
    """With LIVECODE_METRICS_TOKEN set, a scrape must send `Authorization: Bearer <token>`: 401
    without credentials, 403 with the wrong ones."""
    if not expected:
        return
    scheme, _, sent = (request.headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not sent.strip():
        raise ApiError("/metrics needs 'Authorization: Bearer <LIVECODE_METRICS_TOKEN>'", code="UNAUTHORIZED",
                       status=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    if not hmac.compare_digest(sent.strip().encode("utf-8", "replace"), expected.encode("utf-8")):
        raise ApiError("the metrics token is not valid", code="FORBIDDEN", status=403)


_latency_children: dict[tuple[str, str, int], Any] = {}


def _latency(rule: str, method: str, status: int) -> Any:
    """The latency histogram's series for these labels. `labels()` takes the metric's lock and
    checks and converts its values at every call; the series of a process are few (routes x
    methods x statuses), so each is looked up once."""
    key = (rule, method, status)
    child = _latency_children.get(key)
    if child is None:
        child = _latency_children[key] = HTTP_LATENCY.labels(rule, method, str(status))
    return child


def init_metrics(app: Flask, rt: Runtime) -> None:
    """Time every request, log it as one JSON line, and serve GET /metrics."""
    access_log = logging.getLogger("livecode.access")
    access_name = access_log.name

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(resp: Response) -> Response:
        started = g.pop("metrics_started", None)
        if started is None:
            return resp
        elapsed = time.perf_counter() - started
        rule = request.url_rule.rule if request.url_rule is not None else UNMATCHED
        method = request.method if request.method in HTTP_METHODS else "other"
        status, user_id, request_id = resp.status_code, g.get("user_id"), g.get("request_id")

        environ = request.environ

        def record() -> None:
            # After the answer has been sent (web/after_response.py): the client does not wait
            # for the histogram's file write or the log line's JSON. The figures are the same.
            nonlocal status, elapsed
            answer = parking.answered(environ)
            if answer is not None:  # a parked wait's (web/parking.py): its final status and time
                status, elapsed = answer[0], answer[1] - started
            _latency(rule, method, status).observe(elapsed)
            _record_pool(rt)
            if rule != "/metrics" and access_log.isEnabledFor(logging.INFO):
                # The path and query are left out on purpose: a stream URL may carry an access token.
                # The record is made here and handed to the logger as Logger.info would, less its
                # walk up the stack for the caller's file and line (no access line shows them).
                access_log.handle(access_log.makeRecord(access_name, logging.INFO, __file__, 0, "request", (), None,
                                                        "record", {
                    "method": method, "endpoint": rule, "status": status, "duration_ms": round(elapsed * 1000, 2),
                    "user_id": str(user_id or "") or None, "request_id": request_id,
                }))

        after_response.defer(request.environ, record)
        return resp

    def metrics_view() -> Response:
        check_metrics_token(rt.settings.metrics_token)
        _record_pool(rt, force=True)  # this process's gauges current at its own scrape
        return Response(render(rt), mimetype=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])

