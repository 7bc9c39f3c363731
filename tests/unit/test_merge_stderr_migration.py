"""The merge_stderr migration on SQLite, up and down: a run made before it keeps its output
streams apart (merge_stderr false), and downgrade removes the column and keeps the run."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text

from livecode import migrations as migrate
from tests.support.migration_cases import revision_before


def test_merge_stderr_migration_round_trip(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = create_engine(url)
    event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA foreign_keys=ON"))  # as the app's engine
    before = revision_before(url, "merge_stderr")
    try:
        migrate.upgrade(engine, before)
        with engine.begin() as c:
            c.execute(text(
                "INSERT INTO code_sessions (id, language, source_code, status, version, created_at, updated_at) "
                "VALUES ('00000000000000000000000000000001', 'python', 'x', 'ACTIVE', 1, CURRENT_TIMESTAMP, "
                "CURRENT_TIMESTAMP)"))
            c.execute(text("INSERT INTO sources (hash, content, size_bytes, last_used_at) VALUES "
                           "('h1', 'x', 1, CURRENT_TIMESTAMP)"))
            c.execute(text(
                "INSERT INTO executions (id, session_id, language, source_hash, stdin, args, limits, priority, "
                "status, stdout_truncated, stderr_truncated, attempts, queued_at) VALUES "
                "('00000000000000000000000000000002', '00000000000000000000000000000001', 'python', 'h1', '', "
                "'[]', '{}', 'batch', 'COMPLETED', false, false, 1, CURRENT_TIMESTAMP)"))
        migrate.upgrade(engine)
        with engine.connect() as c:
            assert c.execute(text("SELECT merge_stderr FROM executions")).scalar_one() in (False, 0)
        migrate.downgrade(engine, before)
        assert "merge_stderr" not in {col["name"] for col in inspect(engine).get_columns("executions")}
        with engine.connect() as c:
            assert c.execute(text("SELECT count(*) FROM executions")).scalar_one() == 1
    finally:
        engine.dispose()
