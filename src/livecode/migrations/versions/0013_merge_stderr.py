"""executions.merge_stderr: the program's stderr goes into its stdout (2>&1)

Revision ID: 0013_merge_stderr
Revises: 0012_collab_doc
Create Date: 2026-12-04 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_merge_stderr"
down_revision: str | None = "0012_collab_doc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("merge_stderr", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("merge_stderr")
