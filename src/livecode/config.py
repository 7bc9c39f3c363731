"""Typed settings read from the environment (and a `.env` file), with defaults.

Every variable is documented in `.env.example`. Embedded mode (`livecode serve`) needs none of
them; distributed mode needs DATABASE_URL, REDIS_URL and SECRET_KEY and fails fast without them.
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


class ConfigError(RuntimeError):
    """A setting is missing or invalid; the message says which and how to fix it."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def default_data_dir() -> Path:
    base = _env("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "livecode"


@dataclass(frozen=True)
class Settings:
    # "embedded": SQLite + in-process broker and worker; "distributed": PostgreSQL + Redis.
    mode: str = "embedded"
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str = ""
    database_replica_url: str | None = None
    redis_url: str | None = None
    secret_key: str = ""

    # Connection pool (design 4.1).
    db_pool_size: int = 10
    db_max_overflow: int = 20
    db_pool_recycle: int = 3600
    db_pool_pre_ping: bool = True
    db_connect_timeout_s: int = 1  # so a stopped database becomes a 503 within about a second

    # Input limits.
    max_source_bytes: int = 256 * 1024
    max_stdin_bytes: int = 256 * 1024
    max_request_bytes: int = 2 * 1024 * 1024

    # POST .../execute?wait=true: the longest wait (a longer timeout_ms is cut to it), and how many
    # requests of one API process may wait at once (each holds a server thread; past it the
    # request answers 202 at once). 0: three quarters of the API's threads (LIVECODE_API_THREADS).
    max_wait_ms: int = 30_000
    max_waits: int = 0

    # Execution limits: defaults and the maxima a request may ask for.
    time_limit_ms: int = 30_000
    max_time_limit_ms: int = 60_000
    memory_limit_mb: int = 256
    max_memory_limit_mb: int = 1024
    max_processes: int = 64
    max_output_bytes: int = 1024 * 1024
    sandbox: str = "bwrap"  # "none" is for local development only

    # Queues (design 4.3).
    queue_high: str = "high_priority"
    queue_low: str = "low_priority"

    # Worker.
    worker_concurrency: int = 2
    task_max_retries: int = 3
    heartbeat_interval_s: float = 2.0
    heartbeat_ttl_s: int = 10
    reconcile_interval_s: float = 5.0
    requeue_grace_s: float = 5.0
    max_attempts: int = 3  # runs of one execution before it is FAILED with WORKER_LOST

    # Accounts, rate limits.
    auth_required: bool = False
    execution_rate_limit: str = "10/minute"
    # Executions per client address, whoever is signed in ("" = no such limit): one address
    # cannot multiply its budget by registering accounts.
    execution_rate_limit_per_address: str = "30/minute"
    login_rate_limit: str = "10/minute"
    rate_limits_enabled: bool = True  # off only to measure what the limits cost (bench/)
    access_token_minutes: int = 15
    refresh_token_days: int = 30
    # Who may create an account: "open" (anyone), "invite" (POST /api/v1/auth/invitations by an
    # admin, or `livecode user invite -`), "closed" (operators only: `livecode user create`).
    registration: str = "open"
    password_min_length: int = 8

    # Storage quotas and retention (issue 10, item 8). A request that would go over a cap is
    # refused with 429 and changes nothing; 0 turns a cap (or the expiry) off.
    # LIVECODE_MAX_STORED_EXECUTIONS: executions kept per owner (user; anonymous counts as one).
    max_stored_executions: int = 10_000
    # LIVECODE_MAX_SESSIONS: code sessions per owner.
    max_sessions: int = 1000
    # LIVECODE_EXECUTION_RETENTION_DAYS: finished executions older than this are deleted.
    execution_retention_days: int = 30
    # LIVECODE_STORAGE_CLEANUP_INTERVAL_S: how often one worker (cluster-wide) expires executions
    # and collects unreferenced sources.
    storage_cleanup_interval_s: float = 300.0
    # LIVECODE_STORAGE_CLEANUP_BATCH: rows deleted per statement (each its own short transaction).
    storage_cleanup_batch: int = 1000
    # LIVECODE_SOURCE_GC_GRACE_S: an unreferenced source is kept this long after its last use.
    source_gc_grace_s: int = 3600

    log_level: str = "INFO"
    log_json: bool = True

    # Streams and connections: what one client may hold of an API process (docs/operations.md).
    # Per API process (each gunicorn process counts its own); 0 switches a cap off.
    streams_per_user: int = 8  # SSE + WebSocket followers of one signed-in user
    streams_per_address: int = 8  # the same for requests without an account, by client address
    send_timeout_s: float = 30.0  # a response write (a stream event) that makes no progress this long ends it
    header_timeout_s: float = 10.0  # the request line and headers must arrive within this
    body_timeout_s: float = 30.0  # the body must arrive within this once the headers are in
    connections_per_address: int = 64  # open TCP connections of one client address
    connections_per_process: int = 1000  # open TCP connections of one API process, all clients
    connection_limit_exempt: tuple[str, ...] = ()  # addresses or networks not capped (a reverse proxy's)
    # ---- API hardening (issue 10: proxies, metrics) ----
    # Reverse proxies in front of the API that append to X-Forwarded-For / X-Forwarded-Proto
    # (LIVECODE_TRUSTED_PROXY_HOPS). 0: the TCP peer is the client and forwarded headers are
    # ignored (a client could otherwise pick a fresh sign-in bucket per request). N: the N-th
    # address from the right of X-Forwarded-For is the client (werkzeug's ProxyFix).
    trusted_proxy_hops: int = 0
    # LIVECODE_METRICS_TOKEN: when set, GET /metrics needs `Authorization: Bearer <token>`.
    metrics_token: str | None = None

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


def load_settings(mode: str | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment; `mode` None means: distributed iff DATABASE_URL
    names a server database and REDIS_URL is set."""
    _load_env_file()

    data_dir = Path(_env("LIVECODE_DATA_DIR") or default_data_dir()).expanduser().resolve()
    database_url = _env("DATABASE_URL") or ""
    redis_url = _env("REDIS_URL")
    if mode is None:
        mode = "distributed" if (database_url and redis_url) else "embedded"

    if mode == "embedded":
        database_url = database_url or f"sqlite:///{data_dir / 'livecode.db'}"
    elif not database_url or not redis_url:
        raise ConfigError(
            "distributed mode needs DATABASE_URL (postgresql://...) and REDIS_URL (redis://...); "
            "set them in the environment or .env, or run `livecode serve` for the embedded mode"
        )
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]

    secret_key = _env("SECRET_KEY") or ""
    if not secret_key:
        if mode == "distributed":
            raise ConfigError(f"SECRET_KEY is required in distributed mode; make one with {MAKE_SECRET}")
        secret_key = _embedded_secret(data_dir)
    else:
        check_secret_key(secret_key)

    values: dict[str, Any] = dict(
        mode=mode,
        data_dir=data_dir,
        database_url=database_url,
        database_replica_url=_env("DATABASE_REPLICA_URL"),
        redis_url=redis_url if mode == "distributed" else None,
        secret_key=secret_key,
        db_pool_size=_int("DB_POOL_SIZE", 10),
        db_max_overflow=_int("DB_MAX_OVERFLOW", 20),
        db_pool_recycle=_int("DB_POOL_RECYCLE", 3600),
        db_pool_pre_ping=_bool("DB_POOL_PRE_PING", True),
        db_connect_timeout_s=_int("DB_CONNECT_TIMEOUT", 1),
        max_source_bytes=_int("LIVECODE_MAX_SOURCE_BYTES", 256 * 1024),
        max_stdin_bytes=_int("LIVECODE_MAX_STDIN_BYTES", 256 * 1024),
        max_request_bytes=_int("LIVECODE_MAX_REQUEST_BYTES", 2 * 1024 * 1024),
        max_wait_ms=_int("LIVECODE_MAX_WAIT_MS", 30_000),
        max_waits=_int("LIVECODE_MAX_WAITS", 0),
        time_limit_ms=_int("LIVECODE_TIME_LIMIT_MS", 30_000),
        max_time_limit_ms=_int("LIVECODE_MAX_TIME_LIMIT_MS", 60_000),
        memory_limit_mb=_int("LIVECODE_MEMORY_LIMIT_MB", 256),
        max_memory_limit_mb=_int("LIVECODE_MAX_MEMORY_LIMIT_MB", 1024),
        max_processes=_int("LIVECODE_MAX_PROCESSES", 64),
        max_output_bytes=_int("LIVECODE_MAX_OUTPUT_BYTES", 1024 * 1024),
        sandbox=_env("LIVECODE_SANDBOX", "bwrap") or "bwrap",
        queue_high=_env("LIVECODE_QUEUE_HIGH", "high_priority") or "high_priority",
        queue_low=_env("LIVECODE_QUEUE_LOW", "low_priority") or "low_priority",
        worker_concurrency=_int("LIVECODE_WORKER_CONCURRENCY", 2),
        task_max_retries=_int("LIVECODE_TASK_MAX_RETRIES", 3),
        heartbeat_ttl_s=_int("LIVECODE_HEARTBEAT_TTL_S", 10),
        max_attempts=_int("LIVECODE_MAX_ATTEMPTS", 3),
        auth_required=_bool("LIVECODE_AUTH_REQUIRED", mode == "distributed"),
        execution_rate_limit=_env("LIVECODE_EXECUTION_RATE_LIMIT", "10/minute") or "10/minute",
        execution_rate_limit_per_address=os.environ.get("LIVECODE_EXECUTION_RATE_LIMIT_PER_ADDRESS",
                                                        "30/minute").strip(),
        login_rate_limit=_env("LIVECODE_LOGIN_RATE_LIMIT", "10/minute") or "10/minute",
        rate_limits_enabled=_bool("LIVECODE_RATE_LIMITS_ENABLED", True),
        access_token_minutes=_int("LIVECODE_ACCESS_TOKEN_MINUTES", 15),
        refresh_token_days=_int("LIVECODE_REFRESH_TOKEN_DAYS", 30),
        registration=(_env("LIVECODE_REGISTRATION", "open") or "open").lower(),
        password_min_length=_int("LIVECODE_PASSWORD_MIN_LENGTH", 8),
        max_stored_executions=_int("LIVECODE_MAX_STORED_EXECUTIONS", 10_000),
        max_sessions=_int("LIVECODE_MAX_SESSIONS", 1000),
        execution_retention_days=_int("LIVECODE_EXECUTION_RETENTION_DAYS", 30),
        storage_cleanup_interval_s=float(_env("LIVECODE_STORAGE_CLEANUP_INTERVAL_S") or 300.0),
        storage_cleanup_batch=_int("LIVECODE_STORAGE_CLEANUP_BATCH", 1000),
        source_gc_grace_s=_int("LIVECODE_SOURCE_GC_GRACE_S", 3600),
        log_level=(_env("LIVECODE_LOG_LEVEL", "INFO") or "INFO").upper(),
        log_json=_bool("LIVECODE_LOG_JSON", True),
        trusted_proxy_hops=_int("LIVECODE_TRUSTED_PROXY_HOPS", 0),
        metrics_token=_env("LIVECODE_METRICS_TOKEN"),
    )
    values.update(_stream_and_connection_settings())
    reconcile = _env("LIVECODE_RECONCILE_INTERVAL_S")
    if reconcile:
        values["reconcile_interval_s"] = float(reconcile)
    grace = _env("LIVECODE_REQUEUE_GRACE_S")
    if grace:
        values["requeue_grace_s"] = float(grace)
    values.update(overrides)
    if values["registration"] not in {"open", "invite", "closed"}:
        raise ConfigError(f"LIVECODE_REGISTRATION must be 'open', 'invite' or 'closed', got {values['registration']!r}")
    if values["trusted_proxy_hops"] < 0:
        raise ConfigError("LIVECODE_TRUSTED_PROXY_HOPS must be 0 or more")
    for name in ("max_stored_executions", "max_sessions", "execution_retention_days", "source_gc_grace_s"):
        if values[name] < 0:
            raise ConfigError(f"LIVECODE_{name.upper()} must be 0 or more, got {values[name]}")
    if values["storage_cleanup_interval_s"] <= 0 or values["storage_cleanup_batch"] < 1:
        raise ConfigError("LIVECODE_STORAGE_CLEANUP_INTERVAL_S and LIVECODE_STORAGE_CLEANUP_BATCH must be positive")
    if values["sandbox"] not in {"bwrap", "none"}:
        raise ConfigError(f"LIVECODE_SANDBOX must be 'bwrap' or 'none', got {values['sandbox']!r}")
    return Settings(**values)


def _stream_and_connection_settings() -> dict[str, Any]:
    import ipaddress

    def seconds(name: str, default: float) -> float:
        raw = _env(name)
        try:
            value = default if raw is None else float(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from exc
        if value <= 0:
            raise ConfigError(f"{name} must be more than 0 seconds, got {raw!r}")
        return value

    def count(name: str, default: int) -> int:
        value = _int(name, default)
        if value < 0:
            raise ConfigError(f"{name} must be 0 (no cap) or more, got {value}")
        return value

    exempt = [a.strip() for a in (_env("LIVECODE_CONNECTION_LIMIT_EXEMPT") or "").split(",") if a.strip()]
    for network in exempt:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as exc:
            raise ConfigError(f"LIVECODE_CONNECTION_LIMIT_EXEMPT: {network!r} is not an address or network "
                              "(e.g. 10.0.0.5 or 10.0.0.0/8)") from exc
    return dict(
        streams_per_user=count("LIVECODE_STREAMS_PER_USER", 8),
        streams_per_address=count("LIVECODE_STREAMS_PER_ADDRESS", 8),
        send_timeout_s=seconds("LIVECODE_SEND_TIMEOUT_S", 30.0),
        header_timeout_s=seconds("LIVECODE_HEADER_TIMEOUT_S", 10.0),
        body_timeout_s=seconds("LIVECODE_BODY_TIMEOUT_S", 30.0),
        connections_per_address=count("LIVECODE_CONNECTIONS_PER_ADDRESS", 64),
        connections_per_process=max(1, count("LIVECODE_CONNECTIONS_PER_PROCESS", 1000)),
        connection_limit_exempt=tuple(exempt),
    )


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

MAKE_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
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
