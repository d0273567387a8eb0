"""Taxes: the tax rule an invoice was drafted under and its customer's tax facts (tax id,
country, purchase order), and per charge the amount before the discount and a tax charge's
rate and treatment

Tax charges themselves are rows of invoice_charge (class "tax", one per rate) with one
invoice_line each, so no table is added. Columns are added with plain ALTER TABLE ADD COLUMN
(never a batch rebuild, which on SQLite would drop the immutability triggers of 0004 and 0007).
The invoice's immutability guard of 0004 is rebuilt to freeze the new columns too, with the
terms it was priced under (discount_percent, minimum_charge of 0010): a finalized invoice's
tax rule, tax facts and PO can no more change than its total.

Revision ID: 0012_taxes
Revises: 0011_console_and_webhooks
Create Date: 2026-11-30 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

import billing.db.types
from alembic import op

revision: str = "0012_taxes"
down_revision: str | None = "0011_console_and_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _exact(name: str) -> sa.Column[object]:
    return sa.Column(name, billing.db.types.ExactDecimal(), nullable=True)


# 0004's frozen columns; the new guard adds these.
_FROZEN_0004 = (
    "number",
    "run_id",
    "org_id",
    "period",
    "currency",
    "rate_card_id",
    "rate_card_version",
    "rate_card_hash",
    "total",
    "issued_at",
    "due_at",
    "replaces_invoice_id",
    "org_name",
)
_FROZEN_NOW = (
    "discount_percent",
    "minimum_charge",
    "purchase_order",
    "customer_tax_id",
    "customer_country",
    "tax_rule",
)
_REFUSAL = "invoice is finalized: its amounts, lines and number cannot change"


def _guard_invoice(frozen: Sequence[str]) -> None:
    """(Re)create the guard that refuses changes to a finalized invoice's frozen columns."""
    if op.get_bind().dialect.name == "postgresql":
        changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in frozen)
        op.execute(
            f"""
            CREATE OR REPLACE FUNCTION billing_guard_invoice() RETURNS trigger AS $$
            BEGIN
              IF TG_OP = 'DELETE' THEN
                IF OLD.status <> 'draft' THEN
                  RAISE EXCEPTION '{_REFUSAL} (invoice %, %)', OLD.number, OLD.status
                    USING ERRCODE = 'integrity_constraint_violation';
                END IF;
                RETURN OLD;
              END IF;
              IF OLD.status <> 'draft' AND (
                   {changed} OR NEW.status = 'draft' OR OLD.status = 'void') THEN
                RAISE EXCEPTION '{_REFUSAL} (invoice %, %)', OLD.number, OLD.status
                  USING ERRCODE = 'integrity_constraint_violation';
              END IF;
              RETURN NEW;
            END $$ LANGUAGE plpgsql
            """
        )
        return
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in frozen)
    op.execute("DROP TRIGGER IF EXISTS invoice_immutable")
    op.execute(
        f"""
        CREATE TRIGGER invoice_immutable BEFORE UPDATE ON invoice
        WHEN OLD.status <> 'draft' AND ({changed} OR NEW.status = 'draft' OR OLD.status = 'void')
        BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END
        """
    )


def upgrade() -> None:
    op.add_column(
        "invoice", sa.Column("purchase_order", sa.Text(), nullable=False, server_default="")
    )
    op.add_column(
        "invoice", sa.Column("customer_tax_id", sa.Text(), nullable=False, server_default="")
    )
    op.add_column(
        "invoice",
        sa.Column("customer_country", sa.String(2), nullable=False, server_default=""),
    )
    op.add_column("invoice", sa.Column("tax_rule", sa.Text(), nullable=True))
    op.add_column("invoice_charge", _exact("list_amount"))
    op.add_column("invoice_charge", _exact("tax_percent"))
    op.add_column("invoice_charge", sa.Column("tax_treatment", sa.String(16), nullable=True))
    _guard_invoice(_FROZEN_0004 + _FROZEN_NOW)


def downgrade() -> None:
    """Drops the columns; tax charges stay as charges of class "tax" (the older schema holds
    them, and finalized invoices never change)."""
    _guard_invoice(_FROZEN_0004)
    op.drop_column("invoice_charge", "tax_treatment")
    op.drop_column("invoice_charge", "tax_percent")
    op.drop_column("invoice_charge", "list_amount")
    op.drop_column("invoice", "tax_rule")
    op.drop_column("invoice", "customer_country")
    op.drop_column("invoice", "customer_tax_id")
    op.drop_column("invoice", "purchase_order")
