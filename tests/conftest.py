"""Shared fixtures. Integration fixtures use real PostgreSQL, Redis and livecode processes:
the servers on 127.0.0.1:5432 and :6379 when they answer, otherwise throwaway ones started from
the installed binaries."""

from __future__ import annotations

import gc
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.apps import release_apps
from tests.support.client import ApiClient
from tests.support.procs import (
    SERVICE_ENV_PREFIXES,
    PostgresServer,
    Process,
    RedisServer,
    create_migrated_database,
    port_open,
    start_api,
    start_embedded,
    start_worker,
    stop_all,
    wait_workers,
)
from tests.support.routes_cache import cache_rule_compilation

# ---- parallel runs (pytest-xdist, `-n N`) ---------------------------------------------------
# Each xdist worker is a pytest process of its own (PYTEST_XDIST_WORKER=gw0, gw1, ...). What two
# of them must not share: the sandbox uids (locked host-wide, so a shared range would only make
# them wait on each other), and Redis (fixtures flush their database): each worker gets a uid
# range of its own here, and a throwaway Redis server of its own (redis_base_url below).
# PostgreSQL is shared: every fixture creates a database with a unique name.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
WORKER_INDEX = int(XDIST_WORKER[2:]) if XDIST_WORKER[2:].isdigit() else 0
UID_STRIDE = 100  # a worker's 64 slots, and test_host_slots's 4 at +300, fit in it
if WORKER_INDEX:
    for _name, _default in (("LIVECODE_TEST_UID_BASE", 62000), ("LIVECODE_TEST_WORKER_UID_BASE", 61000)):
        os.environ[_name] = str(int(os.environ.get(_name) or _default) + UID_STRIDE * WORKER_INDEX)

SANDBOX = os.environ.get("LIVECODE_TEST_SANDBOX", "bwrap")
# A strong key, new for each test run (a placeholder or short key is refused at start-up).
TEST_SECRET_KEY = secrets.token_urlsafe(48)


# ---- the end of the session -------------------------------------------------------------------
# The session's stacks (cluster, embedded, auth_apis) and servers are stopped together at the end:
# each fixture's teardown only sends SIGTERM and leaves its processes here, and the last teardown
# waits for all of them at once, then destroys the servers they used. One after the other, a
# worker's teardowns took up to three grace periods at the very end of the run.
_session_end: list[Process] = []
_session_end_after: list[Any] = []


@pytest.fixture(scope="session", autouse=True)
def _session_stops_together() -> Iterator[None]:
    yield
    try:
        stop_all(_session_end, SESSION_END_GRACE_S)
    finally:
        for destroy in reversed(_session_end_after):
            destroy()


def stop_at_session_end(procs: list[Process]) -> None:
    for proc in procs:
        proc.terminate()
    _session_end.extend(procs)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    if os.environ.get("LIVECODE_TEST_PG_URL"):
        yield os.environ["LIVECODE_TEST_PG_URL"]
    elif port_open(5432):
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
    else:
        server = PostgresServer().start()
        yield server.url
        _session_end_after.append(server.destroy)


@pytest.fixture(scope="session")
def redis_base_url() -> Iterator[str]:
    if XDIST_WORKER or not (os.environ.get("LIVECODE_TEST_REDIS_URL") or port_open(6379)):
        server = RedisServer().start()
        yield server.url
        _session_end_after.append(server.destroy)
    elif os.environ.get("LIVECODE_TEST_REDIS_URL"):
        yield os.environ["LIVECODE_TEST_REDIS_URL"]
    else:
        yield "redis://127.0.0.1:6379/11"


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_ENV_PREFIXES)}
    env.update(
        LIVECODE_SANDBOX=SANDBOX,
        LIVECODE_LOG_JSON="true",
        SECRET_KEY=TEST_SECRET_KEY,
        PYTHONUNBUFFERED="1",
        LIVECODE_RECONCILE_INTERVAL_S="1",
        LIVECODE_REQUEUE_GRACE_S="2",
        LIVECODE_HEARTBEAT_TTL_S="4",
        LIVECODE_AUTH_REQUIRED="false",
        # The shared fixtures run many executions from one address; the rate-limit tests start
        # their own API processes with the real limits.
        LIVECODE_EXECUTION_RATE_LIMIT="100000/minute",
        LIVECODE_EXECUTION_RATE_LIMIT_PER_ADDRESS="100000/minute",
        LIVECODE_LOGIN_RATE_LIMIT="100000/minute",
        # Every anonymous request is one owner: the shared fixtures would reach the storage caps;
        # the storage tests start their own API processes with small caps.
        LIVECODE_MAX_STORED_EXECUTIONS="0",
        LIVECODE_MAX_SESSIONS="0",
        # The storage job runs often, so that its test need not wait minutes (it only deletes
        # executions past the 30-day retention, and sources unused for an hour).
        LIVECODE_STORAGE_CLEANUP_INTERVAL_S="1",
        # Argon2 at its production cost is ~0.2 s of CPU per sign-in on 2 cores, tens of seconds
        # over the suite; the tests check who may do what, not the hash's cost.
        LIVECODE_PASSWORD_HASH_MEMORY_KIB="1024",
        LIVECODE_PASSWORD_HASH_TIME_COST="1",
    )
    if os.environ.get("LIVECODE_TEST_WORKER_UID_BASE"):  # parallel test runs on one host
        env["LIVECODE_SANDBOX_UID_BASE"] = os.environ["LIVECODE_TEST_WORKER_UID_BASE"]
    env.update(extra)
    return env


@dataclass
class Cluster:
    base: str
    env: dict[str, str]
    api: Process
    workers: list[Process] = field(default_factory=list)

    def client(self, **kw: Any) -> ApiClient:
        return ApiClient(self.base, **kw)

    def logs(self) -> str:
        return "\n".join(p.output()[-4000:] for p in [self.api, *self.workers])

    def stop(self, timeout: float = 30) -> None:
        stop_all([*self.workers, self.api], timeout)


# A shared stack at the end of the session: what it still holds (a follower's open stream, a run
# a test left behind) is not waited for as a graceful shutdown would (gunicorn's and the worker's
# 30 s): these teardowns were up to a minute of the last test's on the slowest xdist worker.
SESSION_END_GRACE_S = 5


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def start_cluster(
    pg_admin_url: str, redis_url: str, workers: int = 1, api_workers: int = 1, **env_extra: str
) -> Cluster:
    flush_redis(redis_url)
    env = base_env(REDIS_URL=redis_url, **env_extra)
    env["DATABASE_URL"] = create_migrated_database(pg_admin_url, env)
    api, base = start_api(env, workers=api_workers)
    procs = [start_worker(env, f"w{i}@test") for i in range(workers)]
    cluster = Cluster(base, env, api, procs)
    try:
        wait_workers(base, workers)
    except Exception:
        print(cluster.logs())
        cluster.stop()
        raise
    return cluster


# The shared stacks live through the whole session on every xdist worker: their reconciler and
# storage job poll at production-like intervals (an idle worker polling every second cost ~0.75 s
# of CPU a minute, and PostgreSQL's for the queries). The fault stacks (tests/support/stack.py) and
# any test that waits for the reconciler or the storage job start processes with base_env's 1 s.
SHARED_STACK_ENV = {"LIVECODE_RECONCILE_INTERVAL_S": "10", "LIVECODE_STORAGE_CLEANUP_INTERVAL_S": "3600"}


@pytest.fixture(scope="session")
def cluster(pg_admin_url: str, redis_base_url: str) -> Iterator[Cluster]:
    c = start_cluster(pg_admin_url, redis_base_url, **SHARED_STACK_ENV)
    yield c
    stop_at_session_end([*c.workers, c.api])


@pytest.fixture(scope="session")
def embedded() -> Iterator[Cluster]:
    data_dir = tempfile.mkdtemp(prefix="lc-embedded-")
    env = base_env(LIVECODE_DATA_DIR=data_dir, **SHARED_STACK_ENV)
    env.pop("SECRET_KEY")
    proc, base = start_embedded(env)
    c = Cluster(base, env, proc)
    wait_workers(base, 1)
    yield c
    stop_at_session_end([proc])


@pytest.fixture(params=["distributed", "embedded"])
def system(request: pytest.FixtureRequest) -> Cluster:
    """The core flows run against both ways of running LiveCode."""
    return request.getfixturevalue("cluster" if request.param == "distributed" else "embedded")


@pytest.fixture
def api(system: Cluster) -> ApiClient:
    return system.client()


@dataclass
class AuthApis:
    """Two API processes with sign-in required and the real rate limits, sharing the `cluster`'s
    database, Redis and worker (as several API replicas of one deployment do)."""

    bases: list[str]
    env: dict[str, str]
    procs: list[Process]

    @property
    def base(self) -> str:
        return self.bases[0]


@pytest.fixture(scope="session")
def auth_apis(cluster: Cluster) -> Iterator[AuthApis]:
    env = {**cluster.env, "LIVECODE_AUTH_REQUIRED": "true", "LIVECODE_EXECUTION_RATE_LIMIT": "10/minute",
           "LIVECODE_LOGIN_RATE_LIMIT": "50/minute"}
    # The first runs two gunicorn processes, as `livecode api` does by default: /metrics must add
    # them up, and rate limits hold across processes as well as across hosts.
    started = [start_api(env, workers=2), start_api(env)]
    apis = AuthApis([base for _, base in started], env, [proc for proc, _ in started])
    yield apis
    stop_at_session_end(apis.procs)


# ---- order: the longest files first ------------------------------------------------------------
# Under `scripts/test` (pytest-xdist, whole files per worker, in collection order) the longest
# files start at once and the short ones fill in around them, so the run ends soon after the
# longest file does. Figures: per-file wall times of a full run (tests/support/filetimes.py, see
# docs/testing.md); the cgroup v2 VM run (about 2.5 minutes) is the longest.
LONGEST_FIRST = (
    "tests/sandbox/test_cgroup_v2_vm.py",
    "tests/integration/test_hostile_input.py",
    "tests/integration/test_faults_workers.py",
    "tests/integration/test_hostile_input_sweep.py",
    "tests/integration/test_faults_postgres.py",
    "tests/integration/test_faults_redis.py",
    "tests/browser/test_playground.py",
    "tests/integration/test_run_modes.py",
    "tests/integration/test_streaming.py",
    "tests/integration/test_blocking_wait.py",
    "tests/integration/test_collab.py",
    "tests/integration/test_stream_limits.py",
    "tests/integration/test_rate_limits.py",
    "tests/integration/test_worker_languages.py",
    "tests/integration/test_schemathesis.py",
    "tests/integration/test_host_slots.py",
    "tests/integration/test_account_lifecycle.py",
    "tests/browser/test_collab.py",
    "tests/integration/test_storage.py",
    "tests/sandbox/test_limits.py",
    "tests/integration/test_sandbox_via_api.py",
    "tests/integration/test_read_replica.py",
    "tests/sandbox/test_compile_cache.py",
    "tests/integration/test_webhooks.py",
    "tests/sandbox/test_cleanup.py",
    "tests/integration/test_accounts.py",
    "tests/integration/test_output_bytes.py",
    "tests/integration/test_priority_scaleout.py",
    "tests/browser/test_admin_analytics.py",
    "tests/compat/test_judge0_sdk.py",
    "tests/integration/test_api_hardening.py",
    "tests/browser/test_playground_auth.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    # A stable sort on the file alone: each file's tests stay together and in their order.
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


# ---- CPU of the in-process floor -------------------------------------------------------------
# It builds an app per test (create_app), hundreds per process: each compiled werkzeug's URL
# builders anew, and none was ever freed (see release_apps). What pytest and the imports set up
# before the first test lives until the end: frozen, the garbage collector stops walking it again
# and again.
cache_rule_compilation()


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    release_apps()
