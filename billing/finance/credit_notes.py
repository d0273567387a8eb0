"""Credit notes as finance issues them: create one against a finalized or sent invoice (checked
under the invoice's lock, numbered gapless per year, settled as credit or refund, its PDF and CSV
written and its emails sent through the outbox), list them, show one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import NoReturn

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from billing.close.steps import who_started
from billing.config import Settings
from billing.credit_notes import (
    CreditNoteDocument,
    CreditPlan,
    check_within_invoice,
    credit_note_number,
    parse_amount,
    parse_line_spec,
)
from billing.db.credit_balance import grant_credit
from billing.db.credit_notes import (
    CreditNoteRow,
    credit_note_by_number,
    credit_note_deliveries,
    credit_note_documents,
    credit_note_rows,
    credit_notes_of,
    creditable_lines,
    insert_credit_note,
    locked_invoice,
    planned_tax,
    queue_credit_note,
)
from billing.db.engine import existing_ledger, ledger
from billing.db.ledger import reserve_numbers
from billing.db.locks import hold_period, write_transaction
from billing.db.tables import CreditEntry, CreditNoteNumberSequence, Invoice
from billing.email.outbox import OutboxSender, SendReport
from billing.errors import BillingError, InvoiceStateError, NotFound, PeriodBusy
from billing.money import decimal_to_minor
from billing.periods import BillingPeriod
from billing.statements.credit_notes import CreditNoteFiles, render_credit_note, write_credit_note
from billing.statements.files import period_folder
from billing.statements.pdf import shared_renderer
from billing.states import CreditSettlement, InvoiceStatus

Progress = Callable[[str], None]
Clock = Callable[[], datetime]

# How long a new credit note's emails wait for another run of the period (a close) to let go
# of it; after that they stay pending for `billing email send`.
SEND_WAIT_SECONDS = 30.0  # float-ok: a timeout


def _quiet(_text: str) -> None:
    return None


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CreditRequest:
    """What to credit: `--line` specs, or one `--amount` split over every line; why; and how
    it is settled (credit balance by default, or a refund made outside the system)."""

    reason: str
    lines: Sequence[str] = ()
    amount: str | Decimal | None = None
    settlement: CreditSettlement = CreditSettlement.CREDIT


@dataclass(frozen=True)
class IssuedCreditNote:
    """A credit note just committed, with its pending email deliveries."""

    credit_note_id: int
    number: str
    period: str
    delivery_ids: tuple[int, ...]


def issue_credit_note(
    engine: Engine,
    reference: str,
    request: CreditRequest,
    *,
    created_by: str,
    now: datetime,
) -> IssuedCreditNote:
    """In one transaction, under the invoice's row lock: check what may be credited, number
    the note (CN-YYYY-NNNNNN, gapless), write it and its lines, grant its total to the org's
    credit balance (`--credit`), and queue one email per contact in the outbox."""
    if (not request.lines) == (request.amount is None):
        raise BillingError(
            "say what to credit: --line METER[:KEY[:USER]]=AMOUNT (one or more), or --amount X "
            "to split over every line of the invoice, not both"
        )
    reason = request.reason.strip()
    if not reason:
        raise BillingError("a credit note needs a reason: pass --reason TEXT")
    specs = [parse_line_spec(text) for text in request.lines]
    with write_transaction(engine) as session:
        invoice = locked_invoice(session, reference)
        if invoice is None:
            _refuse_unknown(session, reference)
        assert invoice.id is not None
        assert invoice.number is not None
        if invoice.status == InvoiceStatus.VOID:
            raise InvoiceStateError(
                f"{invoice.number} of {invoice.org_id} for {invoice.period} is void: nothing is "
                "due on it, so there is nothing to credit"
            )
        if invoice.status not in (InvoiceStatus.FINALIZED, InvoiceStatus.SENT):
            raise InvoiceStateError(
                f"{invoice.number} is {invoice.status}; only finalized or sent invoices are "
                "credited"
            )
        currency = invoice.currency
        asked = sum(parse_amount(spec.amount, currency, f"--line {spec.text}") for spec in specs)
        if request.amount is not None:
            asked += parse_amount(request.amount, currency, "--amount")
        earlier = [
            (note.number, decimal_to_minor(note.total, currency))
            for note in credit_notes_of(session, invoice.id)
        ]
        total = decimal_to_minor(invoice.total, currency)
        check_within_invoice(invoice.number, currency, total, earlier, asked)  # the invoice first
        plan = CreditPlan(invoice.number, currency, creditable_lines(session, invoice))
        for spec in specs:
            plan.add_line(spec)
        if request.amount is not None:
            plan.add_amount(request.amount)
        assert plan.total() == asked
        taxes = planned_tax(session, invoice, asked)  # the tax on the net credited, per rate
        tax = sum(item.amount for item in taxes)
        if tax:  # the note's total is net + tax: within what is left of the invoice too
            check_within_invoice(invoice.number, currency, total, earlier, asked + tax)
        sequence = reserve_numbers(session, now.year, 1, CreditNoteNumberSequence)
        note = insert_credit_note(
            session,
            invoice,
            number=credit_note_number(now.year, sequence),
            planned=plan.lines(),
            reason=reason,
            settlement=request.settlement,
            created_by=created_by,
            now=now,
            taxes=taxes,
        )
        assert note.id is not None
        if request.settlement == CreditSettlement.CREDIT:
            grant_credit(
                session,
                org_id=note.org_id,
                currency=currency,
                amount=note.total,
                reason=f"credit note {note.number} of {invoice.number}: {reason}",
                created_by=created_by,
                now=now,
                credit_note_id=note.id,
            )
        deliveries = queue_credit_note(session, note, now)
        return IssuedCreditNote(note.id, note.number, note.period, tuple(deliveries))


def _refuse_unknown(session: Session, reference: str) -> NoReturn:
    """The one line for a reference that is no issued invoice's number (a draft's id says to
    adjust the draft instead)."""
    found = None
    if reference.strip().isdigit():
        found = session.get(Invoice, int(reference))
    if found is not None and found.status == InvoiceStatus.DRAFT:
        raise InvoiceStateError(
            f"invoice {found.id} of {found.org_id} for {found.period} is a draft, not yet "
            f"issued: adjust it instead: billing invoices adjust {found.id} --meter METER "
            "--amount -X --reason TEXT"
        )
    if found is not None:
        raise BillingError(
            f"{reference!r} is an id; credit notes take the invoice's number ({found.number})"
        )
    raise NotFound(
        f"no invoice numbered {reference!r}: give a number such as INV-2026-000123 "
        "(billing invoices list shows them)"
    )


@dataclass(frozen=True)
class CreatedCreditNote:
    """A new credit note: its document, the files written and how its emails went."""

    document: CreditNoteDocument
    files: list[Path]
    emails: SendReport | None  # None: they wait in the outbox (the period was busy)
    deliveries: int


def create_credit_note(
    settings: Settings,
    reference: str,
    request: CreditRequest,
    *,
    now: Clock = _utc_now,
    progress: Progress = _quiet,
    wait_seconds: float = SEND_WAIT_SECONDS,  # float-ok: a timeout
    actor: str | None = None,
) -> CreatedCreditNote:
    """Issue a credit note against an invoice number, write its PDF and CSV into the period's
    folder (`<org>-<CN-number>.pdf|csv`) and send its emails (each once); `actor` is who is
    recorded as its creator (None: the user and host running this)."""
    with ledger(settings) as engine:
        issued = issue_credit_note(
            engine, reference, request, created_by=actor or who_started(), now=now()
        )
        with Session(engine) as session:
            document = credit_note_documents(session, [issued.credit_note_id])[
                issued.credit_note_id
            ]
        files = render_credit_note(shared_renderer(settings), document)
        folder = period_folder(settings.output_dir, issued.period)
        written = write_credit_note(folder, files)
        progress(f"{issued.number}: wrote {written[0].name} and {written[1].suffix[1:]}")
        report = send_credit_note(
            settings, engine, issued, files, progress=progress, wait_seconds=wait_seconds, now=now
        )
    return CreatedCreditNote(document, written, report, len(issued.delivery_ids))


def send_credit_note(
    settings: Settings,
    engine: Engine,
    issued: IssuedCreditNote,
    files: CreditNoteFiles,
    *,
    progress: Progress,
    wait_seconds: float,  # float-ok: a timeout
    now: Clock,
) -> SendReport | None:
    """Send a new credit note's pending emails under the period's lock; if another run holds
    the period past `wait_seconds`, they stay pending for `billing email send`."""
    if not issued.delivery_ids:
        return SendReport()
    folder = period_folder(settings.output_dir, issued.period)
    try:
        with (
            hold_period(engine, issued.period, wait_seconds, progress, now),
            OutboxSender(
                settings,
                engine,
                BillingPeriod.parse(issued.period),
                shared_renderer(settings).environment,
                folder,
                delivery_ids=list(issued.delivery_ids),
                now=now,
            ) as outbox,
        ):
            outbox.send_credit_notes(lambda _note: files)
    except PeriodBusy:
        progress(
            f"{issued.period} is busy with another run: {issued.number}'s emails wait in the "
            f"outbox; billing email send --period {issued.period} sends them"
        )
        return None
    return outbox.report


def list_credit_notes(
    settings: Settings,
    *,
    invoice: str | None = None,
    org_id: str | None = None,
    period: str | None = None,
) -> list[CreditNoteRow]:
    """Credit notes by number, filtered by the invoice they credit, org or period."""
    with existing_ledger(settings) as engine, Session(engine) as session:
        return credit_note_rows(session, invoice_number=invoice, org_id=org_id, period=period)


@dataclass(frozen=True)
class DeliveryState:
    """One email of a credit note and how it went."""

    recipient: str
    status: str
    attempts: int
    detail: str
    sent_at: datetime | None


@dataclass(frozen=True)
class CreditNoteDetail:
    """One credit note: its document, its emails, and the credit-balance grant it made."""

    document: CreditNoteDocument
    emails: list[DeliveryState] = field(default_factory=list)
    grant_id: int | None = None


def credit_note_detail(settings: Settings, number: str) -> CreditNoteDetail:
    with existing_ledger(settings) as engine:
        return read_credit_note_detail(engine, number)


def read_credit_note_detail(engine: Engine, number: str) -> CreditNoteDetail:
    """One credit note by number, read through an engine the caller keeps open."""
    with Session(engine) as session:
        note = credit_note_by_number(session, number.strip())
        if note is None or note.id is None:
            raise NotFound(
                f"no credit note numbered {number!r}: give a number such as CN-2026-000001 "
                "(billing credit-notes list shows them)"
            )
        document = credit_note_documents(session, [note.id])[note.id]
        emails = [
            DeliveryState(
                row.recipient,
                row.status,
                row.attempts,
                row.error or row.server_reply or "",
                row.sent_at,
            )
            for row in credit_note_deliveries(session, note.id)
        ]
        grant_id = session.execute(
            select(col(CreditEntry.id)).where(col(CreditEntry.credit_note_id) == note.id)
        ).scalar_one_or_none()
        return CreditNoteDetail(document, emails, grant_id)
