"""Console and webhooks: console users, API tokens, web sessions, sign-in attempts, the
webhook outbox (events and their deliveries), and who voided an invoice

Tables are created whole; the one column is added with plain ALTER TABLE ADD COLUMN (never a
batch rebuild, which on SQLite would drop the immutability triggers of 0004 and 0007).

Revision ID: 0011_console_and_webhooks
Revises: 0010_review_and_credit
Create Date: 2026-11-30 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

import billing.db.types
from alembic import op

revision: str = "0011_console_and_webhooks"
down_revision: str | None = "0010_review_and_credit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _moment(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, billing.db.types.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("invoice", sa.Column("voided_by", sa.String(200), nullable=True))
    op.create_table(
        "console_user",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _moment("created_at"),
        _moment("disabled_at", nullable=True),
    )
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("token_prefix", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _moment("created_at"),
        _moment("last_used_at", nullable=True),
        _moment("revoked_at", nullable=True),
    )
    op.create_table(
        "web_session",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("console_user.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        _moment("created_at"),
        _moment("expires_at"),
        _moment("last_seen_at"),
    )
    op.create_table(
        "login_attempt",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("remote", sa.String(64), nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        _moment("at"),
    )
    op.create_index("ix_login_attempt_name_at", "login_attempt", ["name", "at"])
    op.create_index("ix_login_attempt_remote_at", "login_attempt", ["remote", "at"])
    op.create_table(
        "webhook_event",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("event_id", sa.String(40), nullable=False, unique=True),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        _moment("created_at"),
    )
    op.create_index("ix_webhook_event_type", "webhook_event", ["type"])
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "event_id",
            sa.Integer(),
            sa.ForeignKey("webhook_event.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("endpoint", sa.String(100), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _moment("next_attempt_at"),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _moment("delivered_at", nullable=True),
        sa.UniqueConstraint("event_id", "endpoint", name="uq_webhook_delivery_event_endpoint"),
    )
    op.create_index(
        "ix_webhook_delivery_status_next", "webhook_delivery", ["status", "next_attempt_at"]
    )


def downgrade() -> None:
    """Drops the console's users, tokens and sessions and the webhook outbox."""
    for table in (
        "webhook_delivery",
        "webhook_event",
        "login_attempt",
        "web_session",
        "api_token",
        "console_user",
    ):
        op.drop_table(table)
    op.drop_column("invoice", "voided_by")
