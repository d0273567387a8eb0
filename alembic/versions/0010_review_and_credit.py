"""Review and credit: a review deadline on runs, the terms an invoice was priced under, holds,
adjustments of drafts, credit notes with their own numbers, and the credit-balance ledger

Columns are added with plain ALTER TABLE ADD COLUMN (never a batch rebuild, which on SQLite
would drop the immutability triggers of 0004 and 0007); the new tables are created whole.

Revision ID: 0010_review_and_credit
Revises: 0009_upstream_ids_any_length
Create Date: 2026-11-30 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

import billing.db.types
from alembic import op

revision: str = "0010_review_and_credit"
down_revision: str | None = "0009_upstream_ids_any_length"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _exact(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, billing.db.types.ExactDecimal(), nullable=nullable)


def _moment(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, billing.db.types.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("billing_run", _moment("review_deadline", nullable=True))
    op.add_column("invoice", _exact("discount_percent", nullable=True))
    op.add_column("invoice", _exact("minimum_charge", nullable=True))
    op.create_table(
        "review_hold",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("org_id", sa.String(), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("held_by", sa.String(200), nullable=False),
        _moment("held_at"),
        sa.Column("released_by", sa.String(200), nullable=True),
        _moment("released_at", nullable=True),
    )
    op.create_index(
        "uq_review_hold_open",
        "review_hold",
        ["org_id", "period"],
        unique=True,
        postgresql_where=sa.text("released_at IS NULL"),
        sqlite_where=sa.text("released_at IS NULL"),
    )
    op.create_table(
        "invoice_adjustment",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("org_id", sa.String(), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("meter", sa.String(50), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        _exact("amount"),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _moment("created_at"),
        sa.Column("cancelled_by", sa.String(200), nullable=True),
        _moment("cancelled_at", nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column(
            "applied_invoice_id",
            sa.Integer(),
            sa.ForeignKey("invoice.id", name="fk_adjustment_applied"),
            nullable=True,
        ),
    )
    op.create_index("ix_adjustment_org_period", "invoice_adjustment", ["org_id", "period"])
    _partial_index("ix_adjustment_applied", "invoice_adjustment", "applied_invoice_id")
    op.create_table(
        "credit_note",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("number", sa.String(32), nullable=False, unique=True),
        sa.Column("invoice_id", sa.Integer(), sa.ForeignKey("invoice.id"), nullable=False),
        sa.Column("org_id", sa.String(), nullable=False),
        sa.Column("org_name", sa.String(), nullable=False),
        sa.Column("contact_emails", sa.Text(), nullable=False),
        sa.Column("billing_address", sa.Text(), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        _exact("total"),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("settlement", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _moment("created_at"),
    )
    op.create_index("ix_credit_note_invoice", "credit_note", ["invoice_id"])
    op.create_index("ix_credit_note_org_id", "credit_note", ["org_id"])
    op.create_table(
        "credit_note_line",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "credit_note_id",
            sa.Integer(),
            sa.ForeignKey("credit_note.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("meter", sa.String(50), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("unit", sa.String(20), nullable=False),
        sa.Column("charge_class", sa.String(16), nullable=False),
        sa.Column("api_key_id", sa.String(), nullable=True),
        sa.Column("user_id", sa.String(), nullable=True),
        _exact("amount"),
    )
    op.create_index("ix_credit_note_line_note", "credit_note_line", ["credit_note_id"])
    op.create_table(
        "credit_note_number_sequence",
        sa.Column("year", sa.Integer(), autoincrement=False, primary_key=True),
        sa.Column("last_number", sa.Integer(), nullable=False),
    )
    op.create_table(
        "credit_entry",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("org_id", sa.String(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        _exact("amount"),
        sa.Column(
            "grant_id",
            sa.Integer(),
            sa.ForeignKey("credit_entry.id", name="fk_credit_entry_grant"),
            nullable=True,
        ),
        sa.Column(
            "invoice_id",
            sa.Integer(),
            sa.ForeignKey("invoice.id", name="fk_credit_entry_invoice"),
            nullable=True,
        ),
        sa.Column(
            "credit_note_id",
            sa.Integer(),
            sa.ForeignKey("credit_note.id", name="fk_credit_entry_note"),
            nullable=True,
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        _moment("expires_at", nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        _moment("created_at"),
    )
    op.create_index("ix_credit_entry_org", "credit_entry", ["org_id", "currency"])
    _partial_index("ix_credit_entry_grant", "credit_entry", "grant_id")
    _partial_index("ix_credit_entry_invoice", "credit_entry", "invoice_id")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column with a reference only through raw DDL (no batch rebuild).
        op.execute(
            "ALTER TABLE email_delivery ADD COLUMN credit_note_id INTEGER "
            "CONSTRAINT fk_delivery_credit_note REFERENCES credit_note (id)"
        )
    else:
        op.add_column("email_delivery", sa.Column("credit_note_id", sa.Integer(), nullable=True))
        op.create_foreign_key(
            "fk_delivery_credit_note", "email_delivery", "credit_note", ["credit_note_id"], ["id"]
        )
    op.create_index(
        "uq_delivery_credit_note_recipient",
        "email_delivery",
        ["credit_note_id", "recipient"],
        unique=True,
        postgresql_where=sa.text("kind = 'credit_note'"),
        sqlite_where=sa.text("kind = 'credit_note'"),
    )


def _partial_index(name: str, table: str, column: str) -> None:
    present = sa.text(f"{column} IS NOT NULL")
    op.create_index(name, table, [column], postgresql_where=present, sqlite_where=present)


def downgrade() -> None:
    """Drops what the older schema cannot hold: holds, adjustments, credit notes, credits."""
    op.drop_index("uq_delivery_credit_note_recipient", table_name="email_delivery")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("fk_delivery_credit_note", "email_delivery", type_="foreignkey")
    op.execute("DELETE FROM email_delivery WHERE kind = 'credit_note'")
    op.drop_column("email_delivery", "credit_note_id")
    for table in (
        "credit_entry",
        "credit_note_number_sequence",
        "credit_note_line",
        "credit_note",
        "invoice_adjustment",
        "review_hold",
    ):
        op.drop_table(table)
    op.drop_column("invoice", "minimum_charge")
    op.drop_column("invoice", "discount_percent")
    op.drop_column("billing_run", "review_deadline")
