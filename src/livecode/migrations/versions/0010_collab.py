"""session sharing: members (editor or viewer) and share links with a role and an expiry

Revision ID: 0010_collab
Revises: 0009_judge0
Create Date: 2026-12-03 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_collab"
down_revision: str | None = "0009_judge0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_members",
        sa.Column("session_id", sa.Uuid(), sa.ForeignKey("code_sessions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_id", sa.Uuid(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True)),
        sa.Column("added_by", sa.Uuid()),
    )
    # "Which sessions can this user see" walks members by user.
    op.create_index("ix_session_members_user_id", "session_members", ["user_id"])
    op.create_table(
        "session_share_links",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("session_id", sa.Uuid(), sa.ForeignKey("code_sessions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("redeemed", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.create_index("ix_session_share_links_session_id", "session_share_links", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_session_share_links_session_id", table_name="session_share_links")
    op.drop_table("session_share_links")
    op.drop_index("ix_session_members_user_id", table_name="session_members")
    op.drop_table("session_members")
