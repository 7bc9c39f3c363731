"""0006_multifile on SQLite (the embedded database): upgrade adds the columns and the file table,
and downgrade removes them without losing a session or an execution (a table copy of
code_sessions would cascade to every execution with foreign keys on)."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text

from livecode import migrations as migrate


def test_multifile_migration_round_trip_keeps_every_row(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA foreign_keys=ON"))  # as the app's engine
    migrate.upgrade(engine)
    sid, eid = uuid.uuid4().hex, uuid.uuid4().hex
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO code_sessions (id, language, source_code, files, entry, status, version, "
                "created_at, updated_at) VALUES (:s, 'python', 'import a', :f, 'main.py', 'ACTIVE', 1, "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"s": sid, "f": '[{"path": "main.py", "content": null}, {"path": "a.py", "content": ""}]'},
        )
        c.execute(
            text(
                "INSERT INTO sources (hash, content, size_bytes, last_used_at) VALUES "
                "('h1', 'import a', 8, CURRENT_TIMESTAMP), ('h2', '', 0, CURRENT_TIMESTAMP)"
            )
        )
        c.execute(
            text(
                "INSERT INTO executions (id, session_id, language, source_hash, entry, stdin, args, limits, "
                "priority, status, stdout_truncated, stderr_truncated, attempts, queued_at) VALUES "
                "(:e, :s, 'python', 'h1', 'main.py', '', '[]', '{}', 'batch', 'COMPLETED', false, false, 1, "
                "CURRENT_TIMESTAMP)"
            ),
            {"e": eid, "s": sid},
        )
        c.execute(
            text(
                "INSERT INTO execution_files (execution_id, position, path, source_hash) VALUES "
                "(:e, 0, 'main.py', 'h1'), (:e, 1, 'a.py', 'h2')"
            ),
            {"e": eid},
        )
    migrate.downgrade(engine, "0005_cases")
    with engine.begin() as c:
        assert c.execute(text("SELECT count(*) FROM executions")).scalar() == 1
        assert c.execute(text("SELECT source_code FROM code_sessions")).scalar() == "import a"
        insp = inspect(c)
        assert "execution_files" not in insp.get_table_names()
        assert "files" not in {col["name"] for col in insp.get_columns("code_sessions")}
        assert "entry" not in {col["name"] for col in insp.get_columns("executions")}
    migrate.upgrade(engine)
    with engine.begin() as c:
        assert c.execute(text("SELECT count(*) FROM executions WHERE entry IS NULL")).scalar() == 1
    engine.dispose()
