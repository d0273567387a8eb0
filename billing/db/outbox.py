"""The email outbox: delivery rows written at finalization, claimed, and settled by result."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import func, insert, select, update
from sqlmodel import Session, col

from billing.db.tables import EmailDelivery, Invoice
from billing.db.webhooks import record_sent
from billing.states import DeliveryKind, DeliveryStatus, InvoiceStatus


class Addressed(Protocol):
    """What the outbox needs of an invoice: an ORM object or a row of these columns."""

    @property
    def id(self) -> int | None: ...
    @property
    def org_id(self) -> str: ...
    @property
    def period(self) -> str: ...
    @property
    def contact_emails(self) -> str: ...


def contacts_of(invoice: Addressed) -> list[str]:
    return [address for address in invoice.contact_emails.split(", ") if address]


def queue_statements(session: Session, invoices: Sequence[Addressed], now: datetime) -> int:
    """One pending delivery per contact of each invoice (in the finalizing transaction)."""
    rows = [
        {
            "invoice_id": invoice.id,
            "org_id": invoice.org_id,
            "period": invoice.period,
            "recipient": address,
            "kind": DeliveryKind.STATEMENT,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "created_at": now,
        }
        for invoice in invoices
        for address in contacts_of(invoice)
    ]
    if rows:
        session.execute(insert(EmailDelivery), rows)
    return len(rows)


def queue_resend(
    session: Session, invoice: Invoice, recipient: str, requested_by: str, now: datetime
) -> int:
    """An explicit, recorded resend of an issued invoice's statement to one of its contacts."""
    row = EmailDelivery(
        invoice_id=invoice.id or 0,
        org_id=invoice.org_id,
        period=invoice.period,
        recipient=recipient,
        kind=DeliveryKind.RESEND,
        status=DeliveryStatus.PENDING,
        requested_by=requested_by,
        created_at=now,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    return row.id


def queue_void_notice(session: Session, invoice: Invoice, now: datetime) -> int:
    """In the voiding transaction: a pending void notice to every contact who was (or may have
    been) sent the invoice; its statements not yet sent never will be. Returns the count."""
    mine = (col(EmailDelivery.invoice_id) == invoice.id) & col(EmailDelivery.kind).in_(
        (DeliveryKind.STATEMENT, DeliveryKind.RESEND)
    )
    reached = (DeliveryStatus.SENT, DeliveryStatus.SENDING, DeliveryStatus.UNKNOWN)
    recipients = (
        session.execute(
            select(col(EmailDelivery.recipient))
            .where(mine, col(EmailDelivery.status).in_(reached))
            .distinct()
            .order_by(col(EmailDelivery.recipient))
        )
        .scalars()
        .all()
    )
    session.execute(
        update(EmailDelivery)
        .where(mine, col(EmailDelivery.status) == DeliveryStatus.PENDING)
        .values(
            status=DeliveryStatus.FAILED,
            error=f"never sent: {invoice.number} was voided before its email went out",
        )
    )
    rows = [
        {
            "invoice_id": invoice.id,
            "org_id": invoice.org_id,
            "period": invoice.period,
            "recipient": recipient,
            "kind": DeliveryKind.VOID_NOTICE,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "created_at": now,
        }
        for recipient in recipients
    ]
    if rows:
        session.execute(insert(EmailDelivery), rows)
    return len(rows)


def give_up_on_interrupted(
    session: Session, period: str, now: datetime, delivery_ids: Sequence[int] | None = None
) -> list[EmailDelivery]:
    """Deliveries left `sending` by a sender that died (the caller holds the period, or only
    these `delivery_ids`): the server may have them, so they become `unknown` for a person to
    decide; never resent by themselves."""
    query = select(EmailDelivery).where(
        col(EmailDelivery.period) == period, col(EmailDelivery.status) == DeliveryStatus.SENDING
    )
    if delivery_ids is not None:
        query = query.where(col(EmailDelivery.id).in_(delivery_ids))
    stale = list(session.execute(query).scalars().all())
    for row in stale:
        row.status = DeliveryStatus.UNKNOWN
        row.error = (
            "the sender stopped between handing the message over and the server's reply; "
            "check the mail server's log for the Message-ID before resending"
        )
        row.last_attempt_at = row.last_attempt_at or now
    session.flush()
    return stale


@dataclass(frozen=True)
class Batch:
    """The pending deliveries of one invoice and kind: they travel as one message."""

    invoice_id: int
    kind: str
    delivery_ids: tuple[int, ...]
    recipients: tuple[str, ...]
    resend_id: int | None
    credit_note_id: int | None = None  # a credit note's email: one message per recipient


def pending_batches(
    session: Session, period: str, delivery_ids: Sequence[int] | None = None
) -> list[Batch]:
    query = select(EmailDelivery).where(
        col(EmailDelivery.period) == period, col(EmailDelivery.status) == DeliveryStatus.PENDING
    )
    if delivery_ids is not None:
        query = query.where(col(EmailDelivery.id).in_(delivery_ids))
    grouped: dict[tuple[int, str, int | None], list[EmailDelivery]] = defaultdict(list)
    for row in session.execute(query.order_by(col(EmailDelivery.id))).scalars():
        # A resend, and a credit note's email to one contact, are each their own message;
        # statement (or void notice) rows of one invoice share one.
        alone = row.kind in (DeliveryKind.RESEND, DeliveryKind.CREDIT_NOTE)
        key = (row.invoice_id, row.kind, row.id if alone else None)
        grouped[key].append(row)
    return [
        Batch(
            invoice_id,
            kind,
            tuple(row.id or 0 for row in rows),
            tuple(row.recipient for row in rows),
            alone_id if kind == DeliveryKind.RESEND else None,
            rows[0].credit_note_id if kind == DeliveryKind.CREDIT_NOTE else None,
        )
        for (invoice_id, kind, alone_id), rows in grouped.items()
    ]


def claim(session: Session, batch: Batch, message_id: str, now: datetime) -> Batch:
    """Mark a batch's still-pending rows `sending` (committed before the server is contacted)
    and return the batch of those alone: a row another sender claimed first is not sent twice.
    """
    claimed = set(
        session.execute(
            update(EmailDelivery)
            .where(
                col(EmailDelivery.id).in_(batch.delivery_ids),
                col(EmailDelivery.status) == DeliveryStatus.PENDING,
            )
            .values(
                status=DeliveryStatus.SENDING,
                attempts=EmailDelivery.attempts + 1,
                last_attempt_at=now,
                message_id=message_id,
            )
            .returning(col(EmailDelivery.id))
        )
        .scalars()
        .all()
    )
    kept = [
        (delivery_id, recipient)
        for delivery_id, recipient in zip(batch.delivery_ids, batch.recipients, strict=True)
        if delivery_id in claimed
    ]
    return Batch(
        batch.invoice_id,
        batch.kind,
        tuple(delivery_id for delivery_id, _ in kept),
        tuple(recipient for _, recipient in kept),
        batch.resend_id,
        batch.credit_note_id,
    )


def settle(
    session: Session,
    batch: Batch,
    status: str,
    reply: str,
    detail: str,
    refused: dict[str, str],
    now: datetime,
    max_attempts: int,
) -> None:
    """Record a delivery result on the batch's rows (refused recipients fail one by one).

    `status` is how the hand-over went: "sent", "retry", "failed" or "unknown" (the transport's
    word, billing.email.smtp.SendStatus); a "retry" row is pending again until `max_attempts`.
    """
    rows = (
        session.execute(select(EmailDelivery).where(col(EmailDelivery.id).in_(batch.delivery_ids)))
        .scalars()
        .all()
    )
    for row in rows:
        row.server_reply = reply or None
        if status == "sent" and row.recipient in refused:
            row.status = DeliveryStatus.FAILED
            row.error = f"recipient refused: {refused[row.recipient]}"
        elif status == "sent":
            row.status, row.sent_at, row.error = DeliveryStatus.SENT, now, None
        elif status == "retry" and row.attempts < max_attempts:
            row.status, row.error = DeliveryStatus.PENDING, f"will retry: {detail or reply}"
        elif status == "retry":
            row.status = DeliveryStatus.FAILED
            row.error = f"gave up after {row.attempts} attempts: {detail}"
        else:
            row.status, row.error = DeliveryStatus(status), detail or reply
    session.flush()
    if status == "sent" and batch.kind == DeliveryKind.STATEMENT:
        _mark_sent_when_delivered(session, batch.invoice_id, now)


def _mark_sent_when_delivered(session: Session, invoice_id: int, now: datetime) -> None:
    """An invoice is `sent` once every statement delivery of it went out."""
    open_rows = session.execute(
        select(func.count()).where(
            col(EmailDelivery.invoice_id) == invoice_id,
            col(EmailDelivery.kind) == DeliveryKind.STATEMENT,
            col(EmailDelivery.status) != DeliveryStatus.SENT,
        )
    ).scalar_one()
    if open_rows == 0:
        became_sent = session.execute(
            update(Invoice)
            .where(col(Invoice.id) == invoice_id, col(Invoice.status) == InvoiceStatus.FINALIZED)
            .values(status=InvoiceStatus.SENT, sent_at=now)
            .returning(col(Invoice.id))
        ).first()
        if became_sent is not None:
            record_sent(session, invoice_id, now)  # webhook event, in this transaction


def pending_void_notices(session: Session, invoice_id: int) -> list[int]:
    """The ids of an invoice's void notices still to send."""
    query = select(col(EmailDelivery.id)).where(
        col(EmailDelivery.invoice_id) == invoice_id,
        col(EmailDelivery.kind) == DeliveryKind.VOID_NOTICE,
        col(EmailDelivery.status) == DeliveryStatus.PENDING,
    )
    return [int(delivery_id) for delivery_id in session.execute(query).scalars()]


def void_notice_facts(
    session: Session, invoice_ids: Sequence[int]
) -> dict[int, tuple[Invoice, str]]:
    """The void invoices these notices are about, each with the number of its replacement
    ("" while there is none)."""
    replacement = Invoice.__table__.alias("replacement")  # type: ignore[attr-defined]
    query = (
        select(Invoice, replacement.c.number)
        .outerjoin(replacement, replacement.c.replaces_invoice_id == col(Invoice.id))
        .where(col(Invoice.id).in_(invoice_ids))
        .order_by(replacement.c.id)
    )
    return {invoice.id or 0: (invoice, number or "") for invoice, number in session.execute(query)}


def deliveries(session: Session, period: str) -> list[tuple[EmailDelivery, str | None]]:
    """Every delivery of a period with its invoice number, by org and recipient."""
    return [
        (row, number)
        for row, number in session.execute(
            select(EmailDelivery, col(Invoice.number))
            .join(Invoice, col(Invoice.id) == col(EmailDelivery.invoice_id))
            .where(col(EmailDelivery.period) == period)
            .order_by(
                col(EmailDelivery.org_id), col(EmailDelivery.recipient), col(EmailDelivery.id)
            )
        )
    ]
