"""Distributed runs: run mode, stage and heartbeat, their units of work, one running run per period

Runs left `running` by dead processes before this revision, all but the newest of a period,
become `interrupted` so that the one-running-run index can be built.

Revision ID: 0006_distributed_runs
Revises: 0005_email_outbox
Create Date: 2026-11-25 07:36:14.007608
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

import billing.db.types
from alembic import op

revision: str = "0006_distributed_runs"
down_revision: str | None = "0005_email_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_task",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("stage", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("unit", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", billing.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["billing_run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "stage", "unit", name="uq_run_task_unit"),
    )
    op.execute(
        "UPDATE billing_run SET status = 'interrupted' WHERE status = 'running' AND id NOT IN "
        "(SELECT max(id) FROM billing_run WHERE status = 'running' GROUP BY period)"
    )
    with op.batch_alter_table("billing_run", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "mode",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                server_default="local",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column("stage", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True)
        )
        batch_op.add_column(
            sa.Column("heartbeat_at", billing.db.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("batches_total", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.create_index(
            "uq_billing_run_period_running",
            ["period"],
            unique=True,
            postgresql_where=sa.text("status = 'running'"),
            sqlite_where=sa.text("status = 'running'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("billing_run", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_billing_run_period_running",
            postgresql_where=sa.text("status = 'running'"),
            sqlite_where=sa.text("status = 'running'"),
        )
        batch_op.drop_column("batches_total")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("stage")
        batch_op.drop_column("mode")

    op.drop_table("run_task")
