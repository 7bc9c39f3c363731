"""Helpers for tests with accounts: register a user and get a client that signs its requests."""

from __future__ import annotations

import uuid
from typing import Any

import requests

from tests.support.client import ApiClient


def register(base: str, username: str | None = None, password: str = "correct-horse-42",
             http: Any = requests) -> tuple[str, str]:
    """A new account (`http`: a requests.Session bound to another source address, say)."""
    username = username or f"u{uuid.uuid4().hex[:12]}"
    r = http.post(base + "/api/v1/auth/register", json={"username": username, "password": password}, timeout=30)
    assert r.status_code == 201, r.text
    return username, password


def login(base: str, username: str, password: str, http: Any = requests) -> dict[str, str]:
    r = http.post(base + "/api/v1/auth/login", json={"username": username, "password": password}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def user_client(base: str, username: str | None = None) -> ApiClient:
    """A new user, signed in with a bearer token."""
    name, password = register(base, username)
    tokens = login(base, name, password)
    client = ApiClient(base, headers={"Authorization": f"Bearer {tokens['access_token']}"})
    client.username = name  # type: ignore[attr-defined]
    return client
