"""A period's invoices read in bounded batches: statements streamed, org totals, summaries."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from billing.db.repository import statements_for
from billing.db.tables import Invoice
from billing.domain import InvoiceSummary, OrgTotal, Statement
from billing.periods import BillingPeriod
from billing.states import InvoiceStatus

# Statements read per query: big enough to keep queries few, small enough that memory is flat.
STATEMENT_BATCH = 100


def live_invoice_ids(session: Session, period: BillingPeriod) -> list[int]:
    """The ids of a period's live (not void) invoices, in org-id order."""
    query = (
        select(col(Invoice.id))
        .where(col(Invoice.period) == str(period), col(Invoice.status) != InvoiceStatus.VOID)
        .order_by(col(Invoice.org_id))
    )
    return [invoice_id for invoice_id in session.execute(query).scalars() if invoice_id]


def iter_statements(
    engine: Engine, period: BillingPeriod, batch: int = STATEMENT_BATCH
) -> Iterator[Statement]:
    """A period's live statements in org-id order, read `batch` invoices at a time in a short
    session each, so that only one batch is held whatever the number of orgs."""
    with Session(engine) as session:
        ids = live_invoice_ids(session, period)
    for start in range(0, len(ids), batch):
        with Session(engine) as session:
            invoices = (
                session.execute(
                    select(Invoice)
                    .where(col(Invoice.id).in_(ids[start : start + batch]))
                    .order_by(col(Invoice.org_id))
                )
                .scalars()
                .all()
            )
            statements = statements_for(session, period, invoices)
        yield from statements


def period_org_totals(session: Session, period: BillingPeriod) -> list[OrgTotal]:
    """Each live invoice's org, currency and total: what month over month compares."""
    query = (
        select(
            col(Invoice.org_id), col(Invoice.org_name), col(Invoice.currency), col(Invoice.total)
        )
        .where(col(Invoice.period) == str(period), col(Invoice.status) != InvoiceStatus.VOID)
        .order_by(col(Invoice.org_id))
    )
    return [OrgTotal(*row) for row in session.execute(query)]


def invoice_summaries(session: Session, period: BillingPeriod) -> list[InvoiceSummary]:
    """One line per live invoice of a period (no charges or lines): what a close reports."""
    query = (
        select(
            col(Invoice.org_id),
            col(Invoice.org_name),
            col(Invoice.number),
            col(Invoice.status),
            col(Invoice.currency),
            col(Invoice.total),
            col(Invoice.contact_emails),
        )
        .where(col(Invoice.period) == str(period), col(Invoice.status) != InvoiceStatus.VOID)
        .order_by(col(Invoice.org_id))
    )
    return [
        InvoiceSummary(
            org_id=org_id,
            org_name=org_name,
            invoice_number=number or "DRAFT",
            status=status,
            currency=currency,
            total=total,
            emails=tuple(email for email in emails.split(", ") if email),
        )
        for org_id, org_name, number, status, currency, total, emails in session.execute(query)
    ]
