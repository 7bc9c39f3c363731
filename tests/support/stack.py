"""A throwaway distributed LiveCode for fault tests: its own PostgreSQL and Redis servers (so
stopping them harms nothing else), one API process and any number of worker processes."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis
import requests

from tests.conftest import base_env
from tests.support.client import TERMINAL, ApiClient
from tests.support.procs import (
    PostgresServer,
    Process,
    RedisServer,
    create_database,
    free_port,
    run_livecode,
    start_api,
    start_worker,
    stop_all,
    wait_for,
)


class Stack:
    """PostgreSQL + Redis + `livecode api` (+ workers started on demand)."""

    def __init__(self, api_workers: int = 1, **env_extra: str) -> None:
        self.pg = PostgresServer().start()
        self.redis_server = RedisServer().start()
        try:
            self.db_url = create_database(self.pg.url)
            self.env = base_env(DATABASE_URL=self.db_url, REDIS_URL=self.redis_server.url, **env_extra)
            run_livecode("db", "upgrade", env=self.env, check=True)
            self.api_port = free_port()
            self.api_workers = api_workers
            self.api, self.base = start_api(self.env, self.api_port, workers=api_workers)
        except Exception:
            self.destroy()
            raise
        self.workers: dict[str, Process] = {}
        self.old_logs: list[str] = []

    # ---- processes ---------------------------------------------------------------------------

    def start_worker(self, name: str, concurrency: int = 1, wait: bool = True, **env: str) -> Process:
        """Start `livecode worker -n <name>@fault`; wait until its heartbeat is seen."""
        node = f"{name}@fault"
        proc = start_worker({**self.env, **env}, node, concurrency=concurrency)
        if node in self.workers:  # a restart under the same name: keep the old log around
            self.old_logs.append(f"--- {node} (before)\n{_tail(self.workers[node])}")
        self.workers[node] = proc
        if wait:
            self.wait_worker(node, proc)
        return proc

    def wait_worker(self, node: str, proc: Process, timeout: float = 90) -> None:
        def ready() -> bool:
            if not proc.alive():
                raise AssertionError(f"worker {node} exited:\n{proc.output()[-3000:]}")
            return self.redis().exists(f"livecode:worker:{node}") == 1

        wait_for(ready, timeout, 0.1, what=f"worker {node} heartbeat")

    def stop_workers(self) -> None:
        for node, proc in list(self.workers.items()):
            proc.stop(60)
            self.old_logs.append(f"--- {node}\n{_tail(proc)}")
            del self.workers[node]

    def restart_api(self) -> None:
        if self.api.alive():
            self.api.stop()
        self.old_logs.append(f"--- api\n{_tail(self.api)}")
        self.api, self.base = start_api(self.env, self.api_port, workers=self.api_workers)

    def pg_up(self) -> bool:
        try:
            self.sql("SELECT 1")
            return True
        except Exception:  # noqa: BLE001
            return False

    def restore(self) -> None:
        """After a fault test: every server back up, no workers left, so the next test starts
        from a known state on the same throwaway stack."""
        self.stop_workers()
        if not self.pg_up():
            self.pg.resume()
        if self.redis_server.proc is None:
            self.redis_server.start()
        if not self.api.alive():
            self.restart_api()

    def logs(self) -> str:
        parts = [*self.old_logs[-6:], f"--- api\n{_tail(self.api)}"]
        parts += [f"--- {n}\n{_tail(p)}" for n, p in self.workers.items()]
        return "\n".join(parts)

    def destroy(self) -> None:
        api = getattr(self, "api", None)
        stop_all([*getattr(self, "workers", {}).values(), *([api] if api is not None else [])], 20)
        self.redis_server.destroy()
        self.pg.destroy()

    # ---- direct access to the stores ---------------------------------------------------------

    def client(self) -> ApiClient:
        return ApiClient(self.base)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_server.url, socket_connect_timeout=2, socket_timeout=5)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run a query straight against PostgreSQL (not through the API)."""
        with psycopg.connect(self.db_url, connect_timeout=3, autocommit=True) as conn:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def execution_row(self, execution_id: str) -> dict[str, Any]:
        rows = self.sql(
            # stdout is bytes (bytea); these tests' programs write UTF-8.
            "SELECT status, reason, attempts, worker, convert_from(stdout, 'UTF8') FROM executions WHERE id = %s",
            execution_id,
        )
        assert rows, f"execution {execution_id} is not in the database"
        status, reason, attempts, worker, stdout = rows[0]
        return {"status": status, "reason": reason, "attempts": attempts, "worker": worker, "stdout": stdout}

    def wait_status(self, execution_id: str, statuses: set[str], timeout: float = 90) -> dict[str, Any]:
        return wait_for(  # type: ignore[no-any-return]
            lambda: (row := self.execution_row(execution_id))["status"] in statuses and row,
            timeout, 0.1, what=f"execution {execution_id} in {statuses}",
        )

    def wait_terminal(self, execution_id: str, timeout: float = 120) -> dict[str, Any]:
        return self.wait_status(execution_id, set(TERMINAL), timeout)

    def wait_all_terminal(self, timeout: float = 120) -> None:
        """No execution stays QUEUED or RUNNING."""
        wait_for(lambda: not self.sql("SELECT id FROM executions WHERE status IN ('QUEUED', 'RUNNING')"),
                 timeout, 0.2, what="every execution to finish")


def _tail(proc: Process, chars: int = 3000) -> str:
    return proc.log_path.read_text(errors="replace")[-chars:]


# ---- a ledger of what the API acknowledged ----------------------------------------------------


@dataclass
class Ledger:
    """Every 2xx the API gave: sessions, autosaves (with the source saved) and executions."""

    sessions: dict[str, tuple[int, str]] = field(default_factory=dict)  # id -> (version, source)
    executions: dict[str, str] = field(default_factory=dict)  # execution id -> session id
    statuses: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, status: int) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def verify(self, stack: Stack) -> None:
        """Everything acknowledged is in PostgreSQL, in a terminal state, exactly once."""
        stored = dict(stack.sql("SELECT id::text, version FROM code_sessions"))
        sources = dict(stack.sql("SELECT id::text, source_code FROM code_sessions"))
        for sid, (version, source) in self.sessions.items():
            assert sid in stored, f"acknowledged session {sid} is missing"
            # Each editor only saves on top of its own last acknowledged version, so the stored
            # version is exactly the last acknowledged one (or one more if a save whose answer
            # was lost went through; it then carries a later source of this same editor).
            assert stored[sid] >= version, (sid, stored[sid], version)
            if stored[sid] == version:
                assert sources[sid] == source, (sid, sources[sid], source)
        rows = stack.sql("SELECT id::text, session_id::text, status, attempts FROM executions")
        by_id = {r[0]: r for r in rows}
        assert len(by_id) == len(rows)
        for eid, sid in self.executions.items():
            assert eid in by_id, f"acknowledged execution {eid} is missing"
            _, row_sid, status, attempts = by_id[eid]
            assert row_sid == sid
            assert status in TERMINAL, (eid, status)
            assert attempts >= 1, (eid, attempts)
        for eid, _sid, status, _attempts in rows:
            assert status in TERMINAL, f"execution {eid} stays {status}"


class Editors:
    """Simulated editors that autosave and execute in the background while a fault happens.
    Only 2xx answers go into the ledger; a 503 (or a refused connection while the API restarts)
    is allowed, any other 5xx is recorded as a bug."""

    def __init__(self, stack: Stack, count: int = 4, program: str = "print('ok')") -> None:
        self.stack, self.count, self.program = stack, count, program
        self.ledger = Ledger()
        self.errors: list[str] = []
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]

    def __enter__(self) -> Editors:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(60)

    def _request(self, method: str, path: str, **kw: Any) -> requests.Response | None:
        try:
            r = requests.request(method, self.stack.base + path, timeout=30, **kw)
        except requests.RequestException:
            self.ledger.count(0)
            return None
        self.ledger.count(r.status_code)
        if r.status_code >= 500 and r.status_code != 503:
            self.errors.append(f"{method} {path} -> {r.status_code} {r.text[:300]}")
        return r

    def _run(self, index: int) -> None:
        sid: str | None = None
        version = 0
        active: str | None = None
        n = 0
        while not self.stopped.is_set():
            n += 1
            if sid is None:
                r = self._request("POST", "/api/v1/code-sessions",
                                  json={"language": "python", "source_code": self.program})
                if r is not None and r.status_code == 201:
                    sid, version = r.json()["session_id"], 1
                    with self.ledger.lock:
                        self.ledger.sessions[sid] = (1, self.program)
                time.sleep(0.05)
                continue
            source = f"{self.program}\n# editor {index} edit {n} {uuid.uuid4().hex[:6]}"
            r = self._request("PATCH", f"/api/v1/code-sessions/{sid}",
                              json={"source_code": source, "version": version})
            if r is not None and r.status_code == 200:
                version = r.json()["version"]
                with self.ledger.lock:
                    self.ledger.sessions[sid] = (version, source)
            elif r is not None and r.status_code == 409:
                # A save whose answer was lost went through: catch up with the stored version.
                got = self._request("GET", f"/api/v1/code-sessions/{sid}")
                if got is not None and got.status_code == 200:
                    version = got.json()["version"]
                    with self.ledger.lock:
                        self.ledger.sessions[sid] = (version, got.json()["source_code"])
            if n % 3 == 0 and active is None:
                r = self._request("POST", f"/api/v1/executions/session/{sid}/execute", json={})
                if r is not None and r.status_code == 202:
                    active = r.json()["execution_id"]
                    with self.ledger.lock:
                        self.ledger.executions[active] = sid
            elif active is not None:
                r = self._request("GET", f"/api/v1/executions/{active}")
                if r is not None and r.status_code == 200 and r.json()["status"] in TERMINAL:
                    active = None
            time.sleep(0.2)


@contextmanager
def timed() -> Iterator[list[float]]:
    """`with timed() as t: ...` then t[0] is the elapsed seconds."""
    out: list[float] = []
    start = time.monotonic()
    try:
        yield out
    finally:
        out.append(time.monotonic() - start)
