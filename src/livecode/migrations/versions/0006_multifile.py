"""multi-file programs: a session's files and entry; an execution's snapshot of its files

A session keeps its entry's content in `source_code` (so every reader of the single-file form
keeps working) and, for a multi-file program, the whole set in `files` (JSON, in the user's
order, with the entry's content left out as null). An execution of a multi-file program names
its entry and lists every file in `execution_files`, each content stored once in `sources`.
Single-file sessions and executions keep NULL in the new columns and have no file rows.

Revision ID: 0006_multifile
Revises: 0005_cases
Create Date: 2026-12-03 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_multifile"
down_revision: str | None = "0005_cases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("code_sessions") as batch:
        batch.add_column(sa.Column("files", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("entry", sa.String(1024), nullable=True))
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("entry", sa.String(1024), nullable=True))
    op.create_table(
        "execution_files",
        sa.Column("execution_id", sa.Uuid(), sa.ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column(
            "source_hash",
            sa.String(64),
            sa.ForeignKey("sources.hash", name="fk_execution_files_source_hash"),
            nullable=False,
        ),
    )
    op.create_index("ix_execution_files_source_hash", "execution_files", ["source_hash"])


def downgrade() -> None:
    op.drop_index("ix_execution_files_source_hash", "execution_files")
    op.drop_table("execution_files")
    # Plain DROP COLUMN (SQLite 3.35+ has it), not a batch table copy: on SQLite with foreign
    # keys on, copying code_sessions drops the old table, which would cascade to every execution.
    for table, column in (("executions", "entry"), ("code_sessions", "entry"), ("code_sessions", "files")):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
