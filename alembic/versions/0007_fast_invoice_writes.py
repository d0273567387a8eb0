"""Faster invoice writes: statement-level guards on PostgreSQL, indexes behind invoice references

The row-level triggers of 0004 looked up the parent invoice once per inserted, changed or
deleted charge and line, which made storing a period's drafts several times slower than the
load itself. On PostgreSQL the guard now runs once per statement over its transition tables,
one join whatever the number of rows; what it refuses is unchanged. SQLite keeps its row-level
triggers (it has none per statement, and there the lookup is cheap) and gains the check its
UPDATE guard lacked: a charge or line moved under a finalized invoice is refused too.

Deleting drafts (a close run again) checked every other reference to each deleted invoice by
scanning the referencing table, all periods of it, once per invoice: the columns that refer to
invoices get indexes, partial where the column is mostly NULL (so usage lines pay nothing).

Revision ID: 0007_fast_invoice_writes
Revises: 0006_distributed_runs
Create Date: 2026-11-25 10:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007_fast_invoice_writes"
down_revision: str | None = "0006_distributed_runs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REFUSAL = "invoice is finalized: its amounts, lines and number cannot change"
_CHILDREN = ("invoice_charge", "invoice_line")
# Transition tables: a trigger with them takes one event, so each table gets three triggers.
_EVENTS = (
    ("insert", "INSERT", "NEW TABLE AS new_rows"),
    ("update", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ("delete", "DELETE", "OLD TABLE AS old_rows"),
)
# (index, table, column, partial): the references to invoice.id that had no index.
_REFERENCE_INDEXES = (
    ("ix_invoice_line_corrects", "invoice_line", "corrects_invoice_id", True),
    ("ix_charge_corrects", "invoice_charge", "corrects_invoice_id", True),
    ("ix_invoice_replaces", "invoice", "replaces_invoice_id", True),
    ("ix_correction_applied", "invoice_correction", "applied_invoice_id", True),
    ("ix_correction_original", "invoice_correction", "original_invoice_id", False),
    ("ix_delivery_invoice", "email_delivery", "invoice_id", False),
)


def upgrade() -> None:
    for name, table, column, partial in _REFERENCE_INDEXES:
        where = sa.text(f"{column} IS NOT NULL") if partial else None
        op.create_index(name, table, [column], postgresql_where=where, sqlite_where=where)
    if op.get_bind().dialect.name == "postgresql":
        _statement_level_guards()
    else:
        for child in _CHILDREN:
            op.execute(
                f"""
                CREATE TRIGGER {child}_immutable_update_target BEFORE UPDATE ON {child}
                WHEN (SELECT status FROM invoice WHERE id = NEW.invoice_id) <> 'draft'
                BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END
                """  # noqa: S608 (constants of this module)
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _row_level_guards()
    else:
        for child in _CHILDREN:
            op.execute(f"DROP TRIGGER {child}_immutable_update_target")
    for name, table, _column, _partial in reversed(_REFERENCE_INDEXES):
        op.drop_index(name, table_name=table)


def _statement_level_guards() -> None:
    for child in _CHILDREN:
        op.execute(f"DROP TRIGGER {child}_immutable ON {child}")
    op.execute("DROP FUNCTION billing_guard_invoice_child()")
    # A branch reads only the transition tables its event has (PL/pgSQL plans on first use).
    op.execute(
        f"""
        CREATE FUNCTION billing_guard_invoice_children() RETURNS trigger AS $$
        DECLARE
          owner integer;
        BEGIN
          IF TG_OP IN ('INSERT', 'UPDATE') THEN
            SELECT i.id INTO owner FROM invoice i
            WHERE i.id IN (SELECT invoice_id FROM new_rows) AND i.status <> 'draft' LIMIT 1;
          END IF;
          IF owner IS NULL AND TG_OP IN ('UPDATE', 'DELETE') THEN
            SELECT i.id INTO owner FROM invoice i
            WHERE i.id IN (SELECT invoice_id FROM old_rows) AND i.status <> 'draft' LIMIT 1;
          END IF;
          IF owner IS NOT NULL THEN
            RAISE EXCEPTION '{_REFUSAL} (invoice id %)', owner
              USING ERRCODE = 'integrity_constraint_violation';
          END IF;
          RETURN NULL;
        END $$ LANGUAGE plpgsql
        """  # noqa: S608 (constants of this module)
    )
    for child in _CHILDREN:
        for name, event, tables in _EVENTS:
            op.execute(
                f"CREATE TRIGGER {child}_immutable_{name} AFTER {event} ON {child} "
                f"REFERENCING {tables} FOR EACH STATEMENT "
                "EXECUTE FUNCTION billing_guard_invoice_children()"
            )


def _row_level_guards() -> None:
    """Back to the row-level guard of 0004, as it was."""
    for child in _CHILDREN:
        for name, _event, _tables in _EVENTS:
            op.execute(f"DROP TRIGGER {child}_immutable_{name} ON {child}")
    op.execute("DROP FUNCTION billing_guard_invoice_children()")
    op.execute(
        f"""
        CREATE FUNCTION billing_guard_invoice_child() RETURNS trigger AS $$
        DECLARE
          owner integer;
        BEGIN
          IF TG_OP = 'DELETE' THEN owner := OLD.invoice_id; ELSE owner := NEW.invoice_id; END IF;
          IF EXISTS (SELECT 1 FROM invoice WHERE id = owner AND status <> 'draft')
             OR (TG_OP = 'UPDATE' AND EXISTS (
                   SELECT 1 FROM invoice WHERE id = OLD.invoice_id AND status <> 'draft')) THEN
            RAISE EXCEPTION '{_REFUSAL} (invoice id %)', owner
              USING ERRCODE = 'integrity_constraint_violation';
          END IF;
          IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql
        """  # noqa: S608 (constants of this module)
    )
    for child in _CHILDREN:
        op.execute(
            f"CREATE TRIGGER {child}_immutable BEFORE INSERT OR UPDATE OR DELETE ON {child} "
            "FOR EACH ROW EXECUTE FUNCTION billing_guard_invoice_child()"
        )
