"""Typed settings read from the environment (and a `.env` file), each declared once.

Each field of `Settings` is one setting: its name, environment variable, parser (from the
default's type unless given), default and doc, in one `setting(...)` declaration (see
settings_spec.py). `load_settings()` reads them, and `.env.example` is generated from them
(`livecode config env-example > .env.example`; a unit test checks it agrees). The sandbox's own
settings are declared in `sandbox/config.py` and included here as `sandbox_config`.

Embedded mode (`livecode serve`) needs none of them; distributed mode needs DATABASE_URL,
REDIS_URL and SECRET_KEY and fails fast without them.
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from . import settings_spec as spec
from .sandbox.config import SandboxConfig
from .settings_spec import ConfigError, Integer, Networks, Seconds, Text, nested, setting

__all__ = ["ConfigError", "Settings", "check_secret_key", "env_example", "load_settings"]

MAKE_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
COUNT = Integer(minimum=0, no_cap=True)  # 0 switches a cap off
AT_LEAST_0 = Integer(minimum=0)


@dataclass(frozen=True)
class HostsOrNetworks(spec.Parser):
    """A comma-separated list of host names or addresses/networks (`hooks.internal, 10.0.0.0/8`)."""

    def convert(self, raw: str) -> Any:
        return tuple(a.strip().lower() for a in raw.split(",") if a.strip())

    def check(self, value: Any) -> None:
        import ipaddress
        import re

        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not re.fullmatch(r"[a-z0-9_.-]{1,253}", entry):
                    raise ValueError(f"lists {entry!r}: neither a host name nor an address or network") from None

    def render(self, value: Any) -> str:
        return ",".join(value)


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


# The default worker concurrency stops here on big hosts: each run at once holds one of the host's
# sandbox slot uids (LIVECODE_SANDBOX_SLOTS, shared by every worker on it) and up to its memory limit.
MAX_DEFAULT_CONCURRENCY = 8


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """The CPUs this process may use: its CPU affinity, bounded by a CPU quota (a container's
    `--cpus`, a Kubernetes CPU limit), rounded up: cgroup v2's `cpu.max` on its cgroup or an
    ancestor, or cgroup v1's CFS quota on its `cpu` cgroup."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return cpus
    for line in lines:  # cgroup v1 (or hybrid): the cpu controller's CFS quota
        _, controllers, v1_path = (line.split(":", 2) + ["", ""])[:3]
        if "cpu" not in controllers.split(","):
            continue
        mount = cgroup_root / controllers
        # in a container the mount is its own cgroup; on a host, the process's path under it
        for d in (mount / v1_path.lstrip("/"), mount):
            try:
                quota = int((d / "cpu.cfs_quota_us").read_text())
                period = int((d / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            if quota > 0 and period > 0:
                cpus = min(cpus, max(1, math.ceil(quota / period)))
    try:
        path = next(line[3:].strip() for line in lines if line.startswith("0::"))
    except StopIteration:
        return cpus
    here = (cgroup_root / path.lstrip("/")).resolve()
    for d in (here, *here.parents):
        try:
            v2_quota, v2_period = (d / "cpu.max").read_text().split()[:2]
            if v2_quota != "max":
                cpus = min(cpus, max(1, math.ceil(int(v2_quota) / int(v2_period))))
        except (OSError, ValueError):
            pass
        if d == cgroup_root.resolve():
            break
    return cpus


def default_worker_concurrency(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
) -> int:
    """Runs at once per worker process when LIVECODE_WORKER_CONCURRENCY is unset: one more than the
    CPUs it may use. A run waits between its bursts of CPU (its claim's and its result's commits,
    Redis round trips, the sandbox's start, the hand-off to the next message); with one run per
    core the cores sit idle in those waits, a quarter of the time on 2 cores (docs/performance.md)."""
    return min(usable_cpus(cgroup_root, proc_cgroup) + 1, MAX_DEFAULT_CONCURRENCY)


def default_data_dir() -> Path:
    base = _env("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "livecode"


@dataclass(frozen=True)
class Settings:
    # "embedded": SQLite + in-process broker and worker; "distributed": PostgreSQL + Redis.
    # Chosen by the command (`serve` / `api`, `worker`), or by whether DATABASE_URL and REDIS_URL are set.
    mode: str = setting(None, "embedded", "embedded or distributed")

    # ---- where things live
    database_url: str = setting(
        "DATABASE_URL", "", "PostgreSQL for the distributed mode (the embedded mode uses SQLite in LIVECODE_DATA_DIR).",
        section="where things live", example="postgresql://postgres:password@localhost:5432/livecode_platform",
        required=True)
    database_replica_url: str | None = setting(
        "DATABASE_REPLICA_URL", None,
        "Optional read replica: list and read endpoints use it; a client always reads its own writes.",
        parse=Text(), example="postgresql://postgres:password@replica:5432/livecode_platform")
    redis_url: str | None = setting(
        "REDIS_URL", None,
        "Redis: Celery broker, execution events (streaming), rate-limit counters, worker heartbeats.",
        parse=Text(), example="redis://localhost:6379/0", required=True)
    secret_key: str = setting(
        "SECRET_KEY", "",
        "Signs access tokens: whoever knows it can sign in as anyone, admins included. Required in distributed "
        f"mode; make one with\n  {MAKE_SECRET}\nA key shorter than 32 bytes, of low entropy, or a known placeholder "
        "is refused at start-up. The embedded mode generates one and keeps it in LIVECODE_DATA_DIR/secret_key.",
        required=True)
    data_dir: Path = setting(
        "LIVECODE_DATA_DIR", None,
        "Embedded mode: SQLite database, generated secret, compile cache (default ~/.local/share/livecode, "
        "or $XDG_DATA_HOME/livecode).", factory=default_data_dir, example="./livecode-data")

    # ---- database pool (design 4.1)
    db_pool_size: int = setting("DB_POOL_SIZE", 10, "Connections each process keeps open.",
                                section="database pool (design 4.1)")
    db_max_overflow: int = setting("DB_MAX_OVERFLOW", 20, "Connections opened past the pool size at busy times.")
    db_pool_recycle: int = setting("DB_POOL_RECYCLE", 3600, "Seconds after which a connection is replaced.")
    db_pool_pre_ping: bool = setting("DB_POOL_PRE_PING", True, "Check a connection before each use.")
    db_pool_pre_ping_bypass_ms: int = setting(
        "DB_POOL_PRE_PING_BYPASS_MS", 500, "With the pre-ping on: a connection given back to the pool less than this "
        "many milliseconds ago is not checked again (as HikariCP's aliveBypassWindowMs); 0: check before every use.",
        parse=Integer(minimum=0))
    db_connect_timeout_s: int = setting(
        "DB_CONNECT_TIMEOUT", 1, "Seconds to wait for a connection; a stopped database becomes a 503 within about "
        "this long.")

    # ---- servers
    host: str = setting("LIVECODE_HOST", "127.0.0.1", "Address `livecode serve` and `livecode api` listen on "
                        "(--host).", section="servers")
    port: int = setting("LIVECODE_PORT", 5000, "Their port (--port).")
    api_workers: int = setting("LIVECODE_API_WORKERS", 2, "gunicorn processes of `livecode api` (--workers).",
                               parse=Integer(minimum=1))
    # None outside `livecode api|serve` (an app built in a test): no stream or wait cap from it.
    api_threads: int | None = setting(
        "LIVECODE_API_THREADS", None,
        "Threads per API process (--threads; unset: 128 for `livecode api`, 64 for `livecode serve`). Each "
        "live follower (SSE or WebSocket) holds a thread; a process accepts threads minus a quarter of them "
        "(at least 4) at once and answers 503 STREAMS_BUSY past that, so ordinary requests always find a thread.",
        parse=Integer(minimum=1), example="128")
    worker_concurrency: int = setting(
        "LIVECODE_WORKER_CONCURRENCY", None,
        "Runs at once per worker process (Celery threads pool; each run is a sandboxed child process; "
        "`livecode worker -c`). Unset: the CPUs the process may use (affinity, cgroup CPU quota) + 1, at "
        "most 8 (3 on 2 CPUs): a run waits on the database, Redis and its sandbox's start between bursts of "
        "CPU, and one run per core leaves the cores idle in those waits. Each run at once holds a sandbox "
        "slot uid and up to its memory limit: size the worker's memory for concurrency x LIVECODE_MEMORY_LIMIT_MB.",
        parse=Integer(minimum=1), factory=default_worker_concurrency, example="3")
    queue_high: str = setting(
        "LIVECODE_QUEUE_HIGH", "high_priority",
        "Queue names (design 4.3): interactive runs go to the high one, batch runs to the low one.")
    queue_low: str = setting("LIVECODE_QUEUE_LOW", "low_priority", "")

    # ---- input limits
    max_source_bytes: int = setting("LIVECODE_MAX_SOURCE_BYTES", 256 * 1024,
                                    "Largest source of a code session, in bytes.", section="input limits")
    max_files: int = setting("LIVECODE_MAX_FILES", 64, "Most files of a multi-file program (a session's `files`).",
                             parse=Integer(minimum=1))
    max_files_bytes: int = setting("LIVECODE_MAX_FILES_BYTES", 1024 * 1024,
                                   "Largest total size of a multi-file program's files, in bytes.",
                                   parse=Integer(minimum=1))
    max_stdin_bytes: int = setting("LIVECODE_MAX_STDIN_BYTES", 256 * 1024,
                                   "Largest stdin of a run, in bytes (and of input sent to an interactive one).")
    max_request_bytes: int = setting("LIVECODE_MAX_REQUEST_BYTES", 2 * 1024 * 1024,
                                     "Whole request body (413 above it).")
    max_tests: int = setting(
        "LIVECODE_MAX_TESTS", 100,
        "Most test cases one execution may carry (`tests`). They run one after another: together they get at "
        "most LIVECODE_MAX_TIME_LIMIT_MS of wall time, and each gets its share of the output limit.",
        parse=Integer(minimum=1))

    # ---- execution limits: defaults and the maxima a request may ask for
    time_limit_ms: int = setting("LIVECODE_TIME_LIMIT_MS", 30_000, "A run's time limit when the request names none.",
                                 section="execution limits (defaults, and the maxima a request may ask for)")
    max_time_limit_ms: int = setting("LIVECODE_MAX_TIME_LIMIT_MS", 60_000, "The longest a request may ask for.")
    memory_limit_mb: int = setting("LIVECODE_MEMORY_LIMIT_MB", 256, "A run's memory limit when the request names none.")
    max_memory_limit_mb: int = setting("LIVECODE_MAX_MEMORY_LIMIT_MB", 1024, "The most a request may ask for.")
    max_processes: int = setting("LIVECODE_MAX_PROCESSES", 64, "Processes and threads of one run.")
    max_output_bytes: int = setting("LIVECODE_MAX_OUTPUT_BYTES", 1024 * 1024,
                                    "Each of stdout and stderr; the program is stopped when it writes more.")
    file_size_limit_kb: int = setting(
        "LIVECODE_FILE_SIZE_LIMIT_KB", 10_240,
        "Largest file a run may write, in KB (RLIMIT_FSIZE: SIGXFSZ, or EFBIG where the program ignores it), "
        "when the request names none.", parse=Integer(minimum=1))
    max_file_size_limit_kb: int = setting("LIVECODE_MAX_FILE_SIZE_LIMIT_KB", 65_536, "The most a request may ask for.",
                                          parse=Integer(minimum=1))
    stack_limit_kb: int = setting(
        "LIVECODE_STACK_LIMIT_KB", 8192,
        "A run's stack, in KB (RLIMIT_STACK, soft and hard), when the request names none; 8192 is Linux's "
        "usual default. The memory limit bounds the stack too.", parse=Integer(minimum=1))
    max_stack_limit_kb: int = setting("LIVECODE_MAX_STACK_LIMIT_KB", 262_144, "The most a request may ask for.",
                                      parse=Integer(minimum=1))
    sandbox: str = setting("LIVECODE_SANDBOX", "bwrap",
                           "bwrap (bubblewrap + cgroups; the default) or none (NO isolation: local development only).",
                           parse=Text(choices=("bwrap", "none")))
    sandbox_config: SandboxConfig = nested(SandboxConfig)

    # ---- reliability
    task_max_retries: int = setting("LIVECODE_TASK_MAX_RETRIES", 3,
                                    "Task retries on infrastructure errors (backoff 2^n s).", section="reliability")
    heartbeat_interval_s: float = setting(None, 2.0, "How often a worker writes its heartbeat.")
    heartbeat_ttl_s: int = setting("LIVECODE_HEARTBEAT_TTL_S", 10,
                                   "A worker with no heartbeat for this long is lost; its running executions are "
                                   "queued again.")
    reconcile_interval_s: float = setting("LIVECODE_RECONCILE_INTERVAL_S", 5.0,
                                          "How often the reconciler looks for lost or orphaned executions.")
    requeue_grace_s: float = setting(
        "LIVECODE_REQUEUE_GRACE_S", 5.0,
        "A QUEUED execution that no broker message carries after this long is queued again.")
    max_attempts: int = setting("LIVECODE_MAX_ATTEMPTS", 3,
                                "Runs of one execution (lost workers) before it is FAILED with reason WORKER_LOST.")

    # ---- accounts, rate limits
    auth_required: bool = setting("LIVECODE_AUTH_REQUIRED", False,
                                  "Sign-in required (default: true in distributed mode, false in embedded mode).",
                                  section="accounts and rate limits", by_mode={"distributed": True}, example="true")
    execution_rate_limit: str = setting(
        "LIVECODE_EXECUTION_RATE_LIMIT", "10/minute",
        "Executions per user per minute (per client address when signed out); counted in Redis, so every API "
        "process shares the budget. A batch of N counts N. Answered past it with 429.")
    login_rate_limit: str = setting("LIVECODE_LOGIN_RATE_LIMIT", "10/minute",
                                    "Sign-in and registration attempts per client address.")
    rate_limits_enabled: bool = setting("LIVECODE_RATE_LIMITS_ENABLED", True,
                                        "false turns every rate limit off (only to measure what they cost, bench/).")
    execution_rate_limit_per_address: str = setting(
        "LIVECODE_EXECUTION_RATE_LIMIT_PER_ADDRESS", "30/minute",
        'Executions per client address per minute, whoever is signed in ("" = none): fresh accounts do not '
        "multiply one address's budget.", parse=Text(strip=True), keep_empty=True)
    access_token_minutes: int = setting("LIVECODE_ACCESS_TOKEN_MINUTES", 15, "Lifetime of an access token.")
    refresh_token_days: int = setting(
        "LIVECODE_REFRESH_TOKEN_DAYS", 30,
        "Refresh tokens are used once each (rotation); a replayed one revokes its whole sign-in.")
    registration: str = setting(
        "LIVECODE_REGISTRATION", "open",
        "Who may create an account: open (anyone), invite (POST /api/v1/auth/invitations by an admin, or "
        "`livecode user invite -`) or closed (operators only: `livecode user create`).",
        parse=Text(choices=("open", "invite", "closed"), case="lower"))
    password_min_length: int = setting(
        "LIVECODE_PASSWORD_MIN_LENGTH", 8,
        "Shortest password accepted (the 30,000 most common passwords are refused whatever their length).")
    password_hash_memory_kib: int = setting(
        "LIVECODE_PASSWORD_HASH_MEMORY_KIB", 65536,
        "Memory of one Argon2id password hash, in KiB (argon2-cffi's default, 64 MiB, as RFC 9106 recommends "
        "where memory is short). Each hash carries its own cost: a sign-in rehashes a password stored with other "
        "parameters.", parse=Integer(minimum=32))
    password_hash_time_cost: int = setting(
        "LIVECODE_PASSWORD_HASH_TIME_COST", 3,
        "Passes of one Argon2id password hash over its memory (argon2-cffi's default).", parse=Integer(minimum=1))
    trusted_proxy_hops: int = setting(
        "LIVECODE_TRUSTED_PROXY_HOPS", 0,
        "Reverse proxies in front of the API that append to X-Forwarded-For / X-Forwarded-Proto. 0: the TCP "
        "peer is the client and forwarded headers are ignored (a client could otherwise pick a fresh sign-in "
        "bucket per request). N: the N-th address from the right of X-Forwarded-For is the client "
        "(werkzeug's ProxyFix).", parse=AT_LEAST_0)

    # ---- streams and connections: what one client may hold of an API process (docs/operations.md)
    streams_per_user: int = setting(
        "LIVECODE_STREAMS_PER_USER", 8,
        "SSE/WebSocket followers one signed-in user may hold of one API process (each gunicorn process "
        "counts its own; 0 switches a cap off).", parse=COUNT,
        section="streams, connections, waits (per API process; 0 switches a cap off)")
    streams_per_address: int = setting("LIVECODE_STREAMS_PER_ADDRESS", 8,
                                       "The same for requests without an account, by client address.", parse=COUNT)
    send_timeout_s: float = setting(
        "LIVECODE_SEND_TIMEOUT_S", 30.0,
        "A response write that makes no progress this long drops the client (it stopped reading).",
        parse=Seconds(positive=True))
    header_timeout_s: float = setting(
        "LIVECODE_HEADER_TIMEOUT_S", 10.0,
        "The request line and headers, then the body, must arrive within these (else 408).",
        parse=Seconds(positive=True))
    body_timeout_s: float = setting("LIVECODE_BODY_TIMEOUT_S", 30.0, "", parse=Seconds(positive=True))
    connections_per_address: int = setting("LIVECODE_CONNECTIONS_PER_ADDRESS", 64,
                                           "Open connections of one client address, and of one process in all.",
                                           parse=COUNT)
    connections_per_process: int = setting("LIVECODE_CONNECTIONS_PER_PROCESS", 1000, "",
                                           parse=Integer(minimum=0, no_cap=True, at_least=1))
    connection_limit_exempt: tuple[str, ...] = setting(
        "LIVECODE_CONNECTION_LIMIT_EXEMPT", (),
        "Addresses or networks (comma-separated) not subject to the per-address connection cap (a reverse "
        "proxy's).", parse=Networks())
    # POST .../execute?wait=true: the longest wait (a longer timeout_ms is cut to it), and how many
    # requests of one API process may wait at once (parked: each holds its connection, not a thread).
    max_wait_ms: int = setting("LIVECODE_MAX_WAIT_MS", 30_000,
                               "POST .../execute?wait=true: the longest wait in ms (a longer timeout_ms is cut to it).")
    max_waits: int = setting(
        "LIVECODE_MAX_WAITS", 0,
        "Requests one API process lets wait at once (`?wait=true`, Piston's execute); past it they answer as "
        "without waiting (202; Piston: 503). 0: three quarters of LIVECODE_CONNECTIONS_PER_PROCESS where the "
        "server parks waits (they hold a connection, not a thread: `livecode api|serve` without TLS), three "
        "quarters of LIVECODE_API_THREADS where each holds a thread.", parse=AT_LEAST_0)

    # ---- storage quotas and retention (issue 10, item 8): a request that would go over a cap is
    # refused with 429 and changes nothing; 0 turns a cap (or the expiry) off.
    max_stored_executions: int = setting(
        "LIVECODE_MAX_STORED_EXECUTIONS", 10_000,
        "Executions and code sessions kept per user (anonymous callers count as one); 0 = no cap. At the cap, "
        "execute/batch/create answer 429 EXECUTION_QUOTA_EXCEEDED / SESSION_QUOTA_EXCEEDED.",
        parse=AT_LEAST_0, section="storage")
    max_sessions: int = setting("LIVECODE_MAX_SESSIONS", 1000, "", parse=AT_LEAST_0)
    execution_retention_days: int = setting("LIVECODE_EXECUTION_RETENTION_DAYS", 30,
                                            "Finished executions older than this are deleted (0 = keep forever).",
                                            parse=AT_LEAST_0)
    storage_cleanup_interval_s: float = setting(
        "LIVECODE_STORAGE_CLEANUP_INTERVAL_S", 300.0,
        "How often one worker (cluster-wide) runs the expiry and the collection of unreferenced sources, rows "
        "per statement (each its own short transaction), and how long an unreferenced source is kept after "
        "its last use.", parse=Seconds(positive=True))
    storage_cleanup_batch: int = setting("LIVECODE_STORAGE_CLEANUP_BATCH", 1000, "", parse=Integer(minimum=1))
    source_gc_grace_s: int = setting("LIVECODE_SOURCE_GC_GRACE_S", 3600, "", parse=AT_LEAST_0)

    # ---- history (issue 15, part 1: services/history.py): a session's versions
    history_autosave_interval_s: float = setting(
        "LIVECODE_HISTORY_AUTOSAVE_INTERVAL_S", 60.0,
        "Autosave makes a history version at most this often per session (runs, checkpoints and restores "
        "always make one).", parse=Seconds(), section="history")
    history_keep_versions: int = setting(
        "LIVECODE_HISTORY_KEEP_VERSIONS", 100,
        "The storage job drops a history version that is not among its session's newest N and is older than "
        "D days (0 switches that bound off; both 0 keep every version); labelled checkpoints are never dropped.",
        parse=AT_LEAST_0)
    history_keep_days: int = setting("LIVECODE_HISTORY_KEEP_DAYS", 30, "", parse=AT_LEAST_0)

    # ---- files a run leaves in out/ (issue 13): kept with the execution, served by GET .../files
    output_files_max: int = setting(
        "LIVECODE_OUTPUT_FILES_MAX", 32,
        "Files a run may leave in out/ that are kept (0: none is collected), and their total size in bytes; "
        "what does not fit is skipped whole and the execution says files_truncated.",
        parse=AT_LEAST_0, section="output files")
    output_files_max_bytes: int = setting("LIVECODE_OUTPUT_FILES_MAX_BYTES", 8 * 1024 * 1024, "",
                                          parse=AT_LEAST_0)
    output_file_retention_days: int = setting(
        "LIVECODE_OUTPUT_FILE_RETENTION_DAYS", 0,
        "Output files older than this are deleted before their execution is (0: kept as long as it is).",
        parse=AT_LEAST_0)

    # ---- analytics (GET /api/v1/admin/analytics): its cost follows the runs in the range
    analytics_max_runs: int = setting(
        "LIVECODE_ANALYTICS_MAX_RUNS", 1_000_000,
        "GET /api/v1/admin/analytics: the most runs one range may hold (a million is about 14 s of database "
        "time on 2 cores); past it 400 RANGE_TOO_LARGE asks for a shorter range. 0 = no cap.",
        parse=AT_LEAST_0, section="analytics")

    # ---- logging
    log_level: str = setting("LIVECODE_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR.",
                             parse=Text(case="upper"), section="logging")
    log_json: bool = setting("LIVECODE_LOG_JSON", True, "JSON lines with a request id (false: plain text).")

    # ---- metrics
    prometheus_multiproc_dir: str | None = setting(
        "PROMETHEUS_MULTIPROC_DIR", None,
        "Where `livecode api` keeps prometheus_client's multiprocess files so /metrics adds up every gunicorn "
        "process (default: a fresh temporary directory; emptied at start-up).",
        parse=Text(), section="metrics", example="/tmp/livecode-metrics")
    metrics_token: str | None = setting(
        "LIVECODE_METRICS_TOKEN", None,
        "When set, GET /metrics needs `Authorization: Bearer <token>` (401 without it, 403 with a wrong one).",
        parse=Text())

    # ---- webhooks (callback_url on executions, batches, API keys and Judge0 submissions)
    webhook_allow: tuple[str, ...] = setting(
        "LIVECODE_WEBHOOK_ALLOW", (),
        "Callback hosts or address ranges a webhook may reach although they are not public (loopback, private, "
        "link-local), comma-separated, e.g. `hooks.internal, 10.20.0.0/16`. Empty: public addresses only.",
        parse=HostsOrNetworks(), section="webhooks")
    webhook_max_attempts: int = setting(
        "LIVECODE_WEBHOOK_MAX_ATTEMPTS", 5, "Tries of one LiveCode webhook before it is given up (Judge0 "
        "callbacks: 3, as Judge0 makes).", parse=Integer(minimum=1))
    webhook_backoff_s: float = setting(
        "LIVECODE_WEBHOOK_BACKOFF_S", 2.0, "The wait before the first retry; it doubles after each failed try.",
        parse=Seconds(positive=True))
    webhook_timeout_s: float = setting(
        "LIVECODE_WEBHOOK_TIMEOUT_S", 5.0, "Seconds one try may take (connect and answer).",
        parse=Seconds(positive=True))
    webhook_sweep_interval_s: float = setting(
        "LIVECODE_WEBHOOK_SWEEP_INTERVAL_S", 2.0,
        "How often each worker looks for deliveries that are due (retries, and those a crashed worker left).",
        parse=Seconds(positive=True))
    # ---- collaborative editing
    collab_persist_ms: int = setting(
        "LIVECODE_COLLAB_PERSIST_MS", 400,
        "A co-edited document is written into the session's source this long after its last change "
        "(debounced; at most every this long while typing goes on).",
        parse=Integer(minimum=10), section="collaborative editing")
    collab_doc_ttl_s: int = setting(
        "LIVECODE_COLLAB_DOC_TTL_S", 7 * 24 * 3600,
        "How long a co-edited document's CRDT state is kept (in Redis, or this process's memory) after its "
        "last change; after that the next editor starts again from the session's source.",
        parse=Integer(minimum=60))
    collab_clients_per_session: int = setting(
        "LIVECODE_COLLAB_CLIENTS_PER_SESSION", 32,
        "Co-editing connections one session may have on one API process (429 above it; 0 switches the cap off).",
        parse=COUNT)

    @property
    def embedded(self) -> bool:
        return self.mode == "embedded"

    @property
    def broker_url(self) -> str:
        return self.redis_url or "memory://"

    def with_overrides(self, **kwargs: Any) -> Settings:
        return replace(self, **kwargs)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def env_example() -> str:
    """The text of `.env.example`, from the declarations above."""
    return spec.env_example(Settings)


def load_settings(mode: str | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment; `mode` None means: distributed iff DATABASE_URL
    names a server database and REDIS_URL is set."""
    _load_env_file()
    database_url = _env("DATABASE_URL") or ""
    redis_url = _env("REDIS_URL")
    if mode is None:
        mode = "distributed" if (database_url and redis_url) else "embedded"
    values = spec.read(Settings, os.environ, mode)
    data_dir = values["data_dir"] = Path(values["data_dir"]).expanduser().resolve()

    if mode == "embedded":
        database_url = database_url or f"sqlite:///{data_dir / 'livecode.db'}"
    elif not database_url or not redis_url:
        raise ConfigError(
            "distributed mode needs DATABASE_URL (postgresql://...) and REDIS_URL (redis://...); "
            "set them in the environment or .env, or run `livecode serve` for the embedded mode"
        )
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]

    secret_key = values["secret_key"]
    if not secret_key:
        if mode == "distributed":
            raise ConfigError(f"SECRET_KEY is required in distributed mode; make one with {MAKE_SECRET}")
        secret_key = _embedded_secret(data_dir)
    else:
        check_secret_key(secret_key)

    values.update(mode=mode, database_url=database_url, secret_key=secret_key,
                  redis_url=redis_url if mode == "distributed" else None)
    spec.check(Settings, overrides)
    values.update(overrides)
    return Settings(**values)


def _load_env_file() -> None:
    """`.env` from the working directory (where `cp .env.example .env` puts it), or the file named
    by LIVECODE_ENV_FILE. The environment wins over the file."""
    from dotenv import load_dotenv

    named = _env("LIVECODE_ENV_FILE")
    path = Path(named).expanduser() if named else Path.cwd() / ".env"
    if named and not path.is_file():
        raise ConfigError(f"LIVECODE_ENV_FILE names {str(path)!r}, which is not a readable file")
    if path.is_file():
        load_dotenv(path, override=False)


# ---- SECRET_KEY strength ----------------------------------------------------------------------

MIN_SECRET_BYTES = 32
MIN_SECRET_BITS = 80  # a rough estimate from the key's own characters (see _estimated_bits)
# Placeholders from our own examples and the usual ones people leave in place.
PLACEHOLDER_SECRETS = frozenset({
    "change-me", "changeme", "change_me", "change-this", "changethis", "secret", "secret-key", "secret_key",
    "secretkey", "your-secret-key", "your_secret_key", "mysecret", "password", "test-secret-key-not-for-production",
    "dev", "development", "default", "replace-me", "replaceme", "xxx", "todo",
})
PLACEHOLDER_WORDS = ("change-me", "changeme", "change_me", "replace-me", "replace_me", "not-for-production",
                     "your-secret", "your_secret", "placeholder", "example")


def check_secret_key(key: str) -> None:
    """Refuse a SECRET_KEY that can be guessed: anyone who knows it signs tokens for any user,
    admins included. Known placeholders, fewer than 32 bytes, and low-entropy keys (few distinct
    characters, or a short pattern repeated) are refused with how to make a good one."""
    how = f"; make one with {MAKE_SECRET} (or `openssl rand -hex 32`)"
    lowered = key.strip().lower()
    if lowered in PLACEHOLDER_SECRETS or any(word in lowered for word in PLACEHOLDER_WORDS):
        raise ConfigError("SECRET_KEY is a placeholder from an example; anyone could forge tokens with it" + how)
    size = len(key.encode("utf-8", "surrogatepass"))
    if size < MIN_SECRET_BYTES:
        raise ConfigError(f"SECRET_KEY is {size} bytes; at least {MIN_SECRET_BYTES} are required" + how)
    bits = _estimated_bits(key)
    if bits < MIN_SECRET_BITS:
        raise ConfigError(
            f"SECRET_KEY has low entropy (about {int(bits)} bits; at least {MIN_SECRET_BITS} are required)" + how
        )


def _estimated_bits(key: str) -> float:
    """A rough, conservative estimate of a key's entropy: log2 of its alphabet (the distinct
    characters it uses) per character, counted once per distinct three-character window (so a
    repeated pattern counts once, not once per repetition). Random hex or base64 keys of 32
    characters or more pass: the Shannon entropy of a short key's own character counts
    undershoots, and refused one random 32-character hex key in about 100,000."""
    per_char = math.log2(len(set(key)))
    novel = len({key[i:i + 3] for i in range(max(1, len(key) - 2))})
    return per_char * novel


def _embedded_secret(data_dir: Path) -> str:
    """A per-installation secret kept in the data directory, so tokens survive restarts."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        key = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key
