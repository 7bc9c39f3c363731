"""A small HTTP client for the API, used by the integration tests and the benchmarks."""

from __future__ import annotations

import time
from typing import Any

import requests

TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"}


class ApiClient:
    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base.rstrip("/")
        self.http = requests.Session()
        if headers:
            self.http.headers.update(headers)

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        return self.http.request(method, self.base + path, **kw)

    def create_session(
        self, source: str = "print('Hello World!')", language: str = "python", **kw: Any
    ) -> dict[str, Any]:
        r = self.request("POST", "/api/v1/code-sessions", json={"language": language, "source_code": source}, **kw)
        assert r.status_code == 201, r.text
        return r.json()

    def execute(self, session_id: str, **body: Any) -> requests.Response:
        return self.request("POST", f"/api/v1/executions/session/{session_id}/execute", json=body)

    def get_execution(self, execution_id: str) -> dict[str, Any]:
        r = self.request("GET", f"/api/v1/executions/{execution_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_execution(self, execution_id: str, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            data = self.get_execution(execution_id)
            if data["status"] in TERMINAL:
                return data
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_id} still {data['status']} after {timeout}s")
            time.sleep(0.05)

    def run(self, source: str, language: str = "python", timeout: float = 90.0, **body: Any) -> dict[str, Any]:
        session = self.create_session(source, language)
        r = self.execute(session["session_id"], **body)
        assert r.status_code == 202, r.text
        return self.wait_execution(r.json()["execution_id"], timeout)
