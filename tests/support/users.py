"""Accounts for the in-process floor: register and sign in through the API, as a client does."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from livecode.services import accounts
from tests.support.inprocess import LiveApp

PASSWORD = "correct horse battery staple"


@dataclass
class User:
    username: str
    password: str
    user_id: str
    access: str
    refresh: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}


def sign_up(live: LiveApp, username: str | None = None, *, role: str = "user") -> User:
    username = username or f"user_{secrets.token_hex(4)}"
    r = live.client.post("/api/v1/auth/register", json={"username": username, "password": PASSWORD})
    assert r.status_code == 201, r.get_json()
    if role != "user":
        assert accounts.set_role(live.db, username, role)
    return sign_in(live, username, r.get_json()["user_id"])


def sign_in(live: LiveApp, username: str, user_id: str = "", password: str = PASSWORD) -> User:
    r = live.client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.get_json()
    tokens: dict[str, Any] = r.get_json()
    return User(username, password, user_id, tokens["access_token"], tokens["refresh_token"])
