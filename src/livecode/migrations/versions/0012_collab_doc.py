"""a co-edited session's document state (Yjs) beside its text, and the version it was merged at

Revision ID: 0012_collab_doc
Revises: 0011_history
Create Date: 2026-12-04 15:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_collab_doc"
down_revision: str | None = "0011_history"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("code_sessions", sa.Column("doc_state", sa.LargeBinary(), nullable=True))
    op.add_column("code_sessions", sa.Column("doc_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("code_sessions", "doc_version")
    op.drop_column("code_sessions", "doc_state")
