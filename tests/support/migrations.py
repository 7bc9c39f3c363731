"""The output-bytes migration (0002_output_bytes) checked on any database, up and down."""

from __future__ import annotations

import uuid

from sqlalchemy import create_engine, text

from livecode import migrate

ANY_BYTES = b"nul\x00 invalid\xff\xfe surrogate\xed\xa0\x80 cr\r ansi\x1b[31m split\xe2\x82"


def check_migration_round_trip(url: str) -> None:
    engine = create_engine(url)
    migrate.upgrade(engine, "0002")
    sid, eid = uuid.uuid4(), uuid.uuid4()
    ids = {"s": sid.hex, "e": eid.hex} if url.startswith("sqlite") else {"s": sid, "e": eid}
    with engine.begin() as c:
        c.execute(text("INSERT INTO code_sessions (id, language, source_code, status, version, created_at, "
                       "updated_at) VALUES (:s, 'python', 'x', 'ACTIVE', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                  ids)
        c.execute(text("INSERT INTO executions (id, session_id, language, source_code, stdin, args, limits, "
                       "priority, status, stdout, stderr, compile_output, stdout_truncated, stderr_truncated, "
                       "attempts, queued_at) VALUES (:e, :s, 'python', 'x', '', '[]', '{}', 'interactive', "
                       "'COMPLETED', :out, NULL, '', false, false, 1, CURRENT_TIMESTAMP)"),
                  {**ids, "out": "café ✓\r\n\x1b[0m"})
    migrate.upgrade(engine)
    with engine.begin() as c:
        row = c.execute(text("SELECT stdout, stderr, compile_output FROM executions")).one()
        # Existing text is kept as its UTF-8 bytes.
        assert (bytes(row[0]), row[1], bytes(row[2])) == ("café ✓\r\n\x1b[0m".encode(), None, b"")
        c.execute(text("UPDATE executions SET stderr = :b"), {"b": ANY_BYTES})
        assert bytes(c.execute(text("SELECT stderr FROM executions")).scalar_one()) == ANY_BYTES
    # Down again: text cannot hold every byte; it gets the text view, without NUL.
    migrate.downgrade(engine, "0002")
    with engine.begin() as c:
        row = c.execute(text("SELECT stdout, stderr FROM executions")).one()
        assert row[0] == "café ✓\r\n\x1b[0m"
        assert row[1] == ANY_BYTES.decode("utf-8", "replace").replace("\x00", "")
    engine.dispose()
