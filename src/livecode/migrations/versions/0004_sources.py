"""sources: each distinct program text stored once; executions reference it by sha256

Every execution used to carry its own copy of the source: a batch of 1000 runs of one 26 KB
session stored it 1000 times. Existing copies move into `sources` (deduplicated) and the column is
dropped; `executions.finished_at` gets an index for the retention job.

The hash is the sha256 of the text's UTF-8 encoding, as the application computes it
(services/storage.py): PostgreSQL computes it in SQL (one pass over a large table), SQLite (the
embedded mode, small databases) in Python.

Revision ID: 0004_sources
Revises: 0003_accounts
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence
from hashlib import sha256

import sqlalchemy as sa
from alembic import op

revision: str = "0004_sources"
down_revision: str | None = "0003_accounts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FK = "fk_executions_source_hash"
_BATCH = 500

executions = sa.table(
    "executions",
    sa.column("id", sa.Uuid()),
    sa.column("source_code", sa.Text()),
    sa.column("source_hash", sa.String(64)),
    sa.column("queued_at", sa.DateTime(timezone=True)),
)
sources = sa.table(
    "sources",
    sa.column("hash", sa.String(64)),
    sa.column("content", sa.Text()),
    sa.column("size_bytes", sa.Integer()),
    sa.column("last_used_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_sources_last_used_at", "sources", ["last_used_at"])
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("source_hash", sa.String(64), nullable=True))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("UPDATE executions SET source_hash = encode(sha256(convert_to(source_code, 'UTF8')), 'hex')")
        op.execute(
            "INSERT INTO sources (hash, content, size_bytes, last_used_at) "
            "SELECT DISTINCT ON (source_hash) source_hash, source_code, octet_length(source_code), queued_at "
            "FROM executions ORDER BY source_hash, queued_at DESC"
        )
    else:
        _move_in_python(bind)
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("source_code")
        batch.alter_column("source_hash", existing_type=sa.String(64), nullable=False)
        batch.create_foreign_key(FK, "sources", ["source_hash"], ["hash"])
        batch.create_index("ix_executions_source_hash", ["source_hash"])
        batch.create_index("ix_executions_finished_at", ["finished_at"])


def _move_in_python(bind: sa.engine.Connection) -> None:
    last = None
    while True:
        q = sa.select(executions.c.id, executions.c.source_code, executions.c.queued_at)
        q = q.order_by(executions.c.id).limit(_BATCH)
        if last is not None:
            q = q.where(executions.c.id > last)
        rows = bind.execute(q).all()
        if not rows:
            break
        for row in rows:
            digest = sha256(row.source_code.encode("utf-8", "surrogatepass")).hexdigest()
            bind.execute(sa.update(executions).where(executions.c.id == row.id).values(source_hash=digest))
            seen = bind.execute(sa.select(sources.c.last_used_at).where(sources.c.hash == digest)).first()
            if seen is None:
                bind.execute(sa.insert(sources).values(
                    hash=digest, content=row.source_code,
                    size_bytes=len(row.source_code.encode("utf-8", "surrogatepass")), last_used_at=row.queued_at,
                ))
            elif row.queued_at is not None and (seen.last_used_at is None or row.queued_at > seen.last_used_at):
                bind.execute(sa.update(sources).where(sources.c.hash == digest).values(last_used_at=row.queued_at))
        last = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("source_code", sa.Text(), nullable=True))
    op.execute(
        "UPDATE executions SET source_code = (SELECT content FROM sources WHERE sources.hash = executions.source_hash)"
    )
    with op.batch_alter_table("executions") as batch:
        batch.drop_index("ix_executions_finished_at")
        batch.drop_index("ix_executions_source_hash")
        batch.drop_constraint(FK, type_="foreignkey")
        batch.drop_column("source_hash")
        batch.alter_column("source_code", existing_type=sa.Text(), nullable=False)
    op.drop_index("ix_sources_last_used_at", "sources")
    op.drop_table("sources")
