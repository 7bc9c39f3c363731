"""The test cases' migration (0005_cases) checked on any database, up and down; where a migration
sits in the chain."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import create_engine, inspect, text

from livecode import migrations as migrate


def revision_before(url: str, suffix: str) -> str:
    """The revision the migration named `..._{suffix}` follows (the chain is re-ordered when
    branches merge, so tests never name it)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config(url))
    [down] = [rev.down_revision for rev in script.walk_revisions() if rev.revision.endswith(f"_{suffix}")]
    assert isinstance(down, str)
    return down


TESTS = [{"name": "one", "stdin": "1 2", "args": [], "expected_output": "3"}]


def check_testcases_migration(url: str) -> None:
    """0005_cases on an existing database: old executions get NULL tests (no tests), the columns
    hold JSON, and downgrade removes them again."""
    engine = create_engine(url)
    sqlite = url.startswith("sqlite")
    key = (lambda u: u.hex) if sqlite else (lambda u: u)
    migrate.upgrade(engine, "0004_sources")
    sid, eid = uuid.uuid4(), uuid.uuid4()
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO code_sessions (id, language, source_code, status, version, created_at, updated_at) "
                "VALUES (:s, 'python', 'x', 'ACTIVE', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"s": key(sid)},
        )
        c.execute(
            text(
                "INSERT INTO sources (hash, content, size_bytes, last_used_at) VALUES ('h', 'x', 1, CURRENT_TIMESTAMP)"
            )
        )
        c.execute(
            text(
                "INSERT INTO executions (id, session_id, language, source_hash, stdin, args, limits, priority, status, "
                "stdout_truncated, stderr_truncated, attempts, queued_at) VALUES (:e, :s, 'python', 'h', '', '[]', "
                "'{}', 'batch', 'COMPLETED', false, false, 1, CURRENT_TIMESTAMP)"
            ),
            {"e": key(eid), "s": key(sid)},
        )
    migrate.upgrade(engine)
    with engine.begin() as c:
        assert c.execute(text("SELECT tests, compare_mode, test_results FROM executions")).one() == (None, None, None)
        c.execute(text("UPDATE executions SET tests = :t, compare_mode = 'tokens'"), {"t": json.dumps(TESTS)})
        stored = c.execute(text("SELECT tests FROM executions")).scalar_one()
        assert (json.loads(stored) if isinstance(stored, str) else stored) == TESTS
    migrate.downgrade(engine, "0004_sources")
    with engine.begin() as c:
        columns = {col["name"] for col in inspect(c).get_columns("executions")}
        assert not columns & {"tests", "compare_mode", "test_results"}
        assert c.execute(text("SELECT count(*) FROM executions")).scalar_one() == 1
    migrate.upgrade(engine)
    engine.dispose()
