"""Email outbox: one delivery row per statement recipient, written at finalization

Invoices already `sent` or `finalized` before this revision get no rows: their statements went
out (or not) under the old rules, and a resend is explicit (billing email resend).

Revision ID: 0005_email_outbox
Revises: 0004_invoice_lifecycle
Create Date: 2026-11-25 07:16:45.842613
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

import billing.db.types
from alembic import op

revision: str = "0005_email_outbox"
down_revision: str | None = "0004_invoice_lifecycle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "email_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("org_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("period", sqlmodel.sql.sqltypes.AutoString(length=7), nullable=False),
        sa.Column("recipient", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("server_reply", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requested_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("created_at", billing.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", billing.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sent_at", billing.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("email_delivery", schema=None) as batch_op:
        batch_op.create_index("ix_delivery_period_status", ["period", "status"], unique=False)
        batch_op.create_index(
            "uq_delivery_invoice_recipient",
            ["invoice_id", "recipient"],
            unique=True,
            postgresql_where=sa.text("kind = 'statement'"),
            sqlite_where=sa.text("kind = 'statement'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("email_delivery", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_delivery_invoice_recipient",
            postgresql_where=sa.text("kind = 'statement'"),
            sqlite_where=sa.text("kind = 'statement'"),
        )
        batch_op.drop_index("ix_delivery_period_status")

    op.drop_table("email_delivery")
