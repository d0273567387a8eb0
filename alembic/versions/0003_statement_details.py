"""Statement details

Revision ID: 0003_statement_details
Revises: 0002_usage_snapshot
Create Date: 2026-11-25 06:09:41.548146
"""

from collections.abc import Sequence

import sqlalchemy as sa

import billing.db.types
from alembic import op

revision: str = "0003_statement_details"
down_revision: str | None = "0002_usage_snapshot"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invoice_daily_usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("day_start", sa.BigInteger(), nullable=False),
        sa.Column("duration_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoice.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("invoice_id", "day_start", name="uq_daily_invoice_day"),
    )
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("due_at", billing.db.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("billing_address", sa.Text(), server_default="", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_column("billing_address")
        batch_op.drop_column("due_at")

    op.drop_table("invoice_daily_usage")
