"""Credit notes in the ledger: the credited invoice locked, its creditable lines, the note and
its lines written with their outbox deliveries, and the reads behind list, show and emails."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import insert, select
from sqlmodel import Session, col

from billing.credit_notes import (
    CREDITABLE_CLASSES,
    CreditableLine,
    CreditNoteDocument,
    CreditNoteDocumentLine,
    LineKey,
    PlannedLine,
)
from billing.db.tables import (
    CreditNote,
    CreditNoteLine,
    EmailDelivery,
    Invoice,
    InvoiceCharge,
    InvoiceLine,
)
from billing.db.webhooks import record_credit_note
from billing.errors import InvoiceStateError
from billing.money import at_minor_units, decimal_to_minor, format_minor, minor_to_decimal
from billing.states import ChargeClass, DeliveryKind, DeliveryStatus
from billing.taxes import credited_tax


def locked_invoice(session: Session, number: str) -> Invoice | None:
    """The invoice of this number, its row locked until the transaction ends (SELECT … FOR
    UPDATE on PostgreSQL; SQLite's write transactions are serialised by BEGIN IMMEDIATE), so
    two credit notes of one invoice, or a credit note and a void, never pass their checks at
    once."""
    return (
        session.execute(select(Invoice).where(col(Invoice.number) == number).with_for_update())
        .scalars()
        .first()
    )


def credit_notes_of(session: Session, invoice_id: int) -> list[CreditNote]:
    """An invoice's credit notes, by number."""
    query = (
        select(CreditNote)
        .where(col(CreditNote.invoice_id) == invoice_id)
        .order_by(col(CreditNote.number))
    )
    return list(session.execute(query).scalars().all())


def refuse_void_of_credited(session: Session, invoice: Invoice) -> None:
    """A void of an invoice with credit notes would credit the customer twice: refused in one
    line naming the notes and what to do instead (the invoice row is locked first, so a credit
    note being created at the same moment is seen)."""
    session.execute(
        select(col(Invoice.id)).where(col(Invoice.id) == invoice.id).with_for_update()
    ).all()
    notes = credit_notes_of(session, invoice.id or 0)
    if not notes:
        return
    numbers = ", ".join(note.number for note in notes)
    left = invoice.total - sum((note.total for note in notes), Decimal(0))
    remedy = (
        f"issue a credit note for the rest instead (billing credit-notes create {invoice.number} "
        f"--amount {format_minor(left, invoice.currency)})"
        if left > 0
        else "it is credited in full already, so nothing is due on it"
    )
    raise InvoiceStateError(
        f"{invoice.number} has credit notes {numbers}; a void would credit the customer "
        f"twice: {remedy}"
    )


def creditable_lines(session: Session, invoice: Invoice) -> list[CreditableLine]:
    """The invoice's lines per meter, API key and user (usage, adjustment and correction lines
    together), each with what earlier credit notes credited of it, in minor units."""
    currency = invoice.currency
    billed: dict[LineKey, int] = defaultdict(int)
    classes: dict[LineKey, set[str]] = defaultdict(set)
    units: dict[LineKey, str] = {}
    for meter, api_key_id, user_id, unit, amount, charge_class in session.execute(
        select(
            col(InvoiceLine.meter),
            col(InvoiceLine.api_key_id),
            col(InvoiceLine.user_id),
            col(InvoiceLine.unit),
            col(InvoiceLine.amount),
            col(InvoiceLine.charge_class),
        ).where(
            col(InvoiceLine.invoice_id) == invoice.id,
            col(InvoiceLine.charge_class).in_(CREDITABLE_CLASSES),
        )
    ):
        key = (meter, api_key_id, user_id)
        billed[key] += decimal_to_minor(amount, currency)
        classes[key].add(charge_class)
        units.setdefault(key, unit)
    credited: dict[LineKey, int] = defaultdict(int)
    for meter, api_key_id, user_id, amount in session.execute(
        select(
            col(CreditNoteLine.meter),
            col(CreditNoteLine.api_key_id),
            col(CreditNoteLine.user_id),
            col(CreditNoteLine.amount),
        )
        .join(CreditNote, col(CreditNote.id) == col(CreditNoteLine.credit_note_id))
        .where(col(CreditNote.invoice_id) == invoice.id)
    ):
        credited[(meter, api_key_id, user_id)] += decimal_to_minor(amount, currency)
    descriptions = _descriptions(session, invoice.id or 0)
    return [
        CreditableLine(
            meter=key[0],
            api_key_id=key[1],
            user_id=key[2],
            description=descriptions.get(key[0], key[0]),
            unit=units[key],
            # A line that mixes classes is recorded as the first of usage, adjustment, correction.
            charge_class=next(c for c in CREDITABLE_CLASSES if c in classes[key]),
            billed=amount,
            credited=credited[key],
        )
        for key, amount in billed.items()
    ]


def _descriptions(session: Session, invoice_id: int) -> dict[str, str]:
    """Each meter's charge description on the invoice (its usage charge first)."""
    found: dict[str, str] = {}
    for meter, description, charge_class in session.execute(
        select(
            col(InvoiceCharge.meter),
            col(InvoiceCharge.description),
            col(InvoiceCharge.charge_class),
        )
        .where(col(InvoiceCharge.invoice_id) == invoice_id)
        .order_by(col(InvoiceCharge.position))
    ):
        if charge_class in CREDITABLE_CLASSES:
            found.setdefault(meter, description)
    return found


@dataclass(frozen=True, slots=True)
class PlannedTax:
    """The tax a new credit note credits on one rate of its invoice, in minor units (>= 0)."""

    meter: str  # the rate's id (the invoice's tax charge's meter)
    description: str  # as the invoice printed it: "VAT 19%", "Reverse charge"
    amount: int


def planned_tax(session: Session, invoice: Invoice, credited_net: int) -> list[PlannedTax]:
    """The tax lines of a credit note that credits `credited_net` of an invoice's net: per
    tax charge of the invoice, half-up of the net × its percent, except that the note which
    brings the rate's remaining net to zero credits exactly the tax that remains (so the notes
    of an invoice never credit more tax than it charged). An untaxed invoice: none."""
    currency = invoice.currency
    taxes = session.execute(
        select(
            col(InvoiceCharge.meter),
            col(InvoiceCharge.description),
            col(InvoiceCharge.billable),
            col(InvoiceCharge.amount),
            col(InvoiceCharge.tax_percent),
        )
        .where(
            col(InvoiceCharge.invoice_id) == invoice.id,
            col(InvoiceCharge.charge_class) == ChargeClass.TAX,
        )
        .order_by(col(InvoiceCharge.position))
    ).all()
    if not taxes:
        return []
    earlier_net = 0
    earlier_tax: dict[str, int] = defaultdict(int)
    for meter, amount, charge_class in session.execute(
        select(
            col(CreditNoteLine.meter), col(CreditNoteLine.amount), col(CreditNoteLine.charge_class)
        )
        .join(CreditNote, col(CreditNote.id) == col(CreditNoteLine.credit_note_id))
        .where(col(CreditNote.invoice_id) == invoice.id)
    ):
        if charge_class == ChargeClass.TAX:
            earlier_tax[meter] += decimal_to_minor(amount, currency)
        else:
            earlier_net += decimal_to_minor(amount, currency)
    planned: list[PlannedTax] = []
    for meter, description, net, amount, percent in taxes:
        # One rule per invoice: its one tax charge taxes the whole net the note credits.
        remaining_net = decimal_to_minor(at_minor_units(net, currency), currency) - earlier_net
        remaining_tax = decimal_to_minor(amount, currency) - earlier_tax[meter]
        tax = credited_tax(percent or Decimal(0), credited_net, remaining_net, remaining_tax)
        planned.append(PlannedTax(meter, description, tax))
    return planned


def insert_credit_note(
    session: Session,
    invoice: Invoice,
    *,
    number: str,
    planned: Sequence[PlannedLine],
    reason: str,
    settlement: str,
    created_by: str,
    now: datetime,
    taxes: Sequence[PlannedTax] = (),
) -> CreditNote:
    """The credit note and its lines (amounts positive), copying the invoice's addressee; its
    tax lines (one per rate, class "tax") after the net lines, in its total."""
    currency = invoice.currency
    note = CreditNote(
        number=number,
        invoice_id=invoice.id or 0,
        org_id=invoice.org_id,
        org_name=invoice.org_name,
        contact_emails=invoice.contact_emails,
        billing_address=invoice.billing_address,
        period=invoice.period,
        currency=currency,
        total=minor_to_decimal(
            sum(item.amount for item in planned) + sum(tax.amount for tax in taxes), currency
        ),
        reason=reason,
        settlement=settlement,
        created_by=created_by,
        created_at=now,
    )
    session.add(note)
    session.flush()
    session.add_all(
        CreditNoteLine(
            credit_note_id=note.id or 0,
            meter=item.line.meter,
            description=item.line.description,
            unit=item.line.unit,
            charge_class=item.line.charge_class,
            api_key_id=item.line.api_key_id,
            user_id=item.line.user_id,
            amount=minor_to_decimal(item.amount, currency),
        )
        for item in planned
    )
    session.add_all(
        CreditNoteLine(
            credit_note_id=note.id or 0,
            meter=tax.meter,
            description=tax.description,
            unit="",
            charge_class=ChargeClass.TAX,
            api_key_id=None,
            user_id=None,
            amount=minor_to_decimal(tax.amount, currency),
        )
        for tax in taxes
    )
    session.flush()
    record_credit_note(session, note, invoice.number)  # webhook event, in this transaction
    return note


def queue_credit_note(session: Session, note: CreditNote, now: datetime) -> list[int]:
    """One pending delivery per contact of the credited invoice (in the creating transaction);
    returns their ids."""
    contacts = list(dict.fromkeys(a for a in note.contact_emails.split(", ") if a))
    if not contacts:
        return []
    rows = [
        {
            "invoice_id": note.invoice_id,
            "credit_note_id": note.id,
            "org_id": note.org_id,
            "period": note.period,
            "recipient": address,
            "kind": DeliveryKind.CREDIT_NOTE,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "requested_by": note.created_by,
            "created_at": now,
        }
        for address in contacts
    ]
    session.execute(insert(EmailDelivery), rows)
    return [
        int(delivery_id)
        for delivery_id in session.execute(
            select(col(EmailDelivery.id)).where(
                col(EmailDelivery.credit_note_id) == note.id,
                col(EmailDelivery.kind) == DeliveryKind.CREDIT_NOTE,
            )
        ).scalars()
    ]


def credit_note_documents(
    session: Session, credit_note_ids: Collection[int]
) -> dict[int, CreditNoteDocument]:
    """The documents of these credit notes, by id, read back with their invoice's facts."""
    if not credit_note_ids:
        return {}
    found = session.execute(
        select(CreditNote, Invoice)
        .join(Invoice, col(Invoice.id) == col(CreditNote.invoice_id))
        .where(col(CreditNote.id).in_(list(credit_note_ids)))
    ).all()
    lines: dict[int, list[CreditNoteLine]] = defaultdict(list)
    for line in session.execute(
        select(CreditNoteLine)
        .where(col(CreditNoteLine.credit_note_id).in_(list(credit_note_ids)))
        .order_by(col(CreditNoteLine.id))
    ).scalars():
        lines[line.credit_note_id].append(line)
    return {note.id or 0: _document(note, invoice, lines[note.id or 0]) for note, invoice in found}


def _document(
    note: CreditNote, invoice: Invoice, lines: Sequence[CreditNoteLine]
) -> CreditNoteDocument:
    currency = note.currency
    return CreditNoteDocument(
        credit_note_id=note.id or 0,
        number=note.number,
        org_id=note.org_id,
        org_name=note.org_name,
        emails=tuple(a for a in note.contact_emails.split(", ") if a),
        billing_address=note.billing_address,
        period=note.period,
        currency=currency,
        total=minor_to_decimal(decimal_to_minor(note.total, currency), currency),
        reason=note.reason,
        settlement=note.settlement,
        created_by=note.created_by,
        created_at=note.created_at,
        invoice_number=invoice.number or "",
        invoice_issued_at=invoice.finalized_at or invoice.issued_at,
        invoice_total=minor_to_decimal(decimal_to_minor(invoice.total, currency), currency),
        rate_card=f"{invoice.rate_card_id}@{invoice.rate_card_version}",
        customer_tax_id=invoice.customer_tax_id,
        purchase_order=invoice.purchase_order,
        lines=tuple(
            CreditNoteDocumentLine(
                meter=line.meter,
                description=line.description,
                unit=line.unit,
                charge_class=line.charge_class,
                api_key_id=line.api_key_id,
                user_id=line.user_id,
                amount=minor_to_decimal(decimal_to_minor(line.amount, currency), currency),
            )
            for line in lines
        ),
    )


@dataclass(frozen=True)
class CreditNoteRow:
    """One credit note as `billing credit-notes list` and `billing invoices show` list it."""

    id: int
    number: str
    invoice_number: str
    org_id: str
    period: str
    currency: str
    total: Decimal
    settlement: str
    reason: str
    created_by: str
    created_at: datetime


def credit_note_rows(
    session: Session,
    *,
    invoice_number: str | None = None,
    invoice_id: int | None = None,
    org_id: str | None = None,
    period: str | None = None,
) -> list[CreditNoteRow]:
    """Credit notes by number, filtered by the invoice they credit, org or period."""
    query = select(CreditNote, col(Invoice.number)).join(
        Invoice, col(Invoice.id) == col(CreditNote.invoice_id)
    )
    if invoice_number is not None:
        query = query.where(col(Invoice.number) == invoice_number)
    if invoice_id is not None:
        query = query.where(col(CreditNote.invoice_id) == invoice_id)
    if org_id is not None:
        query = query.where(col(CreditNote.org_id) == org_id)
    if period is not None:
        query = query.where(col(CreditNote.period) == period)
    return [
        CreditNoteRow(
            id=note.id or 0,
            number=note.number,
            invoice_number=number or "",
            org_id=note.org_id,
            period=note.period,
            currency=note.currency,
            total=minor_to_decimal(decimal_to_minor(note.total, note.currency), note.currency),
            settlement=note.settlement,
            reason=note.reason,
            created_by=note.created_by,
            created_at=note.created_at,
        )
        for note, number in session.execute(query.order_by(col(CreditNote.number)))
    ]


def credit_note_by_number(session: Session, number: str) -> CreditNote | None:
    return (
        session.execute(select(CreditNote).where(col(CreditNote.number) == number))
        .scalars()
        .first()
    )


def credit_note_deliveries(session: Session, credit_note_id: int) -> list[EmailDelivery]:
    """A credit note's emails, one per contact, with how each went."""
    query = (
        select(EmailDelivery)
        .where(
            col(EmailDelivery.credit_note_id) == credit_note_id,
            col(EmailDelivery.kind) == DeliveryKind.CREDIT_NOTE,
        )
        .order_by(col(EmailDelivery.recipient))
    )
    return list(session.execute(query).scalars().all())


def pending_credit_note_deliveries(session: Session, credit_note_id: int) -> list[int]:
    """The ids of a credit note's deliveries still to send."""
    return [
        row.id or 0
        for row in credit_note_deliveries(session, credit_note_id)
        if row.status == DeliveryStatus.PENDING
    ]


def credit_note_numbers(session: Session, credit_note_ids: Collection[int]) -> dict[int, str]:
    """The numbers of these credit notes, by id."""
    if not credit_note_ids:
        return {}
    query = select(col(CreditNote.id), col(CreditNote.number)).where(
        col(CreditNote.id).in_(list(credit_note_ids))
    )
    return {int(note_id): str(number) for note_id, number in session.execute(query)}
