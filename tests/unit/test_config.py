from __future__ import annotations

import pytest

from livecode.config import ConfigError, load_settings


def test_embedded_defaults_need_nothing(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("LIVECODE_DATA_DIR", str(tmp_path))
    s = load_settings()
    assert s.embedded and s.database_url.startswith("sqlite:///") and s.broker_url == "memory://"
    assert len(s.secret_key) == 64
    assert load_settings().secret_key == s.secret_key  # kept across restarts
    assert (s.db_pool_size, s.db_max_overflow, s.db_pool_recycle, s.db_pool_pre_ping) == (10, 20, 3600, True)


def test_distributed_fails_fast_without_secret(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1/db")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_settings()
    monkeypatch.setenv("SECRET_KEY", "s")
    s = load_settings()
    assert s.mode == "distributed" and s.database_url.startswith("postgresql+psycopg://")
    assert s.auth_required is True


def test_pool_settings_overridable(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DB_POOL_SIZE", "3")
    monkeypatch.setenv("DB_POOL_PRE_PING", "false")
    s = load_settings("embedded")
    assert s.db_pool_size == 3 and s.db_pool_pre_ping is False
    monkeypatch.setenv("DB_POOL_SIZE", "three")
    with pytest.raises(ConfigError, match="DB_POOL_SIZE"):
        load_settings("embedded")


def test_sandbox_none_must_be_explicit(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LIVECODE_SANDBOX", "docker")
    with pytest.raises(ConfigError):
        load_settings("embedded")


def test_stream_and_connection_limits(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    s = load_settings("embedded")
    assert (s.streams_per_user, s.streams_per_address, s.connections_per_address, s.connections_per_process) == (
        8, 8, 64, 1000)
    assert (s.send_timeout_s, s.header_timeout_s, s.body_timeout_s) == (30.0, 10.0, 30.0)
    monkeypatch.setenv("LIVECODE_STREAMS_PER_USER", "0")
    monkeypatch.setenv("LIVECODE_HEADER_TIMEOUT_S", "2.5")
    monkeypatch.setenv("LIVECODE_CONNECTION_LIMIT_EXEMPT", "10.0.0.5, 10.1.0.0/16")
    s = load_settings("embedded")
    assert s.streams_per_user == 0 and s.header_timeout_s == 2.5
    assert s.connection_limit_exempt == ("10.0.0.5", "10.1.0.0/16")
    for name, bad, match in [("LIVECODE_SEND_TIMEOUT_S", "0", "more than 0"),
                             ("LIVECODE_BODY_TIMEOUT_S", "soon", "seconds"),
                             ("LIVECODE_STREAMS_PER_ADDRESS", "-1", "0 \\(no cap\\)"),
                             ("LIVECODE_CONNECTION_LIMIT_EXEMPT", "proxy.local", "not an address")]:
        monkeypatch.setenv(name, bad)
        with pytest.raises(ConfigError, match=match):
            load_settings("embedded")
        monkeypatch.delenv(name)
