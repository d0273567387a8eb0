"""The invoice lifecycle: drafts replaced per period, finalization with gapless numbers,
corrections of finalized invoices, void and sent. Callers supply the transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Row, bindparam, delete, func, insert, select, update
from sqlmodel import Session, col

from billing.adjustments import minimum_of
from billing.corrections import CORRECTION, USAGE, BilledLine, correction_lines
from billing.db.adjustments import (
    due_with_adjustments,
    mark_adjustments_applied,
    pending_adjustment_orgs,
    readjust_drafts,
    release_adjustments,
)
from billing.db.bulk import copy_rows, insert_returning_ids, upsert_insert
from billing.db.credit_balance import reverse_void, settle_drafts
from billing.db.credit_notes import refuse_void_of_credited
from billing.db.outbox import queue_statements, queue_void_notice
from billing.db.review import held_drafts, on_hold
from billing.db.tables import (
    CHARGE_COPY_COLUMNS,
    LINE_COPY_COLUMNS,
    CreditNoteNumberSequence,
    Invoice,
    InvoiceCharge,
    InvoiceCorrection,
    InvoiceDailyUsage,
    InvoiceLine,
    InvoiceNumberSequence,
)
from billing.db.taxes import retax
from billing.db.webhooks import invoice_event_data, record_event, record_finalized
from billing.domain import RatedInvoice
from billing.errors import InvoiceStateError
from billing.money import minor_to_decimal, round_quantity
from billing.periods import BillingPeriod
from billing.states import InvoiceStatus, WebhookEventType

ISSUED = (InvoiceStatus.FINALIZED, InvoiceStatus.SENT)


@dataclass(frozen=True, slots=True)
class OrgOutcome:
    """What a close did with one org's invoice of the period."""

    org_id: str
    action: str  # drafted | already finalized | corrected | reissued
    detail: str = ""


def _in_period(period: BillingPeriod, org_scope: Collection[str] | None) -> ColumnElement[bool]:
    scope = col(Invoice.period) == str(period)
    if org_scope is not None:
        scope = scope & col(Invoice.org_id).in_(org_scope)
    return scope


def store_period(
    session: Session,
    *,
    run_id: int,
    period: BillingPeriod,
    rated: Sequence[RatedInvoice],
    now: datetime,
    due_at: datetime,
    empty_invoice: Callable[[str], RatedInvoice],
    org_scope: Collection[str] | None = None,
    reissue: bool = False,
) -> list[OrgOutcome]:
    """Store a close's rating: drafts are replaced; finalized invoices are never touched, a
    difference from them becomes a correction on the org's next open period (or, with
    `reissue`, the original is voided and a replacement drafted)."""
    live = (
        session.execute(
            select(Invoice).where(
                _in_period(period, org_scope), col(Invoice.status) != InvoiceStatus.VOID
            )
        )
        .scalars()
        .all()
    )
    issued = {invoice.org_id: invoice for invoice in live if invoice.status in ISSUED}
    delete_drafts(
        session, [invoice.id for invoice in live if invoice.status == InvoiceStatus.DRAFT]
    )

    rated_by_org = {invoice.org.org_id: invoice for invoice in rated}
    voided = unreplaced_voids(session, period, org_scope)
    to_draft: list[tuple[RatedInvoice, int | None]] = []
    outcomes = [
        OrgOutcome(org_id, "drafted") for org_id in sorted(rated_by_org) if org_id not in issued
    ]
    to_draft += [(rated_by_org[o.org_id], voided.get(o.org_id)) for o in outcomes]
    for org_id, original in sorted(issued.items()):
        fresh = rated_by_org.get(org_id)
        assert original.id is not None
        delta = correction_lines(
            billed_lines(session, original.id), due_with_adjustments(session, original, fresh)
        )
        if not delta:
            outcomes.append(OrgOutcome(org_id, "already finalized", original.number or ""))
            continue
        difference = sum((line.amount for line in delta), Decimal(0))
        if reissue:
            void_invoice(
                session,
                original,
                f"reissued by run {run_id}: the usage changed the total by "
                f"{difference:+} {original.currency}",
                now,
            )
            to_draft.append((fresh or empty_invoice(org_id), original.id))
            outcomes.append(OrgOutcome(org_id, "reissued", f"{original.number} is void"))
            continue
        target = next_open_period(session, org_id, period)
        record_corrections(session, run_id, original, target, delta, now)
        outcomes.append(
            OrgOutcome(
                org_id,
                "corrected",
                f"{difference:+} {original.currency} to {original.number}, billed on {target}",
            )
        )

    drafted = {invoice.org.org_id for invoice, _ in to_draft}
    waiting = pending_correction_orgs(session, period, org_scope)
    for org_id in sorted(waiting - drafted):
        if org_id not in issued:
            to_draft.append((empty_invoice(org_id), voided.get(org_id)))
            outcomes.append(OrgOutcome(org_id, "drafted", "corrections only"))
    drafted = {invoice.org.org_id for invoice, _ in to_draft}
    for org_id in sorted(pending_adjustment_orgs(session, period, org_scope) - drafted):
        if org_id not in issued:  # adjusted, but no usage now: its adjustments still stand
            to_draft.append((empty_invoice(org_id), voided.get(org_id)))
            outcomes.append(OrgOutcome(org_id, "drafted", "adjustments only"))
    inserted = insert_drafts(session, run_id, period, to_draft, now, due_at)
    readjust_drafts(session, period, inserted, [draft.org.org_id for draft, _ in to_draft])
    for invoice_id, (invoice, _replaces) in zip(inserted, to_draft, strict=True):
        if invoice.org.org_id in waiting:
            attach_corrections(session, invoice_id)
    retax(session, inserted)  # net -> tax per rate, once the net is complete
    return outcomes


def unreplaced_voids(
    session: Session, period: BillingPeriod, org_scope: Collection[str] | None
) -> dict[str, int]:
    """Per org, its newest void invoice of the period that no other invoice replaces: the one
    the org's next invoice of the period replaces (after `billing void`). Drafts must already
    be deleted, or a standing draft would count as the replacement."""
    replacer = Invoice.__table__.alias("replacer")  # type: ignore[attr-defined]
    query = (
        select(col(Invoice.org_id), func.max(col(Invoice.id)))
        .where(_in_period(period, org_scope), col(Invoice.status) == InvoiceStatus.VOID)
        .where(~select(replacer.c.id).where(replacer.c.replaces_invoice_id == Invoice.id).exists())
        .group_by(col(Invoice.org_id))
    )
    return {str(org_id): int(invoice_id) for org_id, invoice_id in session.execute(query)}


def delete_drafts(session: Session, invoice_ids: Sequence[int | None]) -> None:
    """Remove draft invoices and everything under them (the database refuses other states),
    a few statements per chunk of ids (within the databases' limits on bound parameters)."""
    ids = [invoice_id for invoice_id in invoice_ids if invoice_id is not None]
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        chunk = ids[start : start + _IDS_PER_STATEMENT]
        for child in (InvoiceDailyUsage, InvoiceLine, InvoiceCharge):
            session.execute(delete(child).where(col(child.invoice_id).in_(chunk)))
        session.execute(
            delete(Invoice).where(
                col(Invoice.id).in_(chunk), col(Invoice.status) == InvoiceStatus.DRAFT
            )
        )


# Within SQLite's 32,766 and PostgreSQL's 65,535 bound parameters per statement.
_IDS_PER_STATEMENT = 10_000


def insert_drafts(
    session: Session,
    run_id: int,
    period: BillingPeriod,
    drafts: Sequence[tuple[RatedInvoice, int | None]],
    now: datetime,
    due_at: datetime,
) -> list[int]:
    """Insert rated invoices as drafts (no number yet) with their charges, lines and session
    time per day, in bulk (COPY on PostgreSQL)."""
    if not drafts:
        return []
    invoice_rows = [
        (
            run_id,
            None,
            InvoiceStatus.DRAFT,
            invoice.org.org_id,
            invoice.org.name,
            ", ".join(invoice.org.emails),
            str(period),
            invoice.currency,
            invoice.rate_card.id,
            invoice.rate_card.version,
            invoice.rate_card.content_hash,
            minor_to_decimal(invoice.total_minor, invoice.currency),
            now,
            due_at,
            invoice.org.billing_address,
            replaces,
            invoice.org.discount_percent,
            minimum_of(invoice),
            invoice.org.purchase_order,
            invoice.org.tax_id,
            invoice.org.country,
            None if invoice.tax_rule is None else invoice.tax_rule.to_json(),
        )
        for invoice, replaces in drafts
    ]
    inserted = insert_returning_ids(session, Invoice, _INVOICE_COLUMNS, invoice_rows)
    stored = list(zip(inserted, (invoice for invoice, _replaces in drafts), strict=True))
    copy_rows(session, InvoiceCharge, _CHARGE_COLUMNS, _charge_rows(stored))
    copy_rows(session, InvoiceLine, _LINE_COLUMNS, _line_rows(stored))
    copy_rows(
        session,
        InvoiceDailyUsage,
        ("invoice_id", "day_start", "duration_ms"),
        (
            (invoice_id, day_start, duration_ms)
            for invoice_id, invoice in stored
            for day_start, duration_ms in invoice.daily_duration_ms
        ),
    )
    return inserted


_INVOICE_COLUMNS = (
    "run_id",
    "number",
    "status",
    "org_id",
    "org_name",
    "contact_emails",
    "period",
    "currency",
    "rate_card_id",
    "rate_card_version",
    "rate_card_hash",
    "total",
    "issued_at",
    "due_at",
    "billing_address",
    "replaces_invoice_id",
    "discount_percent",
    "minimum_charge",
    "purchase_order",
    "customer_tax_id",
    "customer_country",
    "tax_rule",
)
_CHARGE_COLUMNS = (*CHARGE_COPY_COLUMNS, "list_amount")
_LINE_COLUMNS = LINE_COPY_COLUMNS


def _charge_rows(stored: Sequence[tuple[int, RatedInvoice]]) -> Iterator[tuple[object, ...]]:
    """The usage charges of stored drafts, in `_CHARGE_COLUMNS` order."""
    for invoice_id, invoice in stored:
        for position, charge in enumerate(invoice.charges):
            yield (
                invoice_id,
                position,
                charge.meter,
                charge.description,
                charge.unit,
                round_quantity(charge.quantity),
                charge.included,
                round_quantity(charge.billable),
                charge.pricing,
                minor_to_decimal(charge.amount_minor, invoice.currency),
                USAGE,
                None
                if charge.list_amount_minor is None
                else minor_to_decimal(charge.list_amount_minor, invoice.currency),
            )


def _line_rows(stored: Sequence[tuple[int, RatedInvoice]]) -> Iterator[tuple[object, ...]]:
    """The chargeback lines of stored drafts' usage charges, in `_LINE_COLUMNS` order."""
    for invoice_id, invoice in stored:
        for charge in invoice.charges:
            for line in charge.lines:
                yield (
                    invoice_id,
                    charge.meter,
                    line.key.api_key_id,
                    line.key.user_id,
                    round_quantity(line.quantity),
                    charge.unit,
                    minor_to_decimal(line.amount_minor, invoice.currency),
                    USAGE,
                )


def billed_lines(session: Session, invoice_id: int) -> list[BilledLine]:
    """What an issued invoice billed per meter, API key and user, with the corrections already
    recorded against it."""
    descriptions = dict(
        session.execute(
            select(col(InvoiceCharge.meter), col(InvoiceCharge.description)).where(
                col(InvoiceCharge.invoice_id) == invoice_id,
                col(InvoiceCharge.charge_class) == USAGE,
            )
        ).all()
    )
    line = InvoiceLine
    billed = [
        BilledLine(meter, descriptions.get(meter, meter), unit, key, user, quantity, amount)
        for meter, unit, key, user, quantity, amount in session.execute(
            select(
                col(line.meter),
                col(line.unit),
                col(line.api_key_id),
                col(line.user_id),
                col(line.quantity),
                col(line.amount),
            ).where(col(line.invoice_id) == invoice_id, col(line.charge_class) == USAGE)
        )
    ]
    fix = InvoiceCorrection
    billed += [
        BilledLine(meter, description, unit, key, user, quantity, amount)
        for meter, description, unit, key, user, quantity, amount in session.execute(
            select(
                col(fix.meter),
                col(fix.description),
                col(fix.unit),
                col(fix.api_key_id),
                col(fix.user_id),
                col(fix.quantity),
                col(fix.amount),
            ).where(col(fix.original_invoice_id) == invoice_id)
        )
    ]
    return billed


def next_open_period(session: Session, org_id: str, period: BillingPeriod) -> BillingPeriod:
    """The first period after `period` in which the org has no issued invoice."""
    issued = set(
        session.execute(
            select(col(Invoice.period)).where(
                col(Invoice.org_id) == org_id,
                col(Invoice.period) > str(period),
                col(Invoice.status).in_(ISSUED),
            )
        )
        .scalars()
        .all()
    )
    target = period.next()
    while str(target) in issued:
        target = target.next()
    return target


def record_corrections(
    session: Session,
    run_id: int,
    original: Invoice,
    target: BillingPeriod,
    delta: Sequence[BilledLine],
    now: datetime,
) -> None:
    """Store the difference to an issued invoice, to be billed on the org's `target` invoice;
    a draft already standing for that period takes it at once."""
    assert original.id is not None
    session.execute(
        insert(InvoiceCorrection),
        [
            {
                "run_id": run_id,
                "org_id": original.org_id,
                "original_invoice_id": original.id,
                "target_period": str(target),
                "meter": line.meter,
                "description": line.description,
                "unit": line.unit,
                "api_key_id": line.api_key_id,
                "user_id": line.user_id,
                "quantity": line.quantity,
                "amount": line.amount,
                "currency": original.currency,
                "created_at": now,
            }
            for line in delta
        ],
    )
    draft = session.execute(
        select(col(Invoice.id)).where(
            col(Invoice.org_id) == original.org_id,
            col(Invoice.period) == str(target),
            col(Invoice.status) == InvoiceStatus.DRAFT,
        )
    ).scalar_one_or_none()
    if draft is not None:
        attach_corrections(session, draft)


def pending_correction_orgs(
    session: Session, period: BillingPeriod, org_scope: Collection[str] | None
) -> set[str]:
    """Orgs with corrections waiting to be billed on their invoice of `period`."""
    query = select(col(InvoiceCorrection.org_id)).where(
        col(InvoiceCorrection.target_period) == str(period),
        col(InvoiceCorrection.applied_invoice_id).is_(None),
    )
    if org_scope is not None:
        query = query.where(col(InvoiceCorrection.org_id).in_(org_scope))
    return set(session.execute(query.distinct()).scalars().all())


def attach_corrections(session: Session, invoice_id: int) -> None:
    """(Re)write a draft's correction charges from the corrections waiting for its period, and
    its total from all its charges."""
    invoice = session.get(Invoice, invoice_id)
    if invoice is None or invoice.status != InvoiceStatus.DRAFT:
        raise InvoiceStateError(f"invoice {invoice_id} is not a draft; corrections go on drafts")
    for child in (InvoiceLine, InvoiceCharge):
        session.execute(
            delete(child).where(
                col(child.invoice_id) == invoice_id, col(child.charge_class) == CORRECTION
            )
        )
    fix, original = InvoiceCorrection, Invoice.__table__.alias("original")  # type: ignore[attr-defined]
    pending = session.execute(
        select(fix, original.c.number, original.c.period)
        .join(original, original.c.id == fix.original_invoice_id)
        .where(
            col(fix.org_id) == invoice.org_id,
            col(fix.target_period) == invoice.period,
            col(fix.applied_invoice_id).is_(None),
        )
        .order_by(original.c.period, col(fix.meter), col(fix.id))
    ).all()
    grouped: dict[tuple[int, str], list[InvoiceCorrection]] = defaultdict(list)
    labels: dict[int, str] = {}
    for correction, number, period in pending:
        if correction.currency != invoice.currency:
            raise InvoiceStateError(
                f"org {invoice.org_id}: a correction in {correction.currency} of {number} cannot "
                f"be billed on its {invoice.period} invoice in {invoice.currency}; reissue "
                f"{number} instead (billing close --period {period} --reissue)"
            )
        grouped[(correction.original_invoice_id, correction.meter)].append(correction)
        labels[correction.original_invoice_id] = f"corrects {number} ({period})"
    position = (
        session.execute(
            select(func.max(col(InvoiceCharge.position))).where(
                col(InvoiceCharge.invoice_id) == invoice_id
            )
        ).scalar_one_or_none()
        or 0
    )
    for (original_id, meter), corrections in grouped.items():
        position += 1
        quantity = sum((c.quantity for c in corrections), Decimal(0))
        session.add(
            InvoiceCharge(
                invoice_id=invoice_id,
                position=position,
                meter=meter,
                description=corrections[0].description,
                unit=corrections[0].unit,
                quantity=quantity,
                included=Decimal(0),
                billable=quantity,
                pricing=labels[original_id],
                amount=sum((c.amount for c in corrections), Decimal(0)),
                charge_class=CORRECTION,
                corrects_invoice_id=original_id,
            )
        )
        session.add_all(
            InvoiceLine(
                invoice_id=invoice_id,
                meter=meter,
                api_key_id=c.api_key_id,
                user_id=c.user_id,
                quantity=c.quantity,
                unit=c.unit,
                amount=c.amount,
                charge_class=CORRECTION,
                corrects_invoice_id=original_id,
            )
            for c in corrections
        )
    session.flush()
    total = session.execute(
        select(col(InvoiceCharge.amount)).where(col(InvoiceCharge.invoice_id) == invoice_id)
    ).scalars()
    invoice.total = sum(total, Decimal(0))
    session.flush()
    retax(session, [invoice_id])  # the net changed: its tax follows


@dataclass(frozen=True, slots=True)
class NumbersGiven:
    """The consecutive invoice numbers a finalize handed out (first and last in org order)."""

    count: int
    first: str = ""
    last: str = ""
    held: tuple[tuple[str, str], ...] = ()  # (org, reason) of drafts kept back on hold


# Drafts numbered and queued per statement batch: memory stays flat however many orgs.
FINALIZE_BATCH = 500


def finalize_drafts(
    session: Session,
    period: BillingPeriod,
    now: datetime,
    due_at: datetime,
    org_scope: Collection[str] | None = None,
) -> NumbersGiven:
    """Finalize a period's drafts: number them (gapless per year, in org order) and freeze
    them; corrections they carry count as billed, and each contact gets a pending delivery in
    the outbox. Drafts are read and written in batches of plain rows, not ORM objects."""
    in_scope = _in_period(period, org_scope) & (col(Invoice.status) == InvoiceStatus.DRAFT)
    held = tuple(held_drafts(session, in_scope))  # on hold: not finalized until released
    in_scope = in_scope & ~on_hold()
    waiting = pending_correction_orgs(session, period, org_scope)
    carrying = session.execute(
        select(col(InvoiceCharge.invoice_id))
        .join(Invoice, col(Invoice.id) == col(InvoiceCharge.invoice_id))
        .where(in_scope, col(InvoiceCharge.charge_class) == CORRECTION)
        .distinct()
    ).scalars()
    waiting_drafts = session.execute(
        select(col(Invoice.id)).where(in_scope, col(Invoice.org_id).in_(waiting))
    ).scalars()
    for draft_id in sorted({*carrying, *waiting_drafts}):  # corrections may have come or gone
        attach_corrections(session, draft_id)
    count = session.execute(select(func.count()).select_from(Invoice).where(in_scope)).scalar_one()
    if count == 0:
        return NumbersGiven(0, held=held)
    first = next_number = reserve_numbers(session, now.year, count)
    for batch in _draft_batches(session, in_scope):
        settle_drafts(session, batch, now)  # credit balance: carry or apply, then number
        numbers = [invoice_number(now.year, next_number + offset) for offset in range(len(batch))]
        _number_and_freeze(session, batch, numbers, now, due_at)
        _mark_corrections_billed(session, [draft for draft in batch if draft.org_id in waiting])
        mark_adjustments_applied(session, batch)  # billed on these invoices now
        queue_statements(session, batch, now)
        record_finalized(session, [draft.id for draft in batch], now)  # webhook events
        next_number += len(batch)
    if next_number - first != count:  # the drafts changed under the transaction's feet
        raise InvoiceStateError(
            f"period {period}: {count} drafts were counted but {next_number - first} numbered"
        )
    _expire_loaded_invoices(session)
    return NumbersGiven(
        count,
        invoice_number(now.year, first),
        invoice_number(now.year, next_number - 1),
        held=held,
    )


def _draft_batches(session: Session, in_scope: ColumnElement[bool]) -> Iterator[list[Row[Any]]]:
    """The drafts as rows (id, org_id, period, contact_emails), in org order, a batch at a
    time (keyset on the org id, which is unique per period)."""
    after: str | None = None
    while True:
        query = select(
            col(Invoice.id), col(Invoice.org_id), col(Invoice.period), col(Invoice.contact_emails)
        ).where(in_scope)
        if after is not None:
            query = query.where(col(Invoice.org_id) > after)
        batch = list(session.execute(query.order_by(col(Invoice.org_id)).limit(FINALIZE_BATCH)))
        if not batch:
            return
        yield batch
        after = batch[-1].org_id


def _number_and_freeze(
    session: Session,
    drafts: Sequence[Row[Any]],
    numbers: Sequence[str],
    now: datetime,
    due: datetime,
) -> None:
    invoices = Invoice.__table__  # type: ignore[attr-defined]
    session.execute(
        update(invoices)
        .where(invoices.c.id == bindparam("draft_id"))
        .values(
            number=bindparam("given_number"),
            status=InvoiceStatus.FINALIZED,
            issued_at=now,
            finalized_at=now,
            due_at=due,
        ),
        [
            {"draft_id": draft.id, "given_number": number}
            for draft, number in zip(drafts, numbers, strict=True)
        ],
    )


def _mark_corrections_billed(session: Session, drafts: Sequence[Row[Any]]) -> None:
    """Corrections waiting for these drafts' period now count as billed on them."""
    for draft in drafts:
        session.execute(
            update(InvoiceCorrection)
            .where(
                col(InvoiceCorrection.org_id) == draft.org_id,
                col(InvoiceCorrection.target_period) == draft.period,
                col(InvoiceCorrection.applied_invoice_id).is_(None),
            )
            .values(applied_invoice_id=draft.id)
        )


def _expire_loaded_invoices(session: Session) -> None:
    """Invoices already in the session were changed behind its back: reload them on use."""
    for loaded in list(session.identity_map.values()):
        if isinstance(loaded, Invoice):
            session.expire(loaded)


def invoice_number(year: int, sequence_number: int) -> str:
    return f"INV-{year}-{sequence_number:06d}"


def reserve_numbers(
    session: Session,
    year: int,
    count: int,
    table: type[InvoiceNumberSequence | CreditNoteNumberSequence] = InvoiceNumberSequence,
) -> int:
    """Hand out `count` consecutive numbers of a year under a row lock and return the first:
    a rolled-back transaction returns its numbers, so there are no gaps and no duplicates.
    `table` is the counter: invoices' by default, or credit notes' (CreditNoteNumberSequence)."""
    session.execute(
        upsert_insert(session, table)
        .values(year=year, last_number=0)
        .on_conflict_do_nothing(index_elements=["year"])
    )
    sequence = session.execute(
        select(table).where(col(table.year) == year).with_for_update()
    ).scalar_one()
    first: int = sequence.last_number + 1
    sequence.last_number += count
    session.flush()
    return first


def void_invoice(session: Session, invoice: Invoice, reason: str, now: datetime) -> None:
    """Void an issued invoice: its period is open again for a replacement. Corrections it
    carried wait for the replacement; corrections of it not yet billed are dropped. Whoever
    was sent it gets a void notice through the outbox; its unsent statements are not sent."""
    if invoice.status not in ISSUED:
        raise InvoiceStateError(
            f"invoice {invoice.number or invoice.id} of {invoice.org_id} for {invoice.period} is "
            f"{invoice.status}; only finalized or sent invoices can be voided"
            + (
                f" (re-run billing close --period {invoice.period})"
                if invoice.status == InvoiceStatus.DRAFT
                else ""
            )
        )
    if not reason.strip():
        raise InvoiceStateError("a void needs a reason: pass --reason TEXT")
    refuse_void_of_credited(session, invoice)  # a void would credit the customer twice
    billed_elsewhere = (
        session.execute(
            select(col(Invoice.number))
            .join(InvoiceCorrection, col(InvoiceCorrection.applied_invoice_id) == col(Invoice.id))
            .where(col(InvoiceCorrection.original_invoice_id) == invoice.id)
        )
        .scalars()
        .first()
    )
    if billed_elsewhere is not None:
        raise InvoiceStateError(
            f"corrections of {invoice.number} were billed on {billed_elsewhere}; void "
            f"{billed_elsewhere} first so nothing is billed twice"
        )
    session.execute(
        delete(InvoiceCorrection).where(
            col(InvoiceCorrection.original_invoice_id) == invoice.id,
            col(InvoiceCorrection.applied_invoice_id).is_(None),
        )
    )
    session.execute(
        update(InvoiceCorrection)
        .where(col(InvoiceCorrection.applied_invoice_id) == invoice.id)
        .values(applied_invoice_id=None)
    )
    release_adjustments(session, invoice.id)  # they stand again for the replacement
    invoice.status = InvoiceStatus.VOID
    invoice.voided_at = now
    invoice.void_reason = reason.strip()
    session.flush()
    queue_void_notice(session, invoice, now)
    reverse_void(session, invoice, now)  # credit it used comes back; credit it carried goes
    record_event(
        session,
        WebhookEventType.INVOICE_VOIDED,
        invoice_event_data(invoice, reason=invoice.void_reason, voided_by=invoice.voided_by),
        now,
    )
