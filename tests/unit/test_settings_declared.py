"""Each setting is declared once (config.py, sandbox/config.py); `.env.example`, the settings
tables of README/docs, the deployment files and the code all agree with those declarations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from livecode import settings_spec as spec
from livecode.config import ConfigError, Settings, env_example, load_settings
from livecode.sandbox import SandboxConfig

ROOT = Path(__file__).resolve().parents[2]
DECLARED = {d.env: d for d in spec.declarations(Settings) if d.env}
SETTING_NAME = re.compile(r"\b(?:LIVECODE_[A-Z0-9_]*[A-Z0-9]|DB_[A-Z_]*[A-Z]|DATABASE_URL|DATABASE_REPLICA_URL|"
                          r"REDIS_URL|SECRET_KEY|PROMETHEUS_MULTIPROC_DIR)\b")
# Variables that are not settings of the service: the tests', the scripts', a CLI input, and the
# name of the .env file itself (read before it).
NOT_SETTINGS = re.compile(r"LIVECODE_(TEST_|CGROUP_V2_).*|LIVECODE_(ARTIFACTS|FUZZ_EXAMPLES|PLAYGROUND_SCREENSHOT|"
                          r"PASSWORD|ENV_FILE)|DB_POOL_(CHECKED_OUT|OVERFLOW)|DATABASE_UNAVAILABLE")


def test_env_example_is_generated_from_the_declarations() -> None:
    assert (ROOT / ".env.example").read_text() == env_example(), (
        "regenerate it: livecode config env-example > .env.example")


def test_every_setting_is_declared_once_with_a_doc() -> None:
    envs = [d.env for d in spec.declarations(Settings) if d.env]
    assert len(envs) == len(set(envs))
    names = [d.name for d in spec.declarations(Settings)]
    assert len(names) == len(set(names))
    declared = list(spec.declarations(Settings))
    for before, d in zip([None, *declared], declared, strict=False):
        # an empty doc continues the one before it (e.g. LIVECODE_QUEUE_LOW after LIVECODE_QUEUE_HIGH)
        assert d.doc or (before is not None and not d.section), d.name
    assert {d.env for d in spec.declarations(SandboxConfig)} <= set(envs)  # the sandbox's are included


def _files() -> list[Path]:
    found = [ROOT / "README.md", ROOT / ".env.example", *ROOT.glob("docs/*.md"), *ROOT.glob("deploy/**/*"),
             *(ROOT / "src" / "livecode").rglob("*.py")]
    return [p for p in found if p.is_file() and p.suffix in {"", ".md", ".py", ".yml", ".yaml", ".example"}]


def test_every_variable_the_docs_deployments_and_code_name_is_declared() -> None:
    unknown = {(name, str(path.relative_to(ROOT))) for path in _files()
               for name in SETTING_NAME.findall(path.read_text())
               if name not in DECLARED and not NOT_SETTINGS.fullmatch(name)}
    assert not unknown, f"named but not declared in config.py / sandbox/config.py: {sorted(unknown)}"


def test_only_the_settings_loader_reads_settings_from_the_environment() -> None:
    reads = re.compile(r"environ(?:\.get\(|\[)\s*[\"']([A-Z0-9_]+)[\"']")
    allowed = {"config.py", "settings_spec.py"}
    found = []
    for path in (ROOT / "src" / "livecode").rglob("*.py"):
        for name in reads.findall(path.read_text()):
            if name in DECLARED and path.name not in allowed:
                found.append((str(path.relative_to(ROOT)), name))
    # cli.py hands the metrics directory to prometheus_client, which reads only the environment.
    assert sorted(found) == [("src/livecode/cli.py", "PROMETHEUS_MULTIPROC_DIR")]


def _table_rows() -> list[tuple[str, list[str], list[str]]]:
    """(file, variables, defaults) of each `| `VAR` | default | ... |` row in README.md and docs/."""
    rows = []
    for path in [ROOT / "README.md", *ROOT.glob("docs/*.md")]:
        for line in path.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 3 or not SETTING_NAME.search(cells[0]):
                continue
            names = re.findall(r"`([A-Z0-9_]+)`", cells[0])
            first = names[0]
            # `LIVECODE_SANDBOX_IO_READ_MBPS`, `_WRITE_MBPS`: a fragment shares the first one's prefix
            full = [n if not n.startswith("_") else next(
                (first[:i] + n for i in range(len(first)) if first[:i] + n in DECLARED), n) for n in names]
            defaults = cells[1].replace("`", "").split(", ") if len(full) > 1 else [cells[1].replace("`", "")]
            rows.append((path.name, full, defaults))
    return rows


def test_the_settings_tables_in_the_docs_agree_with_the_declarations() -> None:
    rows = _table_rows()
    assert len(rows) >= 20  # the tables of docs/operations.md and docs/sandbox.md are read
    for where, names, defaults in rows:
        assert len(names) == len(defaults), (where, names)
        for name, cell in zip(names, defaults, strict=True):
            assert name in DECLARED, f"{where}: {name} is not declared"
            shown = DECLARED[name].shown() or "empty"
            assert re.match(re.escape(shown) + r"(?![0-9])", cell), (
                f"{where}: {name} default {cell!r}, declared {shown!r}")


def test_values_read_from_the_environment_are_checked_with_a_message_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIVECODE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LIVECODE_SANDBOX_SLOTS", "8")
    monkeypatch.setenv("LIVECODE_SANDBOX_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("LIVECODE_API_THREADS", "16")
    monkeypatch.setenv("LIVECODE_REGISTRATION", "Invite")
    s = load_settings("embedded")
    assert s.sandbox_config.slots == 8 and s.sandbox_config.lock_dir == tmp_path / "locks"
    assert s.sandbox_config.uid_base == SandboxConfig().uid_base
    assert (s.api_threads, s.registration) == (16, "invite")
    monkeypatch.setenv("LIVECODE_SANDBOX_POOL", "two")
    with pytest.raises(ConfigError, match="LIVECODE_SANDBOX_POOL must be an integer, got 'two'"):
        load_settings("embedded")
    monkeypatch.delenv("LIVECODE_SANDBOX_POOL")
    with pytest.raises(ConfigError, match="LIVECODE_REGISTRATION must be 'open' or 'invite' or 'closed'"):
        load_settings("embedded", registration="anyone")  # values set in code are checked too


def test_the_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in DECLARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIVECODE_DATA_DIR", str(tmp_path))
    s = load_settings("embedded")
    sandbox = {d.name for d in spec.declarations(SandboxConfig)}
    for d in spec.declarations(Settings):
        if d.name not in {"mode", "database_url", "secret_key", "data_dir", *sandbox}:
            assert getattr(s, d.name) == d.default, d.name
    assert s.sandbox_config == SandboxConfig() and s.api_threads is None and s.auth_required is False
