"""Reviewers' adjustments of drafts: recorded (who, when, why), cancelled but never deleted,
re-applied to every draft of their org and period, and marked applied when it is finalized."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlmodel import Session, col

from billing.adjustments import (
    ADJUSTMENT_UNIT,
    DESCRIPTION_LENGTH,
    Adjusted,
    Adjustment,
    UsageCharge,
    UsageLine,
    adjust,
    minimum_of,
)
from billing.corrections import BilledLine, due_lines
from billing.db.tables import Invoice, InvoiceAdjustment, InvoiceCharge, InvoiceLine
from billing.db.taxes import retax
from billing.domain import MINIMUM_CHARGE_METER, RatedInvoice
from billing.errors import BillingError, InvoiceStateError
from billing.money import (
    at_minor_units,
    decimal_to_minor,
    format_quantity,
    minor_to_decimal,
    minor_unit_exponent,
    round_quantity,
)
from billing.periods import BillingPeriod
from billing.rating import minimum_top_up
from billing.states import ChargeClass, InvoiceStatus

ADJUSTMENT = ChargeClass.ADJUSTMENT
USAGE = ChargeClass.USAGE


def cancel_command(adjustment_id: int) -> str:
    """The command that withdraws an adjustment, as messages quote it."""
    return f"billing invoices adjust --cancel {adjustment_id} --reason TEXT"


def _live(org_id: str, period: str) -> Any:
    """Adjustments of the org and period still to be billed: not cancelled, not yet applied."""
    return (
        (col(InvoiceAdjustment.org_id) == org_id)
        & (col(InvoiceAdjustment.period) == period)
        & col(InvoiceAdjustment.cancelled_at).is_(None)
        & col(InvoiceAdjustment.applied_invoice_id).is_(None)
    )


def live_adjustments(session: Session, org_id: str, period: str) -> list[InvoiceAdjustment]:
    """The org's adjustments of the period still to be billed, in the order they were made."""
    query = select(InvoiceAdjustment).where(_live(org_id, period))
    return list(session.execute(query.order_by(col(InvoiceAdjustment.id))).scalars().all())


@dataclass(frozen=True)
class AdjustmentRow:
    """One adjustment as `billing invoices show` lists it: what, who, when, why, and where it
    stands (live on the draft, cancelled, or billed on a finalized invoice)."""

    id: int
    meter: str | None
    description: str
    amount: Decimal
    currency: str
    reason: str
    created_by: str
    created_at: datetime
    cancelled_by: str | None
    cancelled_at: datetime | None
    cancel_reason: str | None
    applied_to: str | None  # the number of the invoice that billed it

    @property
    def state(self) -> str:
        if self.cancelled_at is not None:
            return "cancelled"
        return "applied" if self.applied_to is not None else "live"


def adjustments_of(session: Session, org_id: str, period: str) -> list[AdjustmentRow]:
    """Every adjustment of an org's period, cancelled ones too, in the order they were made."""
    applied = Invoice.__table__.alias("applied")  # type: ignore[attr-defined]
    query = (
        select(InvoiceAdjustment, applied.c.number)
        .outerjoin(applied, applied.c.id == InvoiceAdjustment.applied_invoice_id)
        .where(col(InvoiceAdjustment.org_id) == org_id, col(InvoiceAdjustment.period) == period)
        .order_by(col(InvoiceAdjustment.id))
    )
    return [
        AdjustmentRow(
            id=row.id or 0,
            meter=row.meter,
            description=row.description,
            amount=at_minor_units(row.amount, row.currency),
            currency=row.currency,
            reason=row.reason,
            created_by=row.created_by,
            created_at=row.created_at,
            cancelled_by=row.cancelled_by,
            cancelled_at=row.cancelled_at,
            cancel_reason=row.cancel_reason,
            applied_to=number,
        )
        for row, number in session.execute(query)
    ]


def pending_adjustment_orgs(
    session: Session, period: BillingPeriod, org_scope: Collection[str] | None
) -> set[str]:
    """Orgs with adjustments waiting to be billed on their invoice of `period`."""
    query = select(col(InvoiceAdjustment.org_id)).where(
        col(InvoiceAdjustment.period) == str(period),
        col(InvoiceAdjustment.cancelled_at).is_(None),
        col(InvoiceAdjustment.applied_invoice_id).is_(None),
    )
    if org_scope is not None:
        query = query.where(col(InvoiceAdjustment.org_id).in_(org_scope))
    return set(session.execute(query.distinct()).scalars().all())


def add_adjustment(
    session: Session,
    *,
    invoice: Invoice,
    meter: str | None,
    amount: Decimal,
    reason: str,
    description: str | None,
    created_by: str,
    now: datetime,
) -> InvoiceAdjustment:
    """Record a signed adjustment of a draft and re-apply the draft's adjustments; refused
    (one line saying what to do) on anything but a draft, a meter the draft has no charge
    for, an amount finer than the currency's minor unit or zero, or an empty reason."""
    _refuse_unless_draft(invoice)
    assert invoice.id is not None
    where = f"draft {invoice.id} of {invoice.org_id} for {invoice.period}"
    if not reason.strip():
        raise BillingError("an adjustment needs a reason: pass --reason TEXT")
    text = (description or "").strip()
    if meter is None and not text:
        raise BillingError(
            "a free-text adjustment needs --description TEXT (or adjust a meter with --meter)"
        )
    if len(text) > DESCRIPTION_LENGTH:
        raise BillingError(
            f"the description has {len(text)} characters; a statement line holds at most "
            f"{DESCRIPTION_LENGTH}"
        )
    _check_amount(amount, invoice.currency)
    if meter is not None:
        meters = _usage_meters(session, invoice.id)
        if meter not in meters:
            listed = ", ".join(meters) if meters else "none"
            raise BillingError(
                f"{where} has no charge for meter {meter!r}; its meters: {listed} "
                "(or give --description TEXT without --meter for a free-text line)"
            )
    adjustment = InvoiceAdjustment(
        org_id=invoice.org_id,
        period=invoice.period,
        meter=meter,
        description=text,
        amount=amount,
        currency=invoice.currency,
        reason=reason.strip(),
        created_by=created_by,
        created_at=now,
    )
    session.add(adjustment)
    session.flush()
    reapply_adjustments(session, [invoice.id])
    return adjustment


def cancel_adjustment(
    session: Session, *, adjustment_id: int, reason: str, cancelled_by: str, now: datetime
) -> tuple[InvoiceAdjustment, Invoice | None]:
    """Withdraw a live adjustment (kept, with who, when and why) and re-apply the rest to the
    org's draft of the period, if one stands; returns the adjustment and that draft."""
    if not reason.strip():
        raise BillingError("a cancellation needs a reason: pass --reason TEXT")
    adjustment = session.get(InvoiceAdjustment, adjustment_id)
    if adjustment is None:
        raise BillingError(
            f"no adjustment {adjustment_id}: billing invoices show DRAFT lists a draft's"
        )
    if adjustment.cancelled_at is not None:
        raise InvoiceStateError(
            f"adjustment {adjustment_id} of {adjustment.org_id} for {adjustment.period} was "
            f"cancelled already, by {adjustment.cancelled_by}"
        )
    if adjustment.applied_invoice_id is not None:
        billed = session.get(Invoice, adjustment.applied_invoice_id)
        number = billed.number if billed is not None else adjustment.applied_invoice_id
        raise InvoiceStateError(
            f"adjustment {adjustment_id} of {adjustment.org_id} for {adjustment.period} is "
            f"billed on {number}, which never changes; use billing credit-notes create "
            f"{number} instead"
        )
    adjustment.cancelled_by = cancelled_by
    adjustment.cancelled_at = now
    adjustment.cancel_reason = reason.strip()
    session.flush()
    draft = session.execute(
        select(Invoice).where(
            col(Invoice.org_id) == adjustment.org_id,
            col(Invoice.period) == adjustment.period,
            col(Invoice.status) == InvoiceStatus.DRAFT,
        )
    ).scalar_one_or_none()
    if draft is not None and draft.id is not None:
        reapply_adjustments(session, [draft.id])
    return adjustment, draft


def _refuse_unless_draft(invoice: Invoice) -> None:
    if invoice.status == InvoiceStatus.DRAFT:
        return
    what = f"invoice {invoice.number or invoice.id} of {invoice.org_id} for {invoice.period}"
    if invoice.status == InvoiceStatus.VOID:
        raise InvoiceStateError(
            f"{what} is void; adjust the draft that replaces it (billing close --period "
            f"{invoice.period} --org ORG --draft drafts one)"
        )
    raise InvoiceStateError(
        f"{what} is {invoice.status} and never changes; only drafts are adjusted: use "
        f"billing credit-notes create {invoice.number} instead"
    )


def _check_amount(amount: Decimal, currency: str) -> None:
    if not amount.is_finite():
        raise BillingError(f"{amount} is not an amount: give one such as -12.50")
    try:
        minor = decimal_to_minor(amount, currency)
    except ValueError:
        places = minor_unit_exponent(currency)
        raise BillingError(
            f"{amount} has more decimal places than {currency} has ({places}); "
            f"give the amount to the {'cent' if places == 2 else 'minor unit'}"
        ) from None
    if minor == 0:
        raise BillingError(
            "an adjustment of 0 changes nothing: give a signed amount such as -12.50"
        )


def _usage_meters(session: Session, invoice_id: int) -> list[str]:
    """The meters a draft has usage charges for, in the statement's order (no minimum)."""
    return list(
        session.execute(
            select(col(InvoiceCharge.meter))
            .where(
                col(InvoiceCharge.invoice_id) == invoice_id,
                col(InvoiceCharge.charge_class) == USAGE,
                col(InvoiceCharge.meter) != MINIMUM_CHARGE_METER,
            )
            .order_by(col(InvoiceCharge.position))
        ).scalars()
    )


def readjust_drafts(
    session: Session, period: BillingPeriod, invoice_ids: Sequence[int], org_ids: Sequence[str]
) -> None:
    """Re-apply the live adjustments of their org and period to drafts just stored (ids, and
    their orgs in the same order); drafts of orgs without any are left as rated."""
    if not invoice_ids:
        return
    waiting = pending_adjustment_orgs(session, period, set(org_ids))
    reapply_adjustments(
        session,
        [
            invoice_id
            for invoice_id, org_id in zip(invoice_ids, org_ids, strict=True)
            if org_id in waiting
        ],
    )


def reapply_adjustments(session: Session, invoice_ids: Sequence[int]) -> None:
    """(Re)write each draft's adjustment charges and minimum top-up from the live adjustments
    of its org and period, priced under the discount and minimum the draft was stored with,
    and its total as the sum of all its charges (corrections included).

    Refused, with nothing written, when an adjustment's meter is not a charge of the draft
    (its rate card changed) or its currency is not the draft's."""
    for invoice_id in invoice_ids:
        invoice = session.get(Invoice, invoice_id)
        if invoice is None or invoice.status != InvoiceStatus.DRAFT:
            raise InvoiceStateError(
                f"invoice {invoice_id} is not a draft; adjustments go on drafts only"
            )
        live = live_adjustments(session, invoice.org_id, invoice.period)
        if not live and not _has_adjustment_charges(session, invoice_id):
            continue
        usage = _usage_charges(session, invoice_id, invoice.currency)
        _refuse_mismatches(invoice, live, {charge.meter for charge in usage})
        adjusted = adjust(
            usage,
            [Adjustment(a.id or 0, a.meter, a.description, a.amount, a.currency) for a in live],
            invoice.currency,
            invoice.discount_percent,
        )
        _replace_charges(session, invoice, adjusted)
    retax(session, list(invoice_ids))  # the net changed: its tax follows


def _refuse_mismatches(
    invoice: Invoice, live: Sequence[InvoiceAdjustment], meters: Collection[str]
) -> None:
    """One line naming org, period, adjustment and meter, and the command that withdraws it."""
    for adjustment in live:
        assert adjustment.id is not None
        where = f"org {invoice.org_id}, {invoice.period}: adjustment {adjustment.id}"
        if adjustment.currency != invoice.currency:
            raise InvoiceStateError(
                f"{where} is in {adjustment.currency} but the new draft is in "
                f"{invoice.currency} (the rate card changed); withdraw it with "
                f"{cancel_command(adjustment.id)}, then close the period again"
            )
        if adjustment.meter is not None and adjustment.meter not in meters:
            raise InvoiceStateError(
                f"{where} is on meter {adjustment.meter!r}, which the new draft has no charge "
                f"for (the rate card changed); withdraw it with "
                f"{cancel_command(adjustment.id)}, then close the period again"
            )


def _has_adjustment_charges(session: Session, invoice_id: int) -> bool:
    return (
        session.execute(
            select(col(InvoiceCharge.id))
            .where(
                col(InvoiceCharge.invoice_id) == invoice_id,
                col(InvoiceCharge.charge_class) == ADJUSTMENT,
            )
            .limit(1)
        ).first()
        is not None
    )


def _usage_charges(session: Session, invoice_id: int, currency: str) -> list[UsageCharge]:
    """The draft's usage charges (no minimum top-up) with their lines, in minor units."""
    lines: dict[str, list[UsageLine]] = {}
    for meter, api_key_id, user_id, amount in session.execute(
        select(
            col(InvoiceLine.meter),
            col(InvoiceLine.api_key_id),
            col(InvoiceLine.user_id),
            col(InvoiceLine.amount),
        )
        .where(
            col(InvoiceLine.invoice_id) == invoice_id,
            col(InvoiceLine.charge_class) == USAGE,
            col(InvoiceLine.meter) != MINIMUM_CHARGE_METER,
        )
        .order_by(col(InvoiceLine.id))
    ):
        lines.setdefault(meter, []).append(
            UsageLine(api_key_id, user_id, decimal_to_minor(amount, currency))
        )
    return [
        UsageCharge(
            meter, description, decimal_to_minor(amount, currency), tuple(lines.get(meter, ()))
        )
        for meter, description, amount in session.execute(
            select(
                col(InvoiceCharge.meter), col(InvoiceCharge.description), col(InvoiceCharge.amount)
            )
            .where(
                col(InvoiceCharge.invoice_id) == invoice_id,
                col(InvoiceCharge.charge_class) == USAGE,
                col(InvoiceCharge.meter) != MINIMUM_CHARGE_METER,
            )
            .order_by(col(InvoiceCharge.position))
        )
    ]


def plain_minimum(minimum: Decimal, currency: str) -> Decimal:
    """A stored minimum as the rate card writes it (PostgreSQL reads back 12 places): at the
    currency's places when it has no finer digits (5.00), else without trailing zeros."""
    try:
        return at_minor_units(minimum, currency)
    except ValueError:
        return Decimal(format_quantity(minimum))


def _replace_charges(session: Session, invoice: Invoice, adjusted: Adjusted) -> None:
    """Delete the draft's adjustment charges and minimum top-up, insert the new ones after its
    other charges, and set its total to the sum of all its charges."""
    invoice_id, currency = invoice.id, invoice.currency
    for table in (InvoiceLine, InvoiceCharge):
        session.execute(
            delete(table).where(
                col(table.invoice_id) == invoice_id,
                (col(table.charge_class) == ADJUSTMENT)
                | ((col(table.charge_class) == USAGE) & (col(table.meter) == MINIMUM_CHARGE_METER)),
            )
        )
    position: int = (
        session.execute(
            select(func.max(col(InvoiceCharge.position))).where(
                col(InvoiceCharge.invoice_id) == invoice_id
            )
        ).scalar_one_or_none()
        or 0
    )
    charges: list[dict[str, object]] = []
    lines: list[dict[str, object]] = []
    for charge in adjusted.charges:
        position += 1
        charges.append(
            {
                "invoice_id": invoice_id,
                "position": position,
                "meter": charge.meter,
                "description": charge.description,
                "unit": ADJUSTMENT_UNIT,
                "quantity": Decimal(1),
                "included": Decimal(0),
                "billable": Decimal(1),
                "pricing": charge.pricing,
                "amount": minor_to_decimal(charge.amount_minor, currency),
                "charge_class": ADJUSTMENT,
                "list_amount": None
                if charge.list_amount_minor is None
                else minor_to_decimal(charge.list_amount_minor, currency),
            }
        )
        lines += [
            {
                "invoice_id": invoice_id,
                "meter": charge.meter,
                "api_key_id": line.api_key_id,
                "user_id": line.user_id,
                "quantity": Decimal(0),
                "unit": ADJUSTMENT_UNIT,
                "amount": minor_to_decimal(line.amount_minor, currency),
                "charge_class": ADJUSTMENT,
            }
            for line in charge.lines
        ]
    minimum = invoice.minimum_charge
    top_up = minimum_top_up(
        None if minimum is None else plain_minimum(minimum, currency),
        currency,
        adjusted.minimum_base_minor,
    )
    if top_up is not None:
        position += 1
        charges.append(
            {
                "invoice_id": invoice_id,
                "position": position,
                "meter": top_up.meter,
                "description": top_up.description,
                "unit": top_up.unit,
                "quantity": round_quantity(top_up.quantity),
                "included": top_up.included,
                "billable": round_quantity(top_up.billable),
                "pricing": top_up.pricing,
                "amount": minor_to_decimal(top_up.amount_minor, currency),
                "charge_class": USAGE,
                "list_amount": None,
            }
        )
        lines += [
            {
                "invoice_id": invoice_id,
                "meter": top_up.meter,
                "api_key_id": line.key.api_key_id,
                "user_id": line.key.user_id,
                "quantity": round_quantity(line.quantity),
                "unit": top_up.unit,
                "amount": minor_to_decimal(line.amount_minor, currency),
                "charge_class": USAGE,
            }
            for line in top_up.lines
        ]
    if charges:
        session.execute(insert(InvoiceCharge), charges)
    if lines:
        session.execute(insert(InvoiceLine), lines)
    amounts = session.execute(
        select(col(InvoiceCharge.amount)).where(col(InvoiceCharge.invoice_id) == invoice_id)
    ).scalars()
    invoice.total = sum(amounts, Decimal(0))
    session.flush()


def mark_adjustments_applied(session: Session, drafts: Sequence[Row[Any]]) -> None:
    """The live adjustments of these drafts' orgs and period (rows with id, org_id, period)
    now count as billed on them: one query, and an update only for the orgs that have any."""
    if not drafts:
        return
    periods = {draft.period for draft in drafts}
    having = set(
        session.execute(
            select(col(InvoiceAdjustment.org_id), col(InvoiceAdjustment.period))
            .where(
                col(InvoiceAdjustment.org_id).in_({draft.org_id for draft in drafts}),
                col(InvoiceAdjustment.period).in_(periods),
                col(InvoiceAdjustment.cancelled_at).is_(None),
                col(InvoiceAdjustment.applied_invoice_id).is_(None),
            )
            .distinct()
        ).all()
    )
    for draft in drafts:
        if (draft.org_id, draft.period) in having:
            session.execute(
                update(InvoiceAdjustment)
                .where(_live(draft.org_id, draft.period))
                .values(applied_invoice_id=draft.id)
            )


def release_adjustments(session: Session, invoice_id: int | None) -> None:
    """An invoice is void: the adjustments it billed are live again, for its replacement."""
    session.execute(
        update(InvoiceAdjustment)
        .where(col(InvoiceAdjustment.applied_invoice_id) == invoice_id)
        .values(applied_invoice_id=None)
    )


def due_with_adjustments(
    session: Session, original: Invoice, fresh: RatedInvoice | None
) -> list[BilledLine]:
    """What is due now on an issued invoice's lines, for its corrections: the fresh rating,
    with the minimum top-up taken on the usage plus the adjustments it billed (which stay as
    billed), so an adjustment never turns into a correction of the minimum."""
    if fresh is None:
        return []
    billed = [
        decimal_to_minor(amount, original.currency)
        for amount in session.execute(
            select(col(InvoiceCharge.amount)).where(
                col(InvoiceCharge.invoice_id) == original.id,
                col(InvoiceCharge.charge_class) == ADJUSTMENT,
            )
        ).scalars()
    ]
    if not billed or fresh.currency != original.currency:
        return due_lines(fresh)
    usage = tuple(charge for charge in fresh.charges if charge.meter != MINIMUM_CHARGE_METER)
    top_up = minimum_top_up(
        minimum_of(fresh),
        fresh.currency,
        sum(charge.amount_minor for charge in usage) + sum(billed),
    )
    return due_lines(dataclasses.replace(fresh, charges=usage + ((top_up,) if top_up else ())))
