"""The history migration (0011_history) on SQLite, up and down: existing sessions start with no
history (history_seq 0), existing executions name no version, and downgrade removes it all."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text

from livecode import migrations as migrate


def test_history_migration_round_trip(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA foreign_keys=ON"))  # as the app's engine
    try:
        migrate.upgrade(engine, "0010_collab")
        with engine.begin() as c:
            c.execute(
                text(
                    "INSERT INTO code_sessions (id, language, source_code, status, version, created_at, "
                    "updated_at) VALUES ('00000000000000000000000000000001', 'python', 'x', 'ACTIVE', 3, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            c.execute(
                text(
                    "INSERT INTO sources (hash, content, size_bytes, last_used_at) VALUES "
                    "('h1', 'x', 1, CURRENT_TIMESTAMP)"
                )
            )
            c.execute(
                text(
                    "INSERT INTO executions (id, session_id, language, source_hash, stdin, args, limits, "
                    "priority, status, stdout_truncated, stderr_truncated, attempts, queued_at) VALUES "
                    "('00000000000000000000000000000002', '00000000000000000000000000000001', 'python', "
                    "'h1', '', '[]', '{}', 'batch', 'COMPLETED', false, false, 1, CURRENT_TIMESTAMP)"
                )
            )
        migrate.upgrade(engine)
        tables = set(inspect(engine).get_table_names())
        assert {"session_versions", "file_sets", "file_set_files"} <= tables
        with engine.connect() as c:
            row = c.execute(text("SELECT history_seq, history_set, history_at, version FROM code_sessions")).one()
        assert tuple(row) == (0, None, None, 3)
        with engine.connect() as c:
            assert c.execute(text("SELECT history_version FROM executions")).scalar_one() is None
        assert "history_version" in {col["name"] for col in inspect(engine).get_columns("executions")}
        migrate.downgrade(engine, "0010_collab")
        tables = set(inspect(engine).get_table_names())
        assert not {"session_versions", "file_sets", "file_set_files"} & tables
        assert "history_seq" not in {col["name"] for col in inspect(engine).get_columns("code_sessions")}
        with engine.connect() as c:
            assert c.execute(text("SELECT version FROM code_sessions")).scalar_one() == 3
            # no table copy cascaded to the executions, either way
            assert c.execute(text("SELECT count(*) FROM executions")).scalar_one() == 1
    finally:
        engine.dispose()
