"""The usage snapshot indexed by run and org: a distributed rate batch reads only its orgs

A Celery rate batch reads its orgs' part of a run's snapshot (`org_id IN (...)`); with an
index on `run_id` alone each batch scanned the whole run, so the batches together read the
snapshot once per batch: quadratic in the number of orgs. The index on (run_id, org_id)
replaces the one on run_id (it serves every query that used it), so the snapshot load still
maintains one index; it also hands the in-process close the run's rows in org order.

Revision ID: 0008_snapshot_by_org
Revises: 0007_fast_invoice_writes
Create Date: 2026-11-25 13:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008_snapshot_by_org"
down_revision: str | None = "0007_fast_invoice_writes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_usage_snapshot_run_org", "usage_snapshot", ["run_id", "org_id"])
    op.drop_index("ix_usage_snapshot_run", table_name="usage_snapshot")


def downgrade() -> None:
    op.create_index("ix_usage_snapshot_run", "usage_snapshot", ["run_id"])
    op.drop_index("ix_usage_snapshot_run_org", table_name="usage_snapshot")
