"""Initial ledger: runs, invoices, charges, lines

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25 04:46:38.767442
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

import billing.db.types
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "billing_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("period", sqlmodel.sql.sqltypes.AutoString(length=7), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("trigger", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("started_at", billing.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", billing.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("upstream_url", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("pages_fetched", sa.Integer(), nullable=False),
        sa.Column("usage_results", sa.Integer(), nullable=False),
        sa.Column("invoice_count", sa.Integer(), nullable=False),
        sa.Column("results_without_memory", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("billing_run", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_billing_run_period"), ["period"], unique=False)

    op.create_table(
        "invoice_number_sequence",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("year"),
    )
    op.create_table(
        "invoice",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("number", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("org_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("org_name", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("contact_emails", sa.Text(), nullable=False),
        sa.Column("period", sqlmodel.sql.sqltypes.AutoString(length=7), nullable=False),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("rate_card_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("rate_card_version", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("rate_card_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("total", billing.db.types.ExactDecimal(), nullable=False),
        sa.Column("issued_at", billing.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["billing_run.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("number"),
        sa.UniqueConstraint("org_id", "period", name="uq_invoice_org_period"),
    )
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_invoice_org_id"), ["org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_invoice_period"), ["period"], unique=False)

    op.create_table(
        "invoice_charge",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("meter", sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("unit", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("quantity", billing.db.types.ExactDecimal(), nullable=False),
        sa.Column("included", billing.db.types.ExactDecimal(), nullable=False),
        sa.Column("billable", billing.db.types.ExactDecimal(), nullable=False),
        sa.Column("pricing", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("amount", billing.db.types.ExactDecimal(), nullable=False),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoice.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("invoice_id", "meter", name="uq_charge_invoice_meter"),
    )
    op.create_table(
        "invoice_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("meter", sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
        sa.Column("api_key_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("quantity", billing.db.types.ExactDecimal(), nullable=False),
        sa.Column("unit", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("amount", billing.db.types.ExactDecimal(), nullable=False),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoice.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("invoice_line", schema=None) as batch_op:
        batch_op.create_index("ix_invoice_line_invoice", ["invoice_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("invoice_line", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_line_invoice")

    op.drop_table("invoice_line")
    op.drop_table("invoice_charge")
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoice_period"))
        batch_op.drop_index(batch_op.f("ix_invoice_org_id"))

    op.drop_table("invoice")
    op.drop_table("invoice_number_sequence")
    with op.batch_alter_table("billing_run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_run_period"))

    op.drop_table("billing_run")
