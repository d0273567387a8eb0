"""Invoice lifecycle: states, numbers at finalization, corrections, run audit, immutability

Invoices stored before this revision were issued when stored, so they become `finalized`.
The database itself refuses changes to a finalized invoice (triggers), beside the service checks.
Downgrading drops drafts, void invoices and corrections (the older schema cannot hold them).

Revision ID: 0004_invoice_lifecycle
Revises: 0003_statement_details
Create Date: 2026-11-25 06:56:23.697148
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

import billing.db.types
from alembic import op

revision: str = "0004_invoice_lifecycle"
down_revision: str | None = "0003_statement_details"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invoice_correction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("org_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("original_invoice_id", sa.Integer(), nullable=False),
        sa.Column("target_period", sqlmodel.sql.sqltypes.AutoString(length=7), nullable=False),
        sa.Column("meter", sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("unit", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("api_key_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("quantity", billing.db.types.ExactDecimal(), nullable=False),
        sa.Column("amount", billing.db.types.ExactDecimal(), nullable=False),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("created_at", billing.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("applied_invoice_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["applied_invoice_id"], ["invoice.id"], name="fk_correction_applied"
        ),
        sa.ForeignKeyConstraint(
            ["original_invoice_id"],
            ["invoice.id"],
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["billing_run.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("invoice_correction", schema=None) as batch_op:
        batch_op.create_index("ix_correction_target", ["org_id", "target_period"], unique=False)

    with op.batch_alter_table("billing_run", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "operation",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                server_default="close",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column(
                "started_by",
                sqlmodel.sql.sqltypes.AutoString(length=200),
                server_default="",
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("rate_cards", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("totals", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("finalized_count", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("corrections_count", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("org_outcomes", sa.Text(), nullable=True))

    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "status",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                server_default="draft",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column("finalized_at", billing.db.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("sent_at", billing.db.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("voided_at", billing.db.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("void_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("replaces_invoice_id", sa.Integer(), nullable=True))
        batch_op.alter_column("number", existing_type=sa.VARCHAR(length=32), nullable=True)
        batch_op.drop_constraint(batch_op.f("uq_invoice_org_period"), type_="unique")
        batch_op.create_index(
            "uq_invoice_org_period_live",
            ["org_id", "period"],
            unique=True,
            postgresql_where=sa.text("status <> 'void'"),
            sqlite_where=sa.text("status <> 'void'"),
        )
        batch_op.create_foreign_key(
            "fk_invoice_replaces", "invoice", ["replaces_invoice_id"], ["id"]
        )

    with op.batch_alter_table("invoice_charge", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "charge_class",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                server_default="usage",
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("corrects_invoice_id", sa.Integer(), nullable=True))
        batch_op.drop_constraint(batch_op.f("uq_charge_invoice_meter"), type_="unique")
        batch_op.create_unique_constraint("uq_charge_invoice_position", ["invoice_id", "position"])
        batch_op.create_foreign_key(
            "fk_charge_corrects_invoice", "invoice", ["corrects_invoice_id"], ["id"]
        )

    with op.batch_alter_table("invoice_line", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "charge_class",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                server_default="usage",
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("corrects_invoice_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_line_corrects_invoice", "invoice", ["corrects_invoice_id"], ["id"]
        )

    op.execute("UPDATE invoice SET status = 'finalized', finalized_at = issued_at")
    _create_guards(op.get_bind())


def downgrade() -> None:
    _drop_guards(op.get_bind())
    dropped = "SELECT id FROM invoice WHERE status IN ('draft', 'void')"
    for child in ("invoice_daily_usage", "invoice_line", "invoice_charge"):
        op.execute(f"DELETE FROM {child} WHERE invoice_id IN ({dropped})")  # noqa: S608 (constant table names)
    op.execute("DELETE FROM invoice_line WHERE charge_class <> 'usage'")
    op.execute("DELETE FROM invoice_charge WHERE charge_class <> 'usage'")
    op.execute("DELETE FROM invoice_correction")
    op.execute("UPDATE invoice SET replaces_invoice_id = NULL")
    op.execute("DELETE FROM invoice WHERE status IN ('draft', 'void')")
    with op.batch_alter_table("invoice_line", schema=None) as batch_op:
        batch_op.drop_constraint("fk_line_corrects_invoice", type_="foreignkey")
        batch_op.drop_column("corrects_invoice_id")
        batch_op.drop_column("charge_class")

    with op.batch_alter_table("invoice_charge", schema=None) as batch_op:
        batch_op.drop_constraint("fk_charge_corrects_invoice", type_="foreignkey")
        batch_op.drop_constraint("uq_charge_invoice_position", type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_charge_invoice_meter"), ["invoice_id", "meter"]
        )
        batch_op.drop_column("corrects_invoice_id")
        batch_op.drop_column("charge_class")

    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_constraint("fk_invoice_replaces", type_="foreignkey")
        batch_op.drop_index(
            "uq_invoice_org_period_live",
            postgresql_where=sa.text("status <> 'void'"),
            sqlite_where=sa.text("status <> 'void'"),
        )
        batch_op.create_unique_constraint(batch_op.f("uq_invoice_org_period"), ["org_id", "period"])
        batch_op.alter_column("number", existing_type=sa.VARCHAR(length=32), nullable=False)
        batch_op.drop_column("replaces_invoice_id")
        batch_op.drop_column("void_reason")
        batch_op.drop_column("voided_at")
        batch_op.drop_column("sent_at")
        batch_op.drop_column("finalized_at")
        batch_op.drop_column("status")

    with op.batch_alter_table("billing_run", schema=None) as batch_op:
        batch_op.drop_column("org_outcomes")
        batch_op.drop_column("corrections_count")
        batch_op.drop_column("finalized_count")
        batch_op.drop_column("totals")
        batch_op.drop_column("rate_cards")
        batch_op.drop_column("started_by")
        batch_op.drop_column("operation")

    with op.batch_alter_table("invoice_correction", schema=None) as batch_op:
        batch_op.drop_index("ix_correction_target")

    op.drop_table("invoice_correction")


# What a finalized (or sent, or void) invoice may still change: its state and the dates and
# reason that go with it. Everything else, and its charges and lines, is frozen.
_FROZEN = (
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
_REFUSAL = "invoice is finalized: its amounts, lines and number cannot change"
_CHILDREN = ("invoice_charge", "invoice_line")


def _create_guards(bind: sa.Connection) -> None:
    if bind.dialect.name == "postgresql":
        _create_postgres_guards()
    else:
        _create_sqlite_guards()


def _create_postgres_guards() -> None:
    changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in _FROZEN)
    op.execute(
        f"""
        CREATE FUNCTION billing_guard_invoice() RETURNS trigger AS $$
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
    op.execute(
        "CREATE TRIGGER invoice_immutable BEFORE UPDATE OR DELETE ON invoice "
        "FOR EACH ROW EXECUTE FUNCTION billing_guard_invoice()"
    )
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


def _create_sqlite_guards() -> None:
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in _FROZEN)
    refuse = f"SELECT RAISE(ABORT, '{_REFUSAL}')"
    op.execute(
        f"""
        CREATE TRIGGER invoice_immutable BEFORE UPDATE ON invoice
        WHEN OLD.status <> 'draft' AND ({changed} OR NEW.status = 'draft' OR OLD.status = 'void')
        BEGIN {refuse}; END
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER invoice_immutable_delete BEFORE DELETE ON invoice
        WHEN OLD.status <> 'draft' BEGIN {refuse}; END
        """
    )
    frozen = "(SELECT status FROM invoice WHERE id = {row}.invoice_id) <> 'draft'"
    for child in _CHILDREN:
        for event, row in (("INSERT", "NEW"), ("UPDATE", "OLD"), ("DELETE", "OLD")):
            op.execute(
                f"""
                CREATE TRIGGER {child}_immutable_{event.lower()} BEFORE {event} ON {child}
                WHEN {frozen.format(row=row)} BEGIN {refuse}; END
                """
            )


def _drop_guards(bind: sa.Connection) -> None:
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS invoice_immutable ON invoice")
        for child in _CHILDREN:
            op.execute(f"DROP TRIGGER IF EXISTS {child}_immutable ON {child}")
        op.execute("DROP FUNCTION IF EXISTS billing_guard_invoice_child()")
        op.execute("DROP FUNCTION IF EXISTS billing_guard_invoice()")
        return
    op.execute("DROP TRIGGER IF EXISTS invoice_immutable")
    op.execute("DROP TRIGGER IF EXISTS invoice_immutable_delete")
    for child in _CHILDREN:
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {child}_immutable_{event}")
