"""The ways to start LiveCode: the embedded server survives a restart without losing queued
executions, and the design's own commands (`python main.py`, `celery -A celery_worker.celery
worker`) run the distributed system."""

from __future__ import annotations

import signal
import sys
import tempfile

import pytest

from tests.conftest import base_env
from tests.support.client import ApiClient
from tests.support.procs import (
    Process,
    create_database,
    free_port,
    run_livecode,
    start_embedded,
    wait_api,
    wait_for,
    wait_workers,
)

pytestmark = pytest.mark.integration


def test_embedded_executions_queued_before_a_restart_complete_after_it() -> None:
    env = base_env(LIVECODE_DATA_DIR=tempfile.mkdtemp(prefix="lc-restart-"), LIVECODE_WORKER_CONCURRENCY="1")
    env.pop("SECRET_KEY")
    port = free_port()
    proc, base = start_embedded(env, port)
    try:
        api = ApiClient(base)
        wait_workers(base, 1)
        # One slow run occupies the only worker slot; three more wait behind it.
        slow = api.create_session("import time\ntime.sleep(20)\nprint('slow done')")
        running = api.execute(slow["session_id"]).json()["execution_id"]
        queued = []
        for i in range(3):
            sid = api.create_session(f"print('queued {i}')")["session_id"]
            queued.append(api.execute(sid).json()["execution_id"])
        wait_for(lambda: api.get_execution(running)["status"] == "RUNNING", 30, what="slow run started")
        assert all(api.get_execution(e)["status"] == "QUEUED" for e in queued)
        proc.signal(signal.SIGKILL)  # no clean shutdown: the process is simply gone
        proc.proc.wait(10)
    finally:
        proc.stop()

    proc2, base2 = start_embedded(env, port)
    try:
        api2 = ApiClient(base2)
        for i, eid in enumerate(queued):
            result = api2.wait_execution(eid, timeout=60)
            assert result["status"] == "COMPLETED", result
            assert result["stdout"] == f"queued {i}\n"
        interrupted = api2.wait_execution(running, timeout=90)
        assert interrupted["status"] == "COMPLETED" and interrupted["stdout"] == "slow done\n"
        assert interrupted["attempts"] == 2  # run again after the restart, recorded once
    finally:
        proc2.stop()


def test_design_commands_main_py_and_celery_worker(pg_admin_url: str, redis_base_url: str) -> None:
    redis_url = redis_base_url.rsplit("/", 1)[0] + "/14"
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    env = base_env(DATABASE_URL=create_database(pg_admin_url), REDIS_URL=redis_url)
    run_livecode("db", "upgrade", env=env, check=True)
    port = free_port()
    api_proc = Process([sys.executable, "main.py", "--port", str(port), "--workers", "1"], env, "main-py")
    worker = Process([sys.executable, "-m", "celery", "-A", "celery_worker.celery", "worker", "--loglevel=info",
                      "-n", "design@test"], env, "celery-worker")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_api(api_proc, base)
        wait_workers(base, 1)
        result = ApiClient(base).run("print('Hello World!')")
        assert result["status"] == "COMPLETED" and result["stdout"] == "Hello World!\n"
        assert "design@test" in worker.output()
    finally:
        worker.stop()
        api_proc.stop()
