"""Invoices as the REST API and the console look them up: keyset pages, one invoice with its
deliveries and timeline, and its statement files (rendered when missing)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal

from sqlalchemy import ColumnElement, Engine, and_, func, or_, select
from sqlmodel import Session, col

from billing.close.publish import documents_of, write_documents
from billing.config import Settings
from billing.db.repository import invoice_by_reference, statements_for
from billing.db.review import held_drafts
from billing.db.tables import BillingRun, EmailDelivery, Invoice, InvoiceLine, ReviewHold
from billing.domain import Statement
from billing.errors import NotFound
from billing.finance.invoices import InvoiceDetail, copied, read_invoice_detail
from billing.periods import BillingPeriod
from billing.statements.files import period_folder, safe_stem, void_stem
from billing.statements.pdf import shared_renderer
from billing.states import InvoiceStatus

FileKind = Literal["pdf", "csv"]
MEDIA_TYPES: dict[str, str] = {"pdf": "application/pdf", "csv": "text/csv; charset=utf-8"}


@dataclass(frozen=True)
class InvoiceKey:
    """Where a page of invoices ends, in their one order: period newest first, org, id."""

    period: str
    org_id: str
    id: int


@dataclass(frozen=True)
class InvoiceListRow:
    """One invoice of a listing, with its line count and whether its draft is on hold."""

    id: int
    number: str | None
    status: str
    held: bool
    org_id: str
    org_name: str
    period: str
    currency: str
    total: Decimal
    issued_at: datetime
    finalized_at: datetime | None
    line_items: int
    run_id: int

    @property
    def key(self) -> InvoiceKey:
        return InvoiceKey(self.period, self.org_id, self.id)


@dataclass(frozen=True)
class InvoicePage:
    """A page of invoices and the key to ask the next one after (None: this is the last)."""

    rows: list[InvoiceListRow]
    next_key: InvoiceKey | None


def _after(key: InvoiceKey) -> ColumnElement[bool]:
    """Invoices after `key` in the order period desc, org id, id (a keyset: no OFFSET)."""
    period, org_id, invoice_id = col(Invoice.period), col(Invoice.org_id), col(Invoice.id)
    return or_(
        period < key.period,
        and_(period == key.period, org_id > key.org_id),
        and_(period == key.period, org_id == key.org_id, invoice_id > key.id),
    )


def invoice_page(
    engine: Engine,
    *,
    period: BillingPeriod | None = None,
    status: str | None = None,
    org_id: str | None = None,
    limit: int = 50,
    after: InvoiceKey | None = None,
) -> InvoicePage:
    """Up to `limit` invoices after `after`, filtered by period, state or org; one query for
    the page, one for its line counts, one for its holds, whatever the period's size."""
    query = select(Invoice)
    if period is not None:
        query = query.where(col(Invoice.period) == str(period))
    if status is not None:
        query = query.where(col(Invoice.status) == status)
    if org_id is not None:
        query = query.where(col(Invoice.org_id) == org_id)
    if after is not None:
        query = query.where(_after(after))
    query = query.order_by(col(Invoice.period).desc(), col(Invoice.org_id), col(Invoice.id)).limit(
        limit + 1
    )
    with Session(engine) as session:
        invoices = list(session.execute(query).scalars().all())
        more = len(invoices) > limit
        invoices = invoices[:limit]
        rows = _list_rows(session, invoices)
    return InvoicePage(rows, rows[-1].key if more and rows else None)


def _list_rows(session: Session, invoices: Sequence[Invoice]) -> list[InvoiceListRow]:
    ids = [invoice.id for invoice in invoices if invoice.id is not None]
    counts: dict[int, int] = {}
    if ids:
        counts = {
            int(invoice_id): int(n)
            for invoice_id, n in session.execute(
                select(col(InvoiceLine.invoice_id), func.count())
                .where(col(InvoiceLine.invoice_id).in_(ids))
                .group_by(col(InvoiceLine.invoice_id))
            )
        }
    drafts = [i for i in invoices if i.status == InvoiceStatus.DRAFT]
    held: set[tuple[str, str]] = set()
    for period in {draft.period for draft in drafts}:
        orgs = [draft.org_id for draft in drafts if draft.period == period]
        in_scope = and_(col(Invoice.period) == period, col(Invoice.org_id).in_(orgs))
        held |= {(org, period) for org, _reason in held_drafts(session, in_scope)}
    return [
        copied(
            InvoiceListRow,
            invoice,
            id=invoice.id or 0,
            held=invoice.status == InvoiceStatus.DRAFT and (invoice.org_id, invoice.period) in held,
            line_items=counts.get(invoice.id or 0, 0),
        )
        for invoice in invoices
    ]


@dataclass(frozen=True)
class Delivery:
    """One email of an invoice (statement, resend, void notice, credit note) and how it went."""

    id: int
    recipient: str
    kind: str
    status: str
    attempts: int
    message_id: str
    server_reply: str | None
    error: str | None
    requested_by: str
    created_at: datetime
    last_attempt_at: datetime | None
    sent_at: datetime | None
    credit_note_id: int | None


@dataclass(frozen=True)
class HoldRecord:
    """A hold of the invoice's org and period, open or released."""

    reason: str
    held_by: str
    held_at: datetime
    released_by: str | None
    released_at: datetime | None


@dataclass(frozen=True)
class RunRef:
    """The run behind a step of an invoice's life: its id, who started it and how."""

    id: int
    operation: str
    started_by: str
    trigger: str
    started_at: datetime


@dataclass(frozen=True)
class TimelineEntry:
    """One moment of an invoice's life, oldest first."""

    at: datetime
    event: str
    by: str | None
    detail: str


@dataclass(frozen=True)
class InvoiceView:
    """One invoice as the API shows it: the CLI's detail, its statement (void ones too), its
    emails, the holds of its org and period, the runs that made and finalized it, a timeline."""

    detail: InvoiceDetail
    statement: Statement | None
    deliveries: list[Delivery] = field(default_factory=list)
    holds: list[HoldRecord] = field(default_factory=list)
    created_by_run: RunRef | None = None
    finalized_by_run: RunRef | None = None
    timeline: list[TimelineEntry] = field(default_factory=list)


def invoice_view(engine: Engine, reference: str) -> InvoiceView:
    """An invoice by number or draft id (NotFound otherwise) with all the API shows of it."""
    detail = read_invoice_detail(engine, reference)
    invoice = detail.invoice
    with Session(engine) as session:
        statement = detail.statement
        if statement is None:  # a void invoice: its statement is still what it billed
            [statement] = statements_for(session, BillingPeriod.parse(invoice.period), [invoice])
        deliveries = [
            copied(Delivery, row, id=row.id or 0)
            for row in session.execute(
                select(EmailDelivery)
                .where(col(EmailDelivery.invoice_id) == invoice.id)
                .order_by(col(EmailDelivery.id))
            ).scalars()
        ]
        holds = [
            HoldRecord(row.reason, row.held_by, row.held_at, row.released_by, row.released_at)
            for row in session.execute(
                select(ReviewHold)
                .where(
                    col(ReviewHold.org_id) == invoice.org_id,
                    col(ReviewHold.period) == invoice.period,
                )
                .order_by(col(ReviewHold.id))
            ).scalars()
        ]
        created = _run_ref(session.get(BillingRun, invoice.run_id))
        finalized = _finalizing_run(session, invoice)
    view = InvoiceView(detail, statement, deliveries, holds, created, finalized)
    return dataclasses.replace(view, timeline=timeline(view))


def _run_ref(run: BillingRun | None) -> RunRef | None:
    if run is None or run.id is None:
        return None
    return RunRef(run.id, run.operation, run.started_by, run.trigger, run.started_at)


def _finalizing_run(session: Session, invoice: Invoice) -> RunRef | None:
    """The run of the invoice's period that was under way when it was finalized."""
    if invoice.finalized_at is None:
        return None
    run = (
        session.execute(
            select(BillingRun)
            .where(
                col(BillingRun.period) == invoice.period,
                col(BillingRun.started_at) <= invoice.finalized_at,
                or_(
                    col(BillingRun.finished_at).is_(None),
                    col(BillingRun.finished_at) >= invoice.finalized_at,
                ),
            )
            .order_by(col(BillingRun.id).desc())
            .limit(1)
        )
        .scalars()
        .first()
    )
    return _run_ref(run)


def timeline(view: InvoiceView) -> list[TimelineEntry]:
    """Created by its run, holds, adjustments, finalized, each email, credit notes, void and
    replacement: oldest first."""
    invoice = view.detail.invoice
    entries: list[TimelineEntry] = []
    made = view.created_by_run
    entries.append(
        TimelineEntry(
            made.started_at if made is not None else invoice.issued_at,
            "created",
            made.started_by if made is not None else None,
            f"drafted by run {invoice.run_id}"
            + (f" ({made.operation} via {made.trigger})" if made is not None else "")
            + (f"; replaces {view.detail.replaces}" if view.detail.replaces else ""),
        )
    )
    for hold in view.holds:
        entries.append(TimelineEntry(hold.held_at, "held", hold.held_by, hold.reason))
        if hold.released_at is not None:
            entries.append(
                TimelineEntry(hold.released_at, "released", hold.released_by, hold.reason)
            )
    for adjustment in view.detail.adjustments:
        what = adjustment.meter or adjustment.description
        entries.append(
            TimelineEntry(
                adjustment.created_at,
                "adjusted",
                adjustment.created_by,
                f"adjustment {adjustment.id}: {adjustment.amount} {adjustment.currency} on "
                f"{what}: {adjustment.reason}",
            )
        )
        if adjustment.cancelled_at is not None:
            entries.append(
                TimelineEntry(
                    adjustment.cancelled_at,
                    "adjustment_cancelled",
                    adjustment.cancelled_by,
                    f"adjustment {adjustment.id}: {adjustment.cancel_reason or ''}",
                )
            )
    if invoice.finalized_at is not None:
        run = view.finalized_by_run
        entries.append(
            TimelineEntry(
                invoice.finalized_at,
                "finalized",
                run.started_by if run is not None else None,
                f"numbered {invoice.number}"
                + (f" by run {run.id} ({run.operation} via {run.trigger})" if run else ""),
            )
        )
    for delivery in view.deliveries:
        reply = delivery.error or delivery.server_reply or ""
        entries.append(
            TimelineEntry(
                delivery.sent_at or delivery.last_attempt_at or delivery.created_at,
                f"email_{delivery.kind}",
                delivery.requested_by or None,
                f"{delivery.recipient}: {delivery.status}" + (f" ({reply})" if reply else ""),
            )
        )
    for note in view.detail.credit_notes:
        entries.append(
            TimelineEntry(
                note.created_at,
                "credit_note",
                note.created_by,
                f"{note.number}: {note.total} {note.currency} ({note.settlement}): {note.reason}",
            )
        )
    if invoice.voided_at is not None:
        entries.append(
            TimelineEntry(
                invoice.voided_at,
                "voided",
                invoice.voided_by,
                (invoice.void_reason or "")
                + (f"; replaced by {view.detail.replaced_by}" if view.detail.replaced_by else ""),
            )
        )
    return sorted(entries, key=lambda entry: entry.at)


@dataclass(frozen=True)
class StatementFile:
    """An invoice's PDF or CSV statement in the period's folder, and the name to offer it as."""

    path: Path
    filename: str
    media_type: str


def statement_file(
    settings: Settings, engine: Engine, reference: str, kind: FileKind
) -> StatementFile:
    """The invoice's statement file as the close wrote it (`<org>.pdf|csv`, or for a void one
    `<org>-<number>-VOID.pdf|csv`); rendered from the ledger and written first when missing."""
    with Session(engine) as session:
        invoice = invoice_by_reference(session, reference.strip())
        if invoice is None:
            raise NotFound(
                f"no invoice {reference!r}: give a number such as INV-2026-000123, or a draft's id"
            )
        void = invoice.status == InvoiceStatus.VOID and invoice.number is not None
        stem = (
            void_stem(invoice.org_id, invoice.number or "") if void else safe_stem(invoice.org_id)
        )
        folder = period_folder(settings.output_dir, invoice.period)
        path = folder / f"{stem}.{kind}"
        if not path.is_file():
            [statement] = statements_for(session, BillingPeriod.parse(invoice.period), [invoice])
            renderer = shared_renderer(settings)
            documents = documents_of(statement, renderer.pdf(statement), renderer.issuer_name)
            write_documents(folder, dataclasses.replace(documents, stem=stem))
        if invoice.number is not None:
            name = safe_stem(invoice.number) + ("-VOID" if void else "")
        else:
            name = f"{stem}-draft-{invoice.id}"
    return StatementFile(path, f"{name}.{kind}", MEDIA_TYPES[kind])
