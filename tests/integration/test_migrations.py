"""Migrations: the skeleton's data survives every upgrade, each new revision downgrades, and
money keeps 12 decimal places on both databases."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlmodel import Session, select

from alembic import command
from billing.db.engine import alembic_config, make_engine, normalise_url, upgrade_schema
from billing.db.tables import BillingRun, InvoiceCorrection

SKELETON = "0001_initial"
# Revisions after the issue-5 ledger work began: each must downgrade cleanly.
NEW_REVISIONS = [
    "0004_invoice_lifecycle",
    "0005_email_outbox",
    "0006_distributed_runs",
    "0007_fast_invoice_writes",
    "0008_snapshot_by_org",
    "0009_upstream_ids_any_length",
    "0010_review_and_credit",
    "0011_console_and_webhooks",
    "0012_taxes",
    "0013_budgets",
]
AMOUNT = Decimal("1234567.123456789012")  # 12 decimal places


def _revision(database_url: str) -> str | None:
    engine = create_engine(normalise_url(database_url))
    with engine.connect() as connection:
        row = connection.execute(text("SELECT version_num FROM alembic_version")).one_or_none()
    engine.dispose()
    return None if row is None else str(row[0])


def _skeleton_rows(database_url: str) -> None:
    """A run, an issued invoice, a charge and a line, as the skeleton's schema stored them."""
    engine = create_engine(normalise_url(database_url))
    issued = datetime(2026, 11, 2, 6, 0, tzinfo=UTC).isoformat()
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO billing_run (id, period, status, trigger, started_at, upstream_url, "
                "pages_fetched, usage_results, invoice_count, results_without_memory) VALUES "
                "(1, '2026-10', 'succeeded', 'cli', :at, 'http://upstream', 2, 10, 1, 0)"
            ),
            {"at": issued},
        )
        connection.execute(
            text(
                "INSERT INTO invoice (id, run_id, number, org_id, org_name, contact_emails, "
                "period, currency, rate_card_id, rate_card_version, rate_card_hash, total, "
                "issued_at) VALUES (1, 1, 'INV-2026-000001', 'org-1', 'One', 'a@one.example', "
                "'2026-10', 'USD', 'standard', '1', :hash, :total, :at)"
            ),
            {"hash": "0" * 64, "total": "12.34", "at": issued},
        )
        connection.execute(
            text(
                "INSERT INTO invoice_charge (invoice_id, position, meter, description, unit, "
                "quantity, included, billable, pricing, amount) VALUES (1, 0, 'duration', "
                "'Session time', 'hour', :q, '0', :q, '0.10 / hour', '12.34')"
            ),
            {"q": str(AMOUNT)},
        )
        connection.execute(
            text(
                "INSERT INTO invoice_line (invoice_id, meter, api_key_id, user_id, quantity, "
                "unit, amount) VALUES (1, 'duration', 'key-1', 'user-1', :q, 'hour', '12.34')"
            ),
            {"q": str(AMOUNT)},
        )
    engine.dispose()


def _stored(database_url: str) -> list[tuple[object, ...]]:
    engine = create_engine(normalise_url(database_url))
    with engine.connect() as connection:
        found = [
            tuple(row)
            for row in connection.execute(
                text(
                    "SELECT i.number, i.org_id, i.total, c.quantity, c.amount, l.quantity, "
                    "l.amount FROM invoice i JOIN invoice_charge c ON c.invoice_id = i.id "
                    "JOIN invoice_line l ON l.invoice_id = i.id"
                )
            )
        ]
    engine.dispose()
    return [tuple(Decimal(str(v)) if k >= 2 else v for k, v in enumerate(row)) for row in found]


def test_upgrade_from_the_skeleton_keeps_everything_and_new_revisions_downgrade(
    database_url: str,
) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, SKELETON)
    _skeleton_rows(database_url)
    before = _stored(database_url)
    cents = Decimal("12.34")
    assert before == [("INV-2026-000001", "org-1", cents, AMOUNT, cents, AMOUNT, cents)]

    command.upgrade(config, "head")
    head = ScriptDirectory.from_config(config).get_current_head()
    assert _revision(database_url) == head
    assert _stored(database_url) == before
    engine = create_engine(normalise_url(database_url))
    with engine.connect() as connection:
        status, finalized, issued = connection.execute(
            text("SELECT status, finalized_at, issued_at FROM invoice")
        ).one()
    engine.dispose()
    assert status == "finalized"
    assert finalized == issued

    script = ScriptDirectory.from_config(config)
    for revision in reversed(NEW_REVISIONS):
        assert _revision(database_url) == revision
        command.downgrade(config, "-1")
        assert _revision(database_url) == script.get_revision(revision).down_revision
        assert _stored(database_url) == before
    command.upgrade(config, "head")
    assert _revision(database_url) == head
    assert _stored(database_url) == before


def test_amounts_with_12_decimal_places_round_trip_exactly(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade_schema(engine)
    now = datetime.now(UTC)
    with Session(engine) as session:
        run = BillingRun(
            period="2026-10", status="succeeded", trigger="test", started_at=now, upstream_url="x"
        )
        session.add(run)
        session.flush()
        assert run.id is not None
        session.execute(
            text(
                "INSERT INTO invoice (run_id, status, org_id, org_name, contact_emails, period, "
                "currency, rate_card_id, rate_card_version, rate_card_hash, total, issued_at) "
                "VALUES (:run, 'draft', 'org-1', 'One', '', '2026-10', 'USD', 'c', '1', 'h', "
                "'0', :at)"
            ),
            {"run": run.id, "at": now},
        )
        invoice_id = session.execute(text("SELECT id FROM invoice")).scalar_one()
        for sign in (1, -1):
            session.add(
                InvoiceCorrection(
                    run_id=run.id,
                    org_id="org-1",
                    original_invoice_id=invoice_id,
                    target_period="2026-11",
                    meter="duration",
                    description="Session time",
                    unit="hour",
                    quantity=sign * AMOUNT,
                    amount=sign * AMOUNT,
                    currency="USD",
                    created_at=now,
                )
            )
        session.commit()
    with Session(engine) as session:
        stored = sorted(
            (row.quantity, row.amount) for row in session.exec(select(InvoiceCorrection))
        )
    engine.dispose()
    assert stored == [(-AMOUNT, -AMOUNT), (AMOUNT, AMOUNT)]
    assert all(isinstance(value, Decimal) for pair in stored for value in pair)
    assert str(stored[1][1]) == "1234567.123456789012"
