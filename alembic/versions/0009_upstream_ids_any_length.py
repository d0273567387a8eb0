"""Upstream ids and org names of any length: VARCHAR without a length on PostgreSQL

The usage API's org, API key and user ids are strings of no stated length, and an org's name
is its directory entry's or, for an org without one, its id. PostgreSQL refused a close whose
ids were longer than the columns (`value too long for type character varying(255)`) while
SQLite, which never enforces a VARCHAR length, stored them. On PostgreSQL the columns lose
their length: a wider VARCHAR is binary coercible, so no table is rewritten, no index is
rebuilt, and the immutability guards of 0004 and 0007 (functions over whole rows) stay as they
are. SQLite is left alone: its VARCHAR(n) has no limit already, and rebuilding the tables (its
only way to change a declared type) would drop the guard triggers on them.

Revision ID: 0009_upstream_ids_any_length
Revises: 0008_snapshot_by_org
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009_upstream_ids_any_length"
down_revision: str | None = "0008_snapshot_by_org"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, former length, nullable)
_COLUMNS = (
    ("usage_snapshot", "org_id", 255, False),
    ("usage_snapshot", "api_key_id", 255, True),
    ("usage_snapshot", "user_id", 255, True),
    ("invoice", "org_id", 255, False),
    ("invoice", "org_name", 500, False),
    ("invoice_line", "api_key_id", 255, True),
    ("invoice_line", "user_id", 255, True),
    ("invoice_correction", "org_id", 255, False),
    ("invoice_correction", "api_key_id", 255, True),
    ("invoice_correction", "user_id", 255, True),
    ("email_delivery", "org_id", 255, False),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, length, nullable in _COLUMNS:
        op.alter_column(
            table,
            column,
            type_=sa.String(),
            existing_type=sa.String(length),
            existing_nullable=nullable,
        )


def downgrade() -> None:
    """Back to the bounded columns; refused (by PostgreSQL) while a longer value is stored."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, length, nullable in reversed(_COLUMNS):
        op.alter_column(
            table,
            column,
            type_=sa.String(length),
            existing_type=sa.String(),
            existing_nullable=nullable,
        )
