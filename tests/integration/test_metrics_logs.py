"""Monitoring: /metrics reports the design's figures after real traffic; JSON logs carry the request
id from the API call to the worker's log line; secrets and source code are never logged."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.accounts import register
from tests.support.procs import wait_for

pytestmark = pytest.mark.integration

EXECUTE_RULE = "/api/v1/executions/session/<string:session_id>/execute"


def scrape(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = requests.get(base + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    return {name for name, _ in samples}


def test_metrics_report_real_traffic(cluster: Any) -> None:
    api = cluster.client()
    before = scrape(cluster.base)
    ok = api.run("print('metrics ok')")
    failed = api.run("raise SystemExit(3)")
    assert ok["status"] == "COMPLETED" and failed["status"] == "FAILED"

    def recorded() -> Any:
        now = scrape(cluster.base)
        done = (value(now, "livecode_executions_total", status="COMPLETED", language="python")
                >= value(before, "livecode_executions_total", status="COMPLETED", language="python") + 1
                and value(now, "livecode_executions_total", status="FAILED", language="python")
                >= value(before, "livecode_executions_total", status="FAILED", language="python") + 1)
        return now if done else None

    after = wait_for(recorded, 20, 0.2, what="the worker's figures in /metrics")
    assert value(after, "livecode_tasks_processed_total", outcome="COMPLETED") >= 1
    assert value(after, "livecode_queue_wait_seconds_count", queue="high_priority") >= 2
    assert value(after, "livecode_queue_wait_seconds_bucket", queue="high_priority", le="+Inf") >= 2
    assert value(after, "livecode_execution_duration_seconds_count", language="python") >= 2
    assert value(after, "livecode_http_request_duration_seconds_count",
                 endpoint=EXECUTE_RULE, method="POST", status="202") >= 2
    assert ("livecode_queue_length", frozenset({("queue", "high_priority")})) in after
    assert ("livecode_queue_length", frozenset({("queue", "low_priority")})) in after
    assert value(after, "livecode_db_pool_size", engine="primary") >= 1
    assert value(after, "livecode_workers_alive") >= 1
    worker_rss = [v for (n, _), v in after.items() if n == "livecode_worker_memory_rss_bytes"]
    worker_cpu = [v for (n, _), v in after.items() if n == "livecode_worker_cpu_seconds_total"]
    assert worker_rss and min(worker_rss) > 1_000_000
    assert worker_cpu and max(worker_cpu) > 0
    # The compile cache's figures come with each worker's heartbeat (its whole cache directory).
    cache_bound = [v for (n, _), v in after.items() if n == "livecode_compile_cache_max_bytes"]
    assert cache_bound and min(cache_bound) > 0
    assert {"livecode_compile_cache_bytes", "livecode_compile_cache_entries",
            "livecode_compile_cache_evictions_total"} <= names(after)


def test_metrics_add_up_every_api_process(auth_apis: Any) -> None:
    """auth_apis.base runs two gunicorn processes; each request lands on either, and every
    scrape must still count all of them."""
    base = auth_apis.base
    labels = {"endpoint": "/api/v1/auth/me", "method": "GET", "status": "401"}
    start = value(scrape(base), "livecode_http_request_duration_seconds_count", **labels)
    for _ in range(20):
        # A new connection each time, so gunicorn hands requests to both processes.
        assert requests.get(base + "/api/v1/auth/me", headers={"Connection": "close"}, timeout=10).status_code == 401
    for _ in range(3):
        assert value(scrape(base), "livecode_http_request_duration_seconds_count", **labels) == start + 20


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def test_request_id_follows_an_execution_to_the_worker(cluster: Any) -> None:
    api = cluster.client()
    rid = f"trace-{uuid.uuid4().hex[:16]}"
    session = api.create_session("print('traced')")
    r = api.request("POST", f"/api/v1/executions/session/{session['session_id']}/execute", json={},
                    headers={"X-Request-ID": rid})
    assert r.status_code == 202 and r.headers["X-Request-ID"] == rid
    eid = r.json()["execution_id"]
    assert api.wait_execution(eid)["status"] == "COMPLETED"

    def worker_lines() -> list[dict[str, Any]]:
        lines = [rec for w in cluster.workers for rec in json_lines(w.output())
                 if rec.get("request_id") == rid and rec.get("execution_id") == eid]
        messages = {rec.get("message") for rec in lines}
        return lines if {"execution started", "execution finished"} <= messages else []

    lines = wait_for(worker_lines, 15, 0.2, what="the worker's log lines with the request id")
    assert all(rec["level"] in {"INFO", "WARNING"} and "ts" in rec for rec in lines)
    api_lines = [rec for rec in json_lines(cluster.api.output()) if rec.get("request_id") == rid]
    assert any(rec.get("message") == "request" and rec.get("endpoint") == EXECUTE_RULE and rec.get("status") == 202
               for rec in api_lines), api_lines


def test_secrets_and_source_code_are_never_logged(cluster: Any, auth_apis: Any) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    api = cluster.client()
    run = api.run(f"# {canary}-source\nimport sys\nprint(sys.stdin.read() + '-out')", stdin=f"{canary}-stdin")
    assert run["stdout"] == f"{canary}-stdin-out\n"
    failing = api.run(f"raise RuntimeError('{canary}-error')")
    assert f"{canary}-error" in failing["stderr"]
    password = f"{canary}-password"
    username, _ = register(auth_apis.base, password=password)
    requests.post(auth_apis.base + "/api/v1/auth/login", json={"username": username, "password": password + "x"},
                  timeout=30)
    tokens = requests.post(auth_apis.base + "/api/v1/auth/login",
                           json={"username": username, "password": password}, timeout=30).json()
    requests.get(auth_apis.base + f"/api/v1/executions/{uuid.uuid4()}/events",
                 params={"access_token": tokens["access_token"]}, timeout=10)

    def worker_logged_run() -> bool:
        return any(rec.get("execution_id") == failing["execution_id"] and rec.get("message") == "execution finished"
                   for w in cluster.workers for rec in json_lines(w.output()))

    wait_for(worker_logged_run, 15, 0.2, what="the worker's log of the run")
    secret = cluster.env["SECRET_KEY"]
    for proc in [cluster.api, *cluster.workers, *auth_apis.procs]:
        text = proc.output()
        assert canary not in text, f"{proc.name} logged user data"
        assert secret not in text, f"{proc.name} logged SECRET_KEY"
        assert tokens["access_token"] not in text and tokens["refresh_token"] not in text


def test_embedded_metrics(embedded: Any) -> None:
    """`livecode serve` runs its worker in-process: the same figures, without Redis."""
    api = embedded.client()
    before = scrape(embedded.base)
    assert api.run("print('embedded metrics')")["status"] == "COMPLETED"

    def recorded() -> Any:
        now = scrape(embedded.base)
        key = ("livecode_executions_total", frozenset({("status", "COMPLETED"), ("language", "python")}))
        return now if now.get(key, 0) >= before.get(key, 0) + 1 else None

    after = wait_for(recorded, 20, 0.2, what="the in-process worker's figures")
    assert value(after, "livecode_queue_wait_seconds_count", queue="high_priority") >= 1
    assert value(after, "livecode_workers_alive") == 1
    assert ("livecode_queue_length", frozenset({("queue", "low_priority")})) in after
    assert value(after, "livecode_http_request_duration_seconds_count",
                 endpoint=EXECUTE_RULE, method="POST", status="202") >= 1
