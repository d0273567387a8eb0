"""Budgets: each scope's latest month-to-date spend, and the thresholds that fired (at most
once per period, scope and threshold, by a unique constraint)

Revision ID: 0013_budgets
Revises: 0012_taxes
Create Date: 2026-11-30 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

import billing.db.types
from alembic import op

revision: str = "0013_budgets"
down_revision: str | None = "0012_taxes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _moment(name: str) -> sa.Column[object]:
    return sa.Column(name, billing.db.types.UTCDateTime(timezone=True), nullable=False)


def _exact(name: str) -> sa.Column[object]:
    return sa.Column(name, billing.db.types.ExactDecimal(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "budget_spend",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("scope_id", sa.String(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        _exact("budget_amount"),
        _exact("spend"),
        _exact("forecast"),
        _moment("measured_at"),
        sa.Column("usage_results", sa.Integer(), nullable=False),
        sa.UniqueConstraint(
            "period", "scope", "scope_id", "currency", name="uq_budget_spend_period_scope"
        ),
    )
    op.create_table(
        "budget_alert",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("scope_id", sa.String(), nullable=False),
        sa.Column("threshold", sa.String(12), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        _exact("budget_amount"),
        _exact("spend"),
        _exact("forecast"),
        _moment("fired_at"),
        sa.Column("event_id", sa.String(40), nullable=True),
        sa.Column("email_to", sa.Text(), nullable=False),
        sa.Column("email_status", sa.String(16), nullable=False),
        sa.Column("email_attempts", sa.Integer(), nullable=False),
        sa.Column("email_reply", sa.Text(), nullable=True),
        sa.UniqueConstraint(
            "period", "scope", "scope_id", "threshold", name="uq_budget_alert_once"
        ),
    )
    op.create_index("ix_budget_alert_period", "budget_alert", ["period"])


def downgrade() -> None:
    op.drop_index("ix_budget_alert_period", table_name="budget_alert")
    op.drop_table("budget_alert")
    op.drop_table("budget_spend")
