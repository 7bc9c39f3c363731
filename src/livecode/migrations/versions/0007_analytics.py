"""analytics: executions.compile_cached, and an index on (queued_at, language) for the admin analytics

`compile_cached` says whether a compiled language's program came from the compile cache (true), was
compiled for this run (false), or was not compiled at all (null: an interpreted language, or a row
written before this column). The analytics endpoint's cache hit rate counts it.

Every analytics figure selects the executions queued in a time range; no index led with
`queued_at` (the others lead with the status or the session), so each query read the whole table.
`language` rides along so that runs per language over time is answered from the index alone.

Revision ID: 0007_analytics
Revises: 0006_multifile
Create Date: 2026-12-03 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_analytics"
down_revision: str | None = "0006_multifile"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_executions_queued_language"


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("compile_cached", sa.Boolean(), nullable=True))
    op.create_index(INDEX, "executions", ["queued_at", "language"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="executions")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("compile_cached")
