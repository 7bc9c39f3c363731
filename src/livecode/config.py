"""Typed settings read from the environment (and a `.env` file), with defaults.

Every variable is documented in `.env.example`. Embedded mode (`livecode serve`) needs none of
them; distributed mode needs DATABASE_URL, REDIS_URL and SECRET_KEY and fails fast without them.
"""

from __future__ import annotations

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
    login_rate_limit: str = "10/minute"
    rate_limits_enabled: bool = True  # off only to measure what the limits cost (bench/)
    access_token_minutes: int = 15
    refresh_token_days: int = 30
    # Who may create an account: "open" (anyone), "invite" (POST /api/v1/auth/invitations by an
    # admin, or `livecode user invite -`), "closed" (operators only: `livecode user create`).
    registration: str = "open"
    password_min_length: int = 8

    log_level: str = "INFO"
    log_json: bool = True

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
    try:
        from dotenv import load_dotenv

        load_dotenv(override=False)
    except ImportError:  # pragma: no cover - python-dotenv is a dependency
        pass

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
            raise ConfigError("SECRET_KEY is required in distributed mode (e.g. openssl rand -hex 32)")
        secret_key = _embedded_secret(data_dir)

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
        login_rate_limit=_env("LIVECODE_LOGIN_RATE_LIMIT", "10/minute") or "10/minute",
        rate_limits_enabled=_bool("LIVECODE_RATE_LIMITS_ENABLED", True),
        access_token_minutes=_int("LIVECODE_ACCESS_TOKEN_MINUTES", 15),
        refresh_token_days=_int("LIVECODE_REFRESH_TOKEN_DAYS", 30),
        registration=(_env("LIVECODE_REGISTRATION", "open") or "open").lower(),
        password_min_length=_int("LIVECODE_PASSWORD_MIN_LENGTH", 8),
        log_level=(_env("LIVECODE_LOG_LEVEL", "INFO") or "INFO").upper(),
        log_json=_bool("LIVECODE_LOG_JSON", True),
    )
    reconcile = _env("LIVECODE_RECONCILE_INTERVAL_S")
    if reconcile:
        values["reconcile_interval_s"] = float(reconcile)
    grace = _env("LIVECODE_REQUEUE_GRACE_S")
    if grace:
        values["requeue_grace_s"] = float(grace)
    values.update(overrides)
    if values["registration"] not in {"open", "invite", "closed"}:
        raise ConfigError(f"LIVECODE_REGISTRATION must be 'open', 'invite' or 'closed', got {values['registration']!r}")
    if values["sandbox"] not in {"bwrap", "none"}:
        raise ConfigError(f"LIVECODE_SANDBOX must be 'bwrap' or 'none', got {values['sandbox']!r}")
    return Settings(**values)


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
