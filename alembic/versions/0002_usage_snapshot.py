"""Usage snapshot and run audit

Revision ID: 0002_usage_snapshot
Revises: 0001_initial
Create Date: 2026-11-25 05:57:57.261690
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

import billing.db.types
from alembic import op

revision: str = "0002_usage_snapshot"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_snapshot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False),
        sa.Column("bucket_start", sa.BigInteger(), nullable=False),
        sa.Column("bucket_end", sa.BigInteger(), nullable=False),
        sa.Column("org_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("api_key_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("session_kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=False),
        sa.Column("reserved_memory_mib", sa.BigInteger(), nullable=True),
        sa.Column("peak_memory_mib", billing.db.types.ExactDecimal(), nullable=True),
        sa.Column("workspace_bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("workspace_bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("num_sessions", sa.BigInteger(), nullable=False),
        sa.Column("request_count", sa.BigInteger(), nullable=False),
        sa.Column("num_operations", sa.BigInteger(), nullable=False),
        sa.Column("files_changed_count", sa.BigInteger(), nullable=False),
        sa.Column("oom_killed_count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["billing_run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("usage_snapshot", schema=None) as batch_op:
        batch_op.create_index("ix_usage_snapshot_run", ["run_id"], unique=False)

    with op.batch_alter_table("billing_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_params", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("usage_checksum", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch_op.add_column(
            sa.Column("duplicate_results", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("completeness", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True)
        )
        batch_op.add_column(sa.Column("rerated_from_run_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_billing_run_rerated_from", "billing_run", ["rerated_from_run_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("billing_run", schema=None) as batch_op:
        batch_op.drop_constraint("fk_billing_run_rerated_from", type_="foreignkey")
        batch_op.drop_column("rerated_from_run_id")
        batch_op.drop_column("completeness")
        batch_op.drop_column("duplicate_results")
        batch_op.drop_column("usage_checksum")
        batch_op.drop_column("request_params")

    with op.batch_alter_table("usage_snapshot", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_snapshot_run")

    op.drop_table("usage_snapshot")
