"""Pure taxes: the tax charge of an invoice's net per rate (half-up once per rate per invoice)
and the tax a credit note credits (never more, over all notes, than the invoice charged)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from billing.domain import TaxRule
from billing.money import format_minor, format_quantity, minor_to_decimal, round_half_up
from billing.states import TaxTreatment

# The meters (stored ids) of the zero-tax treatments that name no rate of the tax file.
REVERSE_CHARGE_METER = "reverse-charge"
EXEMPT_METER = "exempt"
DEFAULT_REVERSE_CHARGE_NOTE = (
    "Reverse charge: VAT to be accounted for by the recipient "
    "(Article 196, Council Directive 2006/112/EC)."
)


@dataclass(frozen=True, slots=True)
class TaxCharge:
    """One tax charge of an invoice: the net it taxes and the tax, in minor units."""

    meter: str  # the rate's id, "reverse-charge" or "exempt"
    description: str  # printed: "VAT 19%", "Reverse charge", "Exempt"
    pricing: str  # printed wording: "19% of 1234.00", the legal note, the exemption's reason
    net_minor: int
    amount_minor: int
    percent: Decimal
    treatment: str


def percent_text(percent: Decimal) -> str:
    """A rate as printed: 19, 8.875, 0 (no trailing zeros)."""
    return format_quantity(percent)


def tax_description(rule: TaxRule) -> str:
    """What the statement calls the tax line."""
    if rule.treatment == TaxTreatment.REVERSE_CHARGE:
        return "Reverse charge"
    if rule.treatment == TaxTreatment.EXEMPT:
        return "Exempt"
    return f"{rule.name} {percent_text(rule.percent)}%"


def tax_minor(net_minor: int, percent: Decimal) -> int:
    """Tax on a net amount: net × percent / 100, rounded half-up (away from zero) once."""
    return round_half_up(Fraction(net_minor) * Fraction(percent) / 100)


def tax_charge(rule: TaxRule, net_minor: int, currency: str) -> TaxCharge:
    """The tax of one rate on an invoice's net (a zero-tax treatment still gets its 0.00 line:
    that is how the invoice says so)."""
    net = format_minor(minor_to_decimal(net_minor, currency), currency)
    if rule.treatment in (TaxTreatment.REVERSE_CHARGE, TaxTreatment.EXEMPT):
        amount = 0
        pricing = rule.note
    else:
        amount = tax_minor(net_minor, rule.percent)
        pricing = f"{percent_text(rule.percent)}% of {net}"
    return TaxCharge(
        meter=rule.rate_id,
        description=tax_description(rule),
        pricing=pricing,
        net_minor=net_minor,
        amount_minor=amount,
        percent=rule.percent,
        treatment=rule.treatment,
    )


def tax_charges(nets: Sequence[tuple[TaxRule, int]], currency: str) -> list[TaxCharge]:
    """One tax charge per rate from the invoice's net per rate (nets of one rate summed first,
    so each rate is rounded once per invoice), in the order the rates first appear."""
    summed: dict[str, tuple[TaxRule, int]] = {}
    for rule, net in nets:
        known = summed.get(rule.rate_id)
        summed[rule.rate_id] = (rule, net if known is None else known[1] + net)
    return [tax_charge(rule, net, currency) for rule, net in summed.values()]


def credited_tax(
    percent: Decimal, credited_net_minor: int, remaining_net_minor: int, remaining_tax_minor: int
) -> int:
    """The tax a credit note credits on one rate: half-up of the credited net × percent; but a
    note that brings the rate's remaining net to zero credits exactly the remaining tax, so an
    invoice's notes never credit more (or less) tax than it charged.

    `remaining_*` are what the invoice's rate still has before this note (charged less what
    earlier notes credited)."""
    if credited_net_minor >= remaining_net_minor:
        return remaining_tax_minor
    return min(tax_minor(credited_net_minor, percent), remaining_tax_minor)
