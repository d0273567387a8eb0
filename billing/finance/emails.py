"""Statement email as finance drives it: the outbox's state, sending what is pending, resends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlmodel import Session, col

from billing.close.publish import keyed_documents
from billing.close.steps import who_started
from billing.config import Settings
from billing.db.credit_notes import credit_note_numbers
from billing.db.engine import existing_ledger, open_ledger
from billing.db.locks import hold_period, write_transaction
from billing.db.outbox import contacts_of, deliveries, queue_resend
from billing.db.tables import Invoice
from billing.email.outbox import OutboxSender, SendReport
from billing.errors import BillingError, NotFound
from billing.periods import BillingPeriod
from billing.statements.credit_notes import render_credit_note
from billing.statements.files import period_folder
from billing.statements.render_keys import StatementPdfs
from billing.states import InvoiceStatus

Progress = Callable[[str], None]


def _quiet(_text: str) -> None:
    return None


@dataclass(frozen=True)
class DeliveryRow:
    """One delivery as `billing email status` lists it."""

    org_id: str
    invoice_number: str | None
    recipient: str
    kind: str
    status: str
    attempts: int
    detail: str
    message_id: str
    credit_note: str | None = None  # a credit note's email: its number (CN-…)


def email_status(settings: Settings, period: BillingPeriod) -> list[DeliveryRow]:
    with existing_ledger(settings) as engine, Session(engine) as session:
        found = deliveries(session, str(period))
        ids = {row.credit_note_id for row, _ in found if row.credit_note_id is not None}
        notes = credit_note_numbers(session, ids)
        return [
            DeliveryRow(
                org_id=row.org_id,
                invoice_number=number,
                recipient=row.recipient,
                kind=row.kind,
                status=row.status,
                attempts=row.attempts,
                detail=row.error or row.server_reply or "",
                message_id=row.message_id,
                credit_note=notes.get(row.credit_note_id or 0),
            )
            for row, number in found
        ]


def send_pending(
    settings: Settings,
    period: BillingPeriod,
    *,
    progress: Progress = _quiet,
    wait_seconds: float = 0.0,  # float-ok: a timeout
    delivery_ids: list[int] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SendReport:
    """Send the period's pending statement and credit-note emails (each delivery once), under
    the period lock."""
    engine = open_ledger(settings)
    folder = period_folder(settings.output_dir, str(period))
    # The PDF the close wrote is attached when its key still matches the statement's; only a
    # changed or missing one is printed again.
    pdfs = StatementPdfs(settings, folder)
    renderer = pdfs.renderer
    try:
        with (
            hold_period(engine, str(period), wait_seconds, progress, now),
            OutboxSender(
                settings,
                engine,
                period,
                renderer.environment,
                folder,
                delivery_ids=delivery_ids,
                now=now,
            ) as outbox,
        ):
            outbox.send_remaining(lambda statement: keyed_documents(pdfs, statement)[0])
            outbox.send_credit_notes(lambda note: render_credit_note(renderer, note))
        return outbox.report
    finally:
        engine.dispose()


def resend(
    settings: Settings,
    reference: str,
    recipient: str,
    *,
    progress: Progress = _quiet,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    actor: str | None = None,
) -> SendReport:
    """Send an issued invoice's statement again to one of its org's contacts (recorded, with
    `actor` as who asked: None is the user and host running this)."""
    engine = open_ledger(settings)
    try:
        with write_transaction(engine) as session:
            invoice = session.execute(
                select(Invoice).where(col(Invoice.number) == reference)
            ).scalar_one_or_none()
            if invoice is None:
                raise NotFound(
                    f"no invoice numbered {reference!r}: billing invoices list shows them"
                )
            if invoice.status not in (InvoiceStatus.FINALIZED, InvoiceStatus.SENT):
                raise BillingError(
                    f"invoice {reference} is {invoice.status}; only finalized or sent invoices "
                    "are emailed"
                )
            if recipient not in contacts_of(invoice):
                raise BillingError(
                    f"{recipient} is not a billing contact of org {invoice.org_id} "
                    f"({', '.join(contacts_of(invoice)) or 'none'}); statements only go to the "
                    "org's own contacts: add it to the org directory and close again first"
                )
            delivery_id = queue_resend(session, invoice, recipient, actor or who_started(), now())
            period = BillingPeriod.parse(invoice.period)
    finally:
        engine.dispose()
    return send_pending(settings, period, progress=progress, delivery_ids=[delivery_id], now=now)
