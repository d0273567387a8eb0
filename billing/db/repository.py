"""The ledger's reads and writes: runs, invoices replaced per period in one transaction, numbers."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import delete, insert, select, text, update
from sqlmodel import Session, SQLModel, col

from billing.db.tables import (
    BillingRun,
    Invoice,
    InvoiceCharge,
    InvoiceDailyUsage,
    InvoiceLine,
    InvoiceNumberSequence,
)
from billing.domain import (
    DailyUsage,
    RatedInvoice,
    RatingReport,
    Statement,
    StatementCharge,
    StatementLine,
)
from billing.money import minor_to_decimal, round_quantity
from billing.periods import BillingPeriod


def start_run(
    session: Session,
    period: BillingPeriod,
    trigger: str,
    upstream_url: str,
    now: datetime,
    *,
    request_params: str | None = None,
    rerated_from_run_id: int | None = None,
) -> int:
    """Record that a close has begun; committed at once so a failure is still on record."""
    run = BillingRun(
        period=str(period),
        status="running",
        trigger=trigger,
        started_at=now,
        upstream_url=upstream_url,
        request_params=request_params,
        rerated_from_run_id=rerated_from_run_id,
    )
    session.add(run)
    session.commit()
    assert run.id is not None
    return run.id


@dataclass
class RunOutcome:
    """How far a run got; filled in stage by stage and written when the run ends."""

    status: str = "running"
    pages_fetched: int = 0
    report: RatingReport | None = None
    invoice_count: int = 0
    error: str | None = None
    usage_checksum: str | None = None
    duplicate_results: int = 0
    completeness: str | None = None


def finish_run(session: Session, run_id: int, outcome: RunOutcome, now: datetime) -> None:
    """Record how a run ended."""
    values: dict[str, object] = {
        "status": outcome.status,
        "finished_at": now,
        "pages_fetched": outcome.pages_fetched,
        "invoice_count": outcome.invoice_count,
        "error": outcome.error,
        "usage_checksum": outcome.usage_checksum,
        "duplicate_results": outcome.duplicate_results,
        "completeness": outcome.completeness,
    }
    if outcome.report is not None:
        values["usage_results"] = outcome.report.usage_results
        values["results_without_memory"] = outcome.report.results_without_memory
    session.execute(update(BillingRun).where(col(BillingRun.id) == run_id).values(**values))
    session.commit()


def _next_numbers(session: Session, year: int, count: int) -> list[str]:
    """Hand out `count` consecutive numbers of a year under a row lock (gapless, unique)."""
    if count == 0:
        return []
    statement = (
        select(InvoiceNumberSequence)
        .where(col(InvoiceNumberSequence.year) == year)
        .with_for_update()
    )
    sequence = session.execute(statement).scalar_one_or_none()
    if sequence is None:
        sequence = InvoiceNumberSequence(year=year, last_number=0)
        session.add(sequence)
    first = sequence.last_number + 1
    sequence.last_number += count
    session.flush()
    return [f"INV-{year}-{number:06d}" for number in range(first, first + count)]


def replace_period_invoices(
    session: Session,
    run_id: int,
    period: BillingPeriod,
    rated: Sequence[RatedInvoice],
    issued_at: datetime,
    org_scope: Collection[str] | None = None,
    *,
    due_at: datetime | None = None,
    snapshot_run_id: int | None = None,
) -> None:
    """Store a period's invoices, replacing earlier ones; an org keeps its invoice number.

    With `org_scope` (a partial close) only those orgs' invoices are replaced.

    The caller's transaction makes it all or nothing.
    """
    scope = col(Invoice.period) == str(period)
    if org_scope is not None:
        scope = scope & col(Invoice.org_id).in_(org_scope)
    existing = dict(
        session.execute(select(col(Invoice.org_id), col(Invoice.number)).where(scope)).all()
    )
    if existing:
        old_ids = select(col(Invoice.id)).where(scope)
        session.execute(
            delete(InvoiceDailyUsage).where(col(InvoiceDailyUsage.invoice_id).in_(old_ids))
        )
        session.execute(delete(InvoiceLine).where(col(InvoiceLine.invoice_id).in_(old_ids)))
        session.execute(delete(InvoiceCharge).where(col(InvoiceCharge.invoice_id).in_(old_ids)))
        session.execute(delete(Invoice).where(scope))
    newcomers = [invoice.org.org_id for invoice in rated if invoice.org.org_id not in existing]
    numbers = dict(
        zip(newcomers, _next_numbers(session, issued_at.year, len(newcomers)), strict=True)
    )
    numbers.update(existing)

    invoice_rows = [
        {
            "run_id": run_id,
            "number": numbers[invoice.org.org_id],
            "org_id": invoice.org.org_id,
            "org_name": invoice.org.name,
            "contact_emails": ", ".join(invoice.org.emails),
            "period": str(period),
            "currency": invoice.currency,
            "rate_card_id": invoice.rate_card.id,
            "rate_card_version": invoice.rate_card.version,
            "rate_card_hash": invoice.rate_card.content_hash,
            "total": minor_to_decimal(invoice.total_minor, invoice.currency),
            "issued_at": issued_at,
            "due_at": due_at,
            "billing_address": invoice.org.billing_address,
        }
        for invoice in rated
    ]
    if not invoice_rows:
        return
    inserted = (
        session.execute(
            insert(Invoice).returning(col(Invoice.id), sort_by_parameter_order=True),
            invoice_rows,
        )
        .scalars()
        .all()
    )

    charge_rows: list[dict[str, object]] = []
    line_rows: list[dict[str, object]] = []
    for invoice_id, invoice in zip(inserted, rated, strict=True):
        currency = invoice.currency
        for position, charge in enumerate(invoice.charges):
            charge_rows.append(
                {
                    "invoice_id": invoice_id,
                    "position": position,
                    "meter": charge.meter,
                    "description": charge.description,
                    "unit": charge.unit,
                    "quantity": round_quantity(charge.quantity),
                    "included": charge.included,
                    "billable": round_quantity(charge.billable),
                    "pricing": charge.pricing,
                    "amount": minor_to_decimal(charge.amount_minor, currency),
                }
            )
            line_rows.extend(
                {
                    "invoice_id": invoice_id,
                    "meter": charge.meter,
                    "api_key_id": line.key.api_key_id,
                    "user_id": line.key.user_id,
                    "quantity": round_quantity(line.quantity),
                    "unit": charge.unit,
                    "amount": minor_to_decimal(line.amount_minor, currency),
                }
                for line in charge.lines
            )
    session.execute(insert(InvoiceCharge), charge_rows)
    if line_rows:
        session.execute(insert(InvoiceLine), line_rows)
    if snapshot_run_id is not None:
        store_daily_usage(session, run_id, snapshot_run_id)


_DAILY_FROM_SNAPSHOT = text(
    """
    INSERT INTO invoice_daily_usage (invoice_id, day_start, duration_ms)
    SELECT i.id, (s.bucket_start / 86400) * 86400, SUM(s.duration_ms)
    FROM usage_snapshot s JOIN invoice i ON i.org_id = s.org_id
    WHERE s.run_id = :snapshot_run_id AND i.run_id = :run_id
    GROUP BY i.id, (s.bucket_start / 86400) * 86400
    """
)


def store_daily_usage(session: Session, run_id: int, snapshot_run_id: int) -> None:
    """Session time per UTC day of each invoice a run stored, summed in SQL from the snapshot."""
    session.execute(_DAILY_FROM_SNAPSHOT, {"run_id": run_id, "snapshot_run_id": snapshot_run_id})


RowT = TypeVar("RowT")


def _rows_by_invoice(
    session: Session, table: type[SQLModel], row: type[RowT], ids: list[int], order: str
) -> dict[int, list[RowT]]:
    """One query: the `row` dataclass's fields of every row of `table` for these invoices."""
    columns = table.__table__.c  # type: ignore[attr-defined]
    wanted = [columns[field.name] for field in fields(row)]  # type: ignore[arg-type]
    query = (
        select(columns.invoice_id, *wanted)
        .where(columns.invoice_id.in_(ids))
        .order_by(columns.invoice_id, columns[order])
    )
    grouped: dict[int, list[RowT]] = defaultdict(list)
    for owner, *values in session.execute(query):
        grouped[owner].append(row(*values))
    return grouped


def _daily_usage(session: Session, ids: list[int]) -> dict[int, list[DailyUsage]]:
    columns = InvoiceDailyUsage.__table__.c  # type: ignore[attr-defined]
    query = (
        select(columns.invoice_id, columns.day_start, columns.duration_ms)
        .where(columns.invoice_id.in_(ids))
        .order_by(columns.invoice_id, columns.day_start)
    )
    daily: dict[int, list[DailyUsage]] = defaultdict(list)
    for invoice_id, day_start, duration_ms in session.execute(query):
        day = datetime.fromtimestamp(day_start, UTC).date()
        daily[invoice_id].append(DailyUsage(day, int(duration_ms)))
    return daily


def load_statements(
    session: Session, period: BillingPeriod, org_id: str | None = None
) -> list[Statement]:
    """Read a period's invoices back as statements: three queries whatever the count, no N+1."""
    query = select(Invoice).where(col(Invoice.period) == str(period))
    if org_id is not None:
        query = query.where(col(Invoice.org_id) == org_id)
    invoices = session.execute(query.order_by(col(Invoice.org_id))).scalars().all()
    if not invoices:
        return []
    ids = [invoice.id for invoice in invoices if invoice.id is not None]
    charges = _rows_by_invoice(session, InvoiceCharge, StatementCharge, ids, "position")
    lines = _rows_by_invoice(session, InvoiceLine, StatementLine, ids, "id")
    daily = _daily_usage(session, ids)
    return [
        Statement(
            invoice_id=invoice.id or 0,
            invoice_number=invoice.number,
            org_id=invoice.org_id,
            org_name=invoice.org_name,
            emails=tuple(email for email in invoice.contact_emails.split(", ") if email),
            period=invoice.period,
            period_start=period.start,
            period_end=period.end,
            currency=invoice.currency,
            issued_at=invoice.issued_at,
            rate_card_id=invoice.rate_card_id,
            rate_card_version=invoice.rate_card_version,
            charges=tuple(charges[invoice.id or 0]),
            lines=tuple(lines[invoice.id or 0]),
            total=invoice.total,
            billing_address=invoice.billing_address,
            due_at=invoice.due_at,
            daily_usage=tuple(daily[invoice.id or 0]),
        )
        for invoice in invoices
    ]
