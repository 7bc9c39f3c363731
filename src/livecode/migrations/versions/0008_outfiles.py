"""execution_outputs: the files a run leaves in out/, kept with (and deleted with) their execution

Revision ID: 0008_outfiles
Revises: 0007_analytics
Create Date: 2026-12-03 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_outfiles"
down_revision: str | None = "0007_analytics"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("files_truncated", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "execution_outputs",
        sa.Column("execution_id", sa.Uuid(), sa.ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("path", sa.String(1024), primary_key=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_execution_outputs_created_at", "execution_outputs", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_execution_outputs_created_at", "execution_outputs")
    op.drop_table("execution_outputs")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("files_truncated")
