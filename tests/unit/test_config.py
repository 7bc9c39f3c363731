from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from livecode.config import MAKE_SECRET, ConfigError, check_secret_key, load_settings

SRC = str(Path(__file__).resolve().parents[2] / "src")


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
    monkeypatch.setenv("SECRET_KEY", secrets.token_urlsafe(48))
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


@pytest.mark.parametrize("key", [
    "change-me", "CHANGE-ME", "changeme", "test-secret-key-not-for-production", "secret",
    "change-me-change-me-change-me-change-me",  # long, but still the placeholder
    "s", "0123456789abcdef0123456789abcde",  # 31 bytes
    "a" * 64, "abcd" * 16, "0123456789abcdef" * 4, "password" * 8,  # long, low entropy
])
def test_guessable_secret_keys_are_refused_with_how_to_make_one(monkeypatch, key: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1/db")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("SECRET_KEY", key)
    with pytest.raises(ConfigError, match="SECRET_KEY") as exc:
        load_settings()
    assert MAKE_SECRET in str(exc.value)
    if len(key) > 8:
        assert key not in str(exc.value)  # the message never echoes the key


@pytest.mark.parametrize("make", [lambda: secrets.token_urlsafe(48), lambda: secrets.token_hex(32),
                                  lambda: secrets.token_hex(16), lambda: secrets.token_urlsafe(32)])
def test_random_secret_keys_are_accepted(make) -> None:  # type: ignore[no-untyped-def]
    for _ in range(200):
        check_secret_key(make())


def _settings_in(cwd: Path, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """load_settings() in a fresh process (a .env file changes os.environ for good)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVECODE_", "DATABASE_", "REDIS_", "SECRET_"))}
    env.update(PYTHONPATH=SRC, HOME=str(cwd), **env_extra)
    # A script file, as the `livecode` command is: with `python -c` python-dotenv would look in the
    # working directory anyway (it treats that as an interactive session).
    script = cwd / "show_settings.py"
    script.write_text("from livecode.config import load_settings\n"
                      "s = load_settings()\nprint(s.mode, s.max_source_bytes)\n")
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def test_dotenv_is_read_from_the_working_directory(tmp_path: Path) -> None:
    """`cp .env.example .env` works wherever the package is installed, not only in a checkout."""
    (tmp_path / ".env").write_text(f"LIVECODE_MAX_SOURCE_BYTES=12345\nLIVECODE_DATA_DIR={tmp_path / 'data'}\n")
    out = _settings_in(tmp_path, {})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["embedded", "12345"]


def test_dotenv_path_from_the_environment(tmp_path: Path) -> None:
    elsewhere = tmp_path / "conf" / "livecode.env"
    elsewhere.parent.mkdir()
    elsewhere.write_text(f"LIVECODE_MAX_SOURCE_BYTES=23456\nLIVECODE_DATA_DIR={tmp_path / 'data'}\n")
    (tmp_path / ".env").write_text("LIVECODE_MAX_SOURCE_BYTES=1\n")  # not read: the named file wins
    out = _settings_in(tmp_path, {"LIVECODE_ENV_FILE": str(elsewhere)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["embedded", "23456"]
    missing = _settings_in(tmp_path, {"LIVECODE_ENV_FILE": str(tmp_path / "nope.env")})
    assert missing.returncode != 0 and "LIVECODE_ENV_FILE" in missing.stderr


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"LIVECODE_MAX_SOURCE_BYTES=12345\nLIVECODE_DATA_DIR={tmp_path / 'data'}\n")
    out = _settings_in(tmp_path, {"LIVECODE_MAX_SOURCE_BYTES": "777"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["embedded", "777"]


def _cgroup(root: Path, path: str, **files: str) -> None:
    d = root / path.lstrip("/")
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name.replace("_", ".")).write_text(text)


def test_worker_concurrency_defaults_to_one_more_run_than_the_cpus_it_may_use(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A run waits on the database, Redis and its sandbox's start between bursts of CPU: with one
    # run per core the cores sit idle in those waits (docs/performance.md, issue 11).
    from livecode.config import default_worker_concurrency, usable_cpus

    monkeypatch.delenv("LIVECODE_WORKER_CONCURRENCY", raising=False)
    monkeypatch.setenv("LIVECODE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    root = tmp_path / "cgroup"
    proc_cgroup = tmp_path / "proc-self-cgroup"
    proc_cgroup.write_text("0::/system.slice/worker.service\n")
    _cgroup(root, "/system.slice/worker.service", cpu_max="max 100000\n")
    assert usable_cpus(root, proc_cgroup) == 2
    assert default_worker_concurrency(root, proc_cgroup) == 3
    # A container's CPU quota (docker --cpus 1.5, a Kubernetes CPU limit) bounds it, on any
    # ancestor of the process's cgroup; the affinity still caps it.
    _cgroup(root, "/system.slice", cpu_max="150000 100000\n")
    assert usable_cpus(root, proc_cgroup) == 2  # 1.5 CPUs: two run at once part of the time
    _cgroup(root, "/system.slice", cpu_max="100000 100000\n")
    assert (usable_cpus(root, proc_cgroup), default_worker_concurrency(root, proc_cgroup)) == (1, 2)
    # cgroup v1 (or hybrid): the cpu controller's CFS quota, on the container's own mount or on the
    # process's path under the host's.
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct").mkdir(parents=True)
    proc_v1 = tmp_path / "proc-self-cgroup-v1"
    proc_v1.write_text("4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n")
    (v1 / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cpus(v1, proc_v1) == 2  # no quota
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("100000\n")
    assert (usable_cpus(v1, proc_v1), default_worker_concurrency(v1, proc_v1)) == (1, 2)
    host = v1 / "cpu,cpuacct" / "docker" / "abc"
    host.mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    (host / "cpu.cfs_period_us").write_text("100000\n")
    (host / "cpu.cfs_quota_us").write_text("50000\n")
    assert usable_cpus(v1, proc_v1) == 1
    # A big host stops at 8 (each run holds a slot uid and up to its memory limit).
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert default_worker_concurrency(tmp_path / "none", tmp_path / "none") == 8
    # The setting is that default unless given.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert load_settings().worker_concurrency == default_worker_concurrency()
    monkeypatch.setenv("LIVECODE_WORKER_CONCURRENCY", "2")
    assert load_settings().worker_concurrency == 2
