"""In-process checks (create_app + test_client, embedded SQLite) for the API hardening of issue 10:
bounded metrics labels and the metrics token, security headers on /docs and everywhere, no-store
on answers that carry tokens."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from livecode.api.metrics import HTTP_METHODS
from livecode.app import create_app
from livecode.config import load_settings
from livecode.runtime import reset_runtime
from tests.support.embedded import copy_migrated_sqlite
from tests.support.inprocess import clean_env

LATENCY = "livecode_http_request_duration_seconds"


@pytest.fixture
def make_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Flask]]:
    clean_env(monkeypatch, tmp_path)  # nothing from the machine, nothing runs, a cheap password hash
    for name in ("LIVECODE_METRICS_TOKEN", "LIVECODE_TRUSTED_PROXY_HOPS"):
        monkeypatch.delenv(name, raising=False)

    def make(**overrides: Any) -> Flask:
        copy_migrated_sqlite(tmp_path)
        settings = load_settings("embedded", **overrides)
        return create_app(settings, enqueue=lambda *a, **k: None, run_migrations=False)

    yield make
    reset_runtime()


def latency_series(text: str) -> set[frozenset[tuple[str, str]]]:
    out = set()
    for family in text_string_to_metric_families(text):
        if family.name == LATENCY:
            out |= {frozenset(s.labels.items()) for s in family.samples}
    return out


def test_made_up_methods_and_paths_add_no_metric_series(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    # One of each kind first, so the bounded series exist.
    for method, path in [("FOO", "/api/v1/languages"), ("GET", "/nope"), ("FOO", "/nope")]:
        client.open(path, method=method)
    client.get("/metrics")  # a scrape is itself counted, from the second scrape on
    before = client.get("/metrics")
    assert before.status_code == 200
    series_before = latency_series(before.get_data(as_text=True))
    for _ in range(200):
        method = "X" + secrets.token_hex(6).upper()
        path = secrets.choice(["/api/v1/languages", "/health", f"/made-up/{uuid.uuid4()}", "/docs"])
        assert client.open(path, method=method).status_code in (404, 405)
    after = client.get("/metrics").get_data(as_text=True)
    series_after = latency_series(after)
    assert series_after == series_before, sorted(map(sorted, series_after - series_before))[:5]
    methods = {dict(labels).get("method") for labels in series_after}
    assert methods <= HTTP_METHODS | {"other"}, methods
    endpoints = {dict(labels).get("endpoint") for labels in series_after}
    assert not any(e and e.startswith("/made-up/") for e in endpoints)
    assert len(after) < 2 * len(before.get_data(as_text=True)) + 20_000  # did not grow with the attack


def test_metrics_open_by_default(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    r = client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"


def test_metrics_token_restricts_metrics(make_app: Callable[..., Flask]) -> None:
    token = secrets.token_urlsafe(24)
    client = make_app(metrics_token=token).test_client()
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing.json["error"]["code"] == "UNAUTHORIZED" and missing.json["error"]["message"]  # type: ignore[index]
    assert LATENCY not in missing.get_data(as_text=True)
    for wrong in ("Bearer " + token + "x", "Bearer " + token.upper(), "Basic " + token, "Bearer \u00e9"):
        r = client.get("/metrics", headers={"Authorization": wrong.encode().decode("latin-1")})
        assert r.status_code in (401, 403), (wrong, r.status_code)
        assert r.json["error"]["code"] in ("UNAUTHORIZED", "FORBIDDEN")  # type: ignore[index]
        assert LATENCY not in r.get_data(as_text=True)
    ok = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and LATENCY in ok.get_data(as_text=True)


def test_docs_have_a_csp_that_allows_only_their_own_scripts(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    r = client.get("/docs")
    assert r.status_code == 200 and r.mimetype == "text/html"
    csp = r.headers["Content-Security-Policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["default-src"] == ["'none'"]
    assert "'unsafe-inline'" not in directives["script-src"] and "'unsafe-eval'" not in directives["script-src"]
    page = r.get_data(as_text=True)
    # Every external script is on this origin, and every inline script is allowed by its hash.
    for src in re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", page):
        assert src.startswith("/"), src
    inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", page, re.DOTALL)
    assert inline
    for body in inline:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in directives["script-src"]
    assert r.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("path", ["/health", "/api/v1/languages", "/swagger.json", "/metrics", "/nope"])
def test_no_answer_can_be_framed(make_app: Callable[..., Flask], path: str) -> None:
    r = make_app().test_client().get(path)
    assert r.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


def test_answers_with_tokens_or_keys_are_not_stored(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    creds = {"username": "u" + secrets.token_hex(4), "password": secrets.token_urlsafe(16)}
    assert client.post("/api/v1/auth/register", json=creds).status_code == 201
    login = client.post("/api/v1/auth/login", json=creds)
    assert login.status_code == 200
    tokens: Any = login.json
    refresh = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 200
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    key = client.post("/api/v1/api-keys", json={"name": "ci"}, headers=auth)
    assert key.status_code == 201
    keys = client.get("/api/v1/api-keys", headers=auth)
    failed = client.post("/api/v1/auth/login", json={**creds, "password": "wrong-password"})
    for r in (login, refresh, key, keys, failed):
        assert r.headers["Cache-Control"] == "no-store", r.request.path
    # Ordinary answers keep their own caching.
    assert client.get("/api/v1/languages").headers.get("Cache-Control") != "no-store"
