"""The ledger as finance inspects and amends it: list and show invoices and runs, void one."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from billing.close.steps import who_started
from billing.config import Settings
from billing.db.adjustments import AdjustmentRow, adjustments_of
from billing.db.credit_notes import CreditNoteRow, credit_note_rows
from billing.db.engine import existing_ledger, ledger
from billing.db.ledger import void_invoice
from billing.db.locks import hold_period, write_transaction
from billing.db.repository import invoice_by_reference, load_statements
from billing.db.review import open_hold
from billing.db.tables import BillingRun, Invoice, InvoiceCorrection, InvoiceLine
from billing.domain import Statement
from billing.errors import BillingError, InvoiceStateError, NotFound
from billing.periods import BillingPeriod
from billing.states import InvoiceStatus

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Row = TypeVar("Row", bound="DataclassInstance")


def copied(cls: type[Row], source: object, **given: object) -> Row:
    """A `cls` dataclass with the fields of `source` (an ORM row) that have its names, except
    those `given` (computed ones, or an id that is None only before a flush)."""
    taken = {
        f.name: getattr(source, f.name) for f in dataclasses.fields(cls) if f.name not in given
    }
    return cls(**taken, **given)


@dataclass(frozen=True)
class InvoiceRow:
    """One invoice as `billing invoices list` shows it."""

    id: int
    number: str | None
    status: str
    org_id: str
    period: str
    currency: str
    total: Decimal
    issued_at: datetime
    line_items: int
    run_id: int


def list_invoices(
    settings: Settings,
    *,
    period: BillingPeriod | None = None,
    status: str | None = None,
    org_id: str | None = None,
) -> list[InvoiceRow]:
    """Invoices, newest period first, filtered by period, state or org."""
    with existing_ledger(settings) as engine:
        lines = (
            select(col(InvoiceLine.invoice_id), func.count().label("n"))
            .group_by(col(InvoiceLine.invoice_id))
            .subquery()
        )
        query = select(Invoice, func.coalesce(lines.c.n, 0)).outerjoin(
            lines, lines.c.invoice_id == col(Invoice.id)
        )
        if period is not None:
            query = query.where(col(Invoice.period) == str(period))
        if status is not None:
            query = query.where(col(Invoice.status) == status)
        if org_id is not None:
            query = query.where(col(Invoice.org_id) == org_id)
        query = query.order_by(col(Invoice.period).desc(), col(Invoice.org_id), col(Invoice.id))
        with Session(engine) as session:
            return [
                copied(InvoiceRow, invoice, id=invoice.id or 0, line_items=int(count))
                for invoice, count in session.execute(query)
            ]


@dataclass(frozen=True)
class CorrectionRow:
    """A correction of an invoice, and where it is (or will be) billed."""

    meter: str
    amount: Decimal
    target_period: str
    billed_on: str | None
    run_id: int


@dataclass(frozen=True)
class InvoiceDetail:
    """One invoice with its statement, lifecycle dates and the corrections made to it."""

    invoice: Invoice
    statement: Statement | None
    corrections: list[CorrectionRow] = field(default_factory=list)
    replaced_by: str | None = None
    replaces: str | None = None
    credit_notes: list[CreditNoteRow] = field(default_factory=list)
    adjustments: list[AdjustmentRow] = field(default_factory=list)
    hold: HoldRow | None = None


@dataclass(frozen=True)
class HoldRow:
    """The open hold on a draft: why, by whom, since when."""

    reason: str
    held_by: str
    held_at: datetime


def _find(session: Session, reference: str) -> Invoice:
    """An invoice by number (INV-2026-000123) or by id (for drafts, which have no number)."""
    invoice = invoice_by_reference(session, reference)
    if invoice is None:
        raise NotFound(
            f"no invoice {reference!r}: give a number such as INV-2026-000123, or a draft's id "
            "(billing invoices list shows both)"
        )
    return invoice


def invoice_detail(settings: Settings, reference: str) -> InvoiceDetail:
    with existing_ledger(settings) as engine:
        return read_invoice_detail(engine, reference)


def read_invoice_detail(engine: Engine, reference: str) -> InvoiceDetail:
    """One invoice by number or draft id, read through an engine the caller keeps open."""
    with Session(engine) as session:
        invoice = _find(session, reference)
        statement = next(
            (
                s
                for s in load_statements(
                    session, BillingPeriod.parse(invoice.period), invoice.org_id
                )
                if s.invoice_id == invoice.id
            ),
            None,
        )
        applied = Invoice.__table__.alias("applied")  # type: ignore[attr-defined]
        fix = InvoiceCorrection
        corrections = [
            CorrectionRow(meter, amount, target, billed_on, run_id)
            for meter, amount, target, billed_on, run_id in session.execute(
                select(
                    col(fix.meter),
                    func.sum(col(fix.amount)),
                    col(fix.target_period),
                    applied.c.number,
                    col(fix.run_id),
                )
                .outerjoin(applied, applied.c.id == fix.applied_invoice_id)
                .where(col(fix.original_invoice_id) == invoice.id)
                .group_by(col(fix.run_id), col(fix.meter), col(fix.target_period))
                .group_by(applied.c.number)
                .order_by(col(fix.run_id), col(fix.meter))
            )
        ]
        replaced_by = session.execute(
            select(col(Invoice.number)).where(col(Invoice.replaces_invoice_id) == invoice.id)
        ).scalar_one_or_none()
        replaces = (
            session.execute(
                select(col(Invoice.number)).where(col(Invoice.id) == invoice.replaces_invoice_id)
            ).scalar_one_or_none()
            if invoice.replaces_invoice_id is not None
            else None
        )
        credit_notes = credit_note_rows(session, invoice_id=invoice.id)
        adjustments = [
            row
            for row in adjustments_of(session, invoice.org_id, invoice.period)
            if row.applied_to is None or row.applied_to == invoice.number
        ]
        hold = (
            open_hold(session, invoice.org_id, invoice.period)
            if invoice.status == InvoiceStatus.DRAFT
            else None
        )
        session.expunge(invoice)
        return InvoiceDetail(
            invoice,
            statement,
            corrections,
            replaced_by,
            replaces,
            credit_notes,
            adjustments,
            HoldRow(hold.reason, hold.held_by, hold.held_at) if hold is not None else None,
        )


def void(
    settings: Settings,
    reference: str,
    reason: str,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Callable[[str], None] = lambda _text: None,
    wait_seconds: float = 0.0,  # float-ok: a timeout
    actor: str | None = None,
) -> Invoice:
    """Void a finalized or sent invoice, with a reason; its period is open again. `actor` is
    who is recorded as having voided it (None: the user and host running this)."""
    if not reason.strip():
        raise InvoiceStateError("a void needs a reason: pass --reason TEXT")
    with ledger(settings) as engine:
        with Session(engine) as session:
            period = _find_number(session, reference).period
        with hold_period(engine, period, wait_seconds, progress, now):
            with write_transaction(engine) as session:
                invoice = _find_number(session, reference)
                invoice.voided_by = actor or who_started()  # written with the void
                void_invoice(session, invoice, reason, now())
                session.flush()
                session.expunge(invoice)
            # Imported here: the printing and mailing machinery is heavy to import (about
            # half of this module's import time), and the listings that import this module
            # (`billing invoices list|show`, the console's pages) never print.
            from billing.close.publish import publish_void

            kept = publish_void(settings, engine, invoice, progress)
    progress(f"{invoice.number}'s statements are kept, marked VOID, as {kept.name} and .csv")
    return invoice


def _find_number(session: Session, reference: str) -> Invoice:
    """An issued invoice by its number (INV-2026-000123) only: ids stay internal."""
    invoice: Invoice | None = (
        session.execute(select(Invoice).where(col(Invoice.number) == reference)).scalars().first()
    )
    if invoice is not None:
        return invoice
    if reference.strip().isdigit():
        raise BillingError(
            f"{reference!r} is not an invoice number: billing void takes a number such as "
            "INV-2026-000123, never an id (billing invoices list shows the numbers)"
        )
    raise NotFound(
        f"no invoice numbered {reference!r}: give a number such as INV-2026-000123 "
        "(billing invoices list shows them)"
    )


@dataclass(frozen=True)
class RunDetail:
    """A billing run with its JSON audit fields decoded."""

    run: BillingRun
    rate_cards: list[dict[str, str]]
    totals: dict[str, str]
    org_outcomes: list[dict[str, str]]
    invoices: int


def list_runs(
    settings: Settings, *, period: BillingPeriod | None = None, limit: int = 20
) -> list[BillingRun]:
    with existing_ledger(settings) as engine:
        return read_runs(engine, period=period, limit=limit)


def read_runs(
    engine: Engine, *, period: BillingPeriod | None = None, limit: int = 20
) -> list[BillingRun]:
    """The newest runs (of a period), through an engine the caller keeps open."""
    query = select(BillingRun).order_by(col(BillingRun.id).desc()).limit(limit)
    if period is not None:
        query = query.where(col(BillingRun.period) == str(period))
    with Session(engine) as session:
        runs = list(session.execute(query).scalars().all())
        session.expunge_all()
        return runs


def run_detail(settings: Settings, run_id: int) -> RunDetail:
    with existing_ledger(settings) as engine:
        return read_run_detail(engine, run_id)


def read_run_detail(engine: Engine, run_id: int) -> RunDetail:
    """One run with its audit fields decoded, through an engine the caller keeps open."""
    with Session(engine) as session:
        run = session.get(BillingRun, run_id)
        if run is None:
            raise NotFound(f"no billing run {run_id}: billing runs list shows them")
        invoices = session.execute(
            select(func.count()).where(col(Invoice.run_id) == run_id)
        ).scalar_one()
        session.expunge(run)
    return RunDetail(
        run=run,
        rate_cards=json.loads(run.rate_cards or "[]"),
        totals=json.loads(run.totals or "{}"),
        org_outcomes=json.loads(run.org_outcomes or "[]"),
        invoices=int(invoices),
    )
