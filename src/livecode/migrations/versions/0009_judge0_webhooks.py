"""judge0 submissions and webhooks: the Judge0 API's per-submission extras, webhook secrets, the
table of due deliveries, and an API key's default callback URL

Revision ID: 0009_judge0
Revises: 0008_outfiles
Create Date: 2026-12-03 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_judge0"
down_revision: str | None = "0008_outfiles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("callback_url", sa.Text()))
    op.create_table(
        "judge0_submissions",
        sa.Column("execution_id", sa.Uuid(), sa.ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_id", sa.Uuid()),
        sa.Column("language_id", sa.Integer(), nullable=False),
        sa.Column("expected_output", sa.LargeBinary()),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_judge0_submissions_user_id", "judge0_submissions", ["user_id"])
    op.create_index("ix_judge0_submissions_created_at", "judge0_submissions", ["created_at"])
    op.create_table(
        "webhook_secrets",
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("execution_id", sa.Uuid(), sa.ForeignKey("executions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tries", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_webhook_deliveries_execution_id", "webhook_deliveries", ["execution_id"])
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_secrets")
    op.drop_table("judge0_submissions")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("callback_url")
