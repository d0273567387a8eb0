"""Pure: a reviewer's signed adjustments of a draft, discounted and split over its lines.

The order on one invoice: usage charges -> adjustments -> discount -> minimum. An adjustment's
amount is entered before the org's discount; its charge is that amount less the discount,
rounded half-up once at the minor unit, and split by largest remainder over the chargeback
lines (API key, user) of the meter it adjusts (a free-text line: over every line's usage across
all meters), so the lines always add up to the charge. The minimum top-up is then taken on the
usage plus the adjustments (`billing.rating.minimum_top_up` over `minimum_base_minor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from billing.domain import RatedInvoice
from billing.money import (
    allocate_largest_remainder,
    decimal_to_minor,
    format_minor,
    format_quantity,
    round_to_minor_units,
    to_fraction,
)

# The meter column of a free-text adjustment's charge and lines (before its "#id").
FREE_TEXT = "adjustment"
# The unit of an adjustment's charge: one adjustment.
ADJUSTMENT_UNIT = "adjustment"
# The stored meter column is this long at most (invoice_charge.meter, invoice_line.meter).
METER_COLUMN_LENGTH = 50
# An adjustment's description is stored as a charge description: this long at most.
DESCRIPTION_LENGTH = 200

Key = tuple[str | None, str | None]  # (api_key_id, user_id)


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One chargeback line of a usage charge: its API key, user and amount in minor units."""

    api_key_id: str | None
    user_id: str | None
    amount_minor: int

    @property
    def key(self) -> Key:
        return (self.api_key_id, self.user_id)


@dataclass(frozen=True, slots=True)
class UsageCharge:
    """One usage charge of a draft (never the minimum top-up, never a correction)."""

    meter: str
    description: str
    amount_minor: int
    lines: tuple[UsageLine, ...] = ()


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A live adjustment as the reviewer entered it: the meter it adjusts (None: a free-text
    line), what the statement calls it, and the signed amount before the org's discount."""

    id: int
    meter: str | None
    description: str
    amount: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class AdjustmentCharge:
    """An adjustment as a charge of the draft: discounted, rounded once, split exactly."""

    adjustment_id: int
    meter: str  # the stored meter column: "<meter>#<id>" or "adjustment#<id>", unique per draft
    adjusted_meter: str | None
    description: str
    pricing: str
    amount_minor: int
    lines: tuple[UsageLine, ...]
    # The amount as entered (before the discount) when a discount applied; None otherwise.
    list_amount_minor: int | None = None


@dataclass(frozen=True, slots=True)
class Adjusted:
    """A draft's adjustment charges, and the base its minimum is taken on."""

    charges: tuple[AdjustmentCharge, ...]
    usage_minor: int
    adjustments_minor: int

    @property
    def minimum_base_minor(self) -> int:
        """Usage plus adjustments, after the discount: what the minimum is compared with."""
        return self.usage_minor + self.adjustments_minor


def minimum_of(invoice: RatedInvoice) -> Decimal | None:
    """The minimum an invoice is priced under: the org's commitment, else its card's."""
    if invoice.org.minimum_commitment is not None:
        return invoice.org.minimum_commitment
    return invoice.rate_card.minimum_charge


def stored_meter(adjustment_id: int, meter: str | None) -> str:
    """The meter column of an adjustment's charge and lines: the adjusted meter (or
    `adjustment`) with the adjustment's id, so two adjustments of one meter stay apart."""
    stored = f"{meter or FREE_TEXT}#{adjustment_id}"
    if len(stored) > METER_COLUMN_LENGTH:
        return f"{FREE_TEXT}#{adjustment_id}"
    return stored


def discounted_minor(amount: Decimal, currency: str, discount_percent: Decimal | None) -> int:
    """The amount less the discount, rounded half-up (away from zero) once at the minor unit."""
    exact = to_fraction(amount)
    if discount_percent:
        exact = exact * (100 - to_fraction(discount_percent)) / 100
    return round_to_minor_units(exact, currency)


def adjustment_pricing(amount: Decimal, currency: str, discount_percent: Decimal | None) -> str:
    """The pricing text of an adjustment's charge: `adjustment`, or with a discount
    `adjustment of -12.50, less 10%` (the amount as entered, then the discount)."""
    if not discount_percent:
        return "adjustment"
    return (
        f"adjustment of {format_minor(amount, currency)}, less {format_quantity(discount_percent)}%"
    )


def default_description(charge_description: str) -> str:
    """What a meter adjustment is called on the statement when no description was given."""
    return f"Adjustment: {charge_description}"[:DESCRIPTION_LENGTH]


def _order(key: Key) -> tuple[bool, str, bool, str]:
    """Lines in rating's order: by API key then user, missing ones last."""
    return (key[0] is None, key[0] or "", key[1] is None, key[1] or "")


def _weights(lines: Sequence[UsageLine]) -> dict[Key, int]:
    """Each (API key, user)'s usage amount over these lines."""
    weights: dict[Key, int] = {}
    for line in lines:
        weights[line.key] = weights.get(line.key, 0) + line.amount_minor
    return weights


def split(amount_minor: int, lines: Sequence[UsageLine]) -> tuple[UsageLine, ...]:
    """A signed amount split by largest remainder over the (API key, user)s of these lines,
    weighted by their amounts (all zero: evenly); no lines: one line without key or user."""
    weights = _weights(lines)
    if not weights:
        return (UsageLine(None, None, amount_minor),)
    keys = sorted(weights, key=_order)
    if any(weights[key] < 0 for key in keys):
        raise ValueError("usage lines to split an adjustment over must not be negative")
    shares = allocate_largest_remainder(amount_minor, [weights[key] for key in keys])
    return tuple(UsageLine(key[0], key[1], share) for key, share in zip(keys, shares, strict=True))


def adjust(
    usage: Sequence[UsageCharge],
    adjustments: Sequence[Adjustment],
    currency: str,
    discount_percent: Decimal | None,
) -> Adjusted:
    """The draft's adjustment charges, in the order given, and its minimum's base.

    Raises ValueError for an adjustment in another currency or on a meter the draft has no
    charge for (callers check first, to say which org, period and command).
    """
    by_meter = {charge.meter: charge for charge in usage}
    every_line = [line for charge in usage for line in charge.lines]
    charges = []
    for adjustment in adjustments:
        if adjustment.currency.upper() != currency.upper():
            raise ValueError(
                f"adjustment {adjustment.id} is in {adjustment.currency}, the draft in {currency}"
            )
        if adjustment.meter is None:
            over: Sequence[UsageLine] = every_line
            description = adjustment.description
        else:
            adjusted = by_meter.get(adjustment.meter)
            if adjusted is None:
                raise ValueError(
                    f"adjustment {adjustment.id} is on meter {adjustment.meter!r}, "
                    "which the draft has no charge for"
                )
            over = adjusted.lines
            description = adjustment.description or default_description(adjusted.description)
        amount_minor = discounted_minor(adjustment.amount, currency, discount_percent)
        charges.append(
            AdjustmentCharge(
                adjustment_id=adjustment.id,
                meter=stored_meter(adjustment.id, adjustment.meter),
                adjusted_meter=adjustment.meter,
                description=description[:DESCRIPTION_LENGTH],
                pricing=adjustment_pricing(adjustment.amount, currency, discount_percent),
                amount_minor=amount_minor,
                lines=split(amount_minor, over),
                list_amount_minor=(
                    decimal_to_minor(adjustment.amount, currency) if discount_percent else None
                ),
            )
        )
    return Adjusted(
        charges=tuple(charges),
        usage_minor=sum(charge.amount_minor for charge in usage),
        adjustments_minor=sum(charge.amount_minor for charge in charges),
    )
