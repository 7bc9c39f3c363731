"""executions.tests, compare_mode, test_results: test cases with verdicts (issue 13, part 1)

The definitions as submitted and, once finished, each test's result, on the execution row itself:
the worker's final UPDATE writes the status and every test's result in one statement.

Revision ID: 0005_cases
Revises: 0004_sources
Create Date: 2026-12-03 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_cases"
down_revision: str | None = "0004_sources"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("tests", sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column("compare_mode", sa.String(64), nullable=True))
        batch.add_column(sa.Column("test_results", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("test_results")
        batch.drop_column("compare_mode")
        batch.drop_column("tests")
