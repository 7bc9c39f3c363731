"""The output-bytes migration (0002_output_bytes) checked on any database, up and down."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, inspect, text

from livecode import migrations as migrate

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


def check_sources_migration(url: str) -> None:
    """0004_sources: executions' copies move into `sources`, one row per distinct text, keyed as
    the application keys them; the one-active-run index survives; downgrade puts the copies back."""
    from hashlib import sha256

    from sqlalchemy.exc import IntegrityError

    engine = create_engine(url)
    sqlite = url.startswith("sqlite")
    migrate.upgrade(engine, "0003_accounts")
    texts = ["print('café ✓')", "print('café ✓')", "print(2)"]
    sid = uuid.uuid4()
    eids = [uuid.uuid4() for _ in texts]
    key = (lambda u: u.hex) if sqlite else (lambda u: u)
    with engine.begin() as c:
        c.execute(text("INSERT INTO code_sessions (id, language, source_code, status, version, created_at, "
                       "updated_at) VALUES (:s, 'python', 'x', 'ACTIVE', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                  {"s": key(sid)})
        for eid, source in zip(eids, texts, strict=True):
            c.execute(text("INSERT INTO executions (id, session_id, language, source_code, stdin, args, limits, "
                           "priority, status, stdout_truncated, stderr_truncated, attempts, queued_at) VALUES "
                           "(:e, :s, 'python', :src, '', '[]', '{}', 'batch', 'COMPLETED', false, false, 1, "
                           "CURRENT_TIMESTAMP)"), {"e": key(eid), "s": key(sid), "src": source})
    migrate.upgrade(engine)
    digest = {t: sha256(t.encode()).hexdigest() for t in texts}
    with engine.begin() as c:
        stored = c.execute(text("SELECT hash, content, size_bytes FROM sources ORDER BY content")).all()
        assert [tuple(r) for r in stored] == sorted(
            [(digest[t], t, len(t.encode())) for t in set(texts)], key=lambda r: r[1])
        refs = dict(c.execute(text("SELECT id, source_hash FROM executions")).all())
        assert {str(k) if not sqlite else k: v for k, v in refs.items()} == {
            (eid.hex if sqlite else str(eid)): digest[t] for eid, t in zip(eids, texts, strict=True)}
        columns = {col["name"] for col in inspect(c).get_columns("executions")}
        assert "source_code" not in columns and "source_hash" in columns
    # The partial unique index is still there: two active interactive runs of one session refused.
    with pytest.raises(IntegrityError), engine.begin() as c:
        for _ in range(2):
            c.execute(text("INSERT INTO executions (id, session_id, language, source_hash, stdin, args, limits, "
                           "priority, status, stdout_truncated, stderr_truncated, attempts, queued_at) VALUES "
                           "(:e, :s, 'python', :h, '', '[]', '{}', 'interactive', 'QUEUED', false, false, 0, "
                           "CURRENT_TIMESTAMP)"), {"e": key(uuid.uuid4()), "s": key(sid), "h": digest["print(2)"]})
    # So is the foreign key: an execution cannot name a source that is not stored.
    with pytest.raises(IntegrityError), engine.begin() as c:
        if sqlite:
            c.exec_driver_sql("PRAGMA foreign_keys=ON")  # as the application's engine does
        c.execute(text("INSERT INTO executions (id, session_id, language, source_hash, stdin, args, limits, "
                       "priority, status, stdout_truncated, stderr_truncated, attempts, queued_at) VALUES "
                       "(:e, :s, 'python', :h, '', '[]', '{}', 'batch', 'QUEUED', false, false, 0, "
                       "CURRENT_TIMESTAMP)"), {"e": key(uuid.uuid4()), "s": key(sid), "h": "0" * 64})
    migrate.downgrade(engine, "0003_accounts")
    with engine.begin() as c:
        back = dict(c.execute(text("SELECT id, source_code FROM executions")).all())
        assert {str(k) if not sqlite else k: v for k, v in back.items()} == {
            (eid.hex if sqlite else str(eid)): t for eid, t in zip(eids, texts, strict=True)}
        assert "sources" not in inspect(c).get_table_names()
    engine.dispose()
