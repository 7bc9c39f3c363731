"""history: a session's versions (issue 15, part 1), their file sets (content-addressed, the
contents in `sources`), and the version each execution ran

Revision ID: 0011_history
Revises: 0010_collab
Create Date: 2026-12-03 17:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_history"
down_revision: str | None = "0010_collab"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "file_sets",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("entry", sa.String(1024), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_file_sets_last_used_at", "file_sets", ["last_used_at"])
    op.create_table(
        "file_set_files",
        sa.Column("set_hash", sa.String(64), sa.ForeignKey("file_sets.hash", ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column(
            "source_hash",
            sa.String(64),
            sa.ForeignKey("sources.hash", name="fk_file_set_files_source_hash"),
            nullable=False,
        ),
    )
    op.create_index("ix_file_set_files_source_hash", "file_set_files", ["source_hash"])
    op.create_table(
        "session_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.Uuid(), sa.ForeignKey("code_sessions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("author_id", sa.Uuid()),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("label", sa.String(200)),
        sa.Column(
            "set_hash",
            sa.String(64),
            sa.ForeignKey("file_sets.hash", name="fk_session_versions_set_hash"),
            nullable=False,
        ),
        sa.Column("execution_id", sa.Uuid()),
        sa.UniqueConstraint("session_id", "number", name="uq_session_versions_number"),
    )
    op.create_index("ix_session_versions_set_hash", "session_versions", ["set_hash"])
    op.create_index("ix_session_versions_created_at", "session_versions", ["created_at"])
    # Plain ADD / DROP COLUMN, never a batch table copy: on SQLite with foreign keys on, copying
    # code_sessions drops the old table, which would cascade to every execution.
    op.add_column("code_sessions", sa.Column("history_seq", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("code_sessions", sa.Column("history_set", sa.String(64)))
    op.add_column("code_sessions", sa.Column("history_at", sa.DateTime(timezone=True)))
    op.add_column("executions", sa.Column("history_version", sa.Integer()))


def downgrade() -> None:
    for table, column in (
        ("executions", "history_version"),
        ("code_sessions", "history_at"),
        ("code_sessions", "history_set"),
        ("code_sessions", "history_seq"),
    ):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    op.drop_table("session_versions")
    op.drop_table("file_set_files")
    op.drop_table("file_sets")
