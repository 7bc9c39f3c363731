"""executions.stdout, stderr, compile_output as bytes (bytea / BLOB): any byte a program writes is kept

Text columns cannot hold what programs write: PostgreSQL's text refuses NUL, and neither keeps
invalid UTF-8. Existing rows are converted as their UTF-8 encoding (exactly the text they held).

Revision ID: 0002_output_bytes
Revises: 0002
Create Date: 2026-12-03 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_output_bytes"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("stdout", "stderr", "compile_output")
_BATCH = 500


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for col in COLUMNS:
            op.execute(f"ALTER TABLE executions ALTER COLUMN {col} TYPE bytea USING convert_to({col}, 'UTF8')")
        return
    with op.batch_alter_table("executions") as batch:
        for col in COLUMNS:
            batch.alter_column(col, type_=sa.LargeBinary(), existing_type=sa.Text(), existing_nullable=True)
    # SQLite keeps a value's storage class whatever the declared type: make the old text values blobs.
    op.execute("UPDATE executions SET " + ", ".join(f"{c} = CAST({c} AS BLOB)" for c in COLUMNS))


def downgrade() -> None:
    # Text cannot hold every byte: the bytes become their text view (invalid UTF-8 replaced by
    # U+FFFD) without NUL. Done in Python, which decodes the same way on both databases.
    bind = op.get_bind()
    with op.batch_alter_table("executions") as batch:
        for col in COLUMNS:
            batch.add_column(sa.Column(f"{col}_text", sa.Text(), nullable=True))
    table = sa.table("executions", sa.column("id", sa.Uuid()),
                     *(sa.column(c, sa.LargeBinary()) for c in COLUMNS),
                     *(sa.column(f"{c}_text", sa.Text()) for c in COLUMNS))
    last = None
    while True:
        q = sa.select(table.c.id, *(table.c[c] for c in COLUMNS)).order_by(table.c.id).limit(_BATCH)
        if last is not None:
            q = q.where(table.c.id > last)
        rows = bind.execute(q).all()
        if not rows:
            break
        for row in rows:
            values = {f"{c}_text": _text(getattr(row, c)) for c in COLUMNS}
            bind.execute(sa.update(table).where(table.c.id == row.id).values(**values))
        last = rows[-1].id
    with op.batch_alter_table("executions") as batch:
        for col in COLUMNS:
            batch.drop_column(col)
    with op.batch_alter_table("executions") as batch:
        for col in COLUMNS:
            batch.alter_column(f"{col}_text", new_column_name=col, existing_type=sa.Text(), existing_nullable=True)


def _text(data: bytes | None) -> str | None:
    return None if data is None else bytes(data).decode("utf-8", "replace").replace("\0", "")
