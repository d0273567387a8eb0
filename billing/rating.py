"""Pure rating: aggregate usage exactly, price each org's meters, allocate to API keys and users."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Protocol

from billing.domain import (
    METERS,
    MINIMUM_CHARGE_METER,
    AllocatedLine,
    MeterCharge,
    MeterPrice,
    OrgAccount,
    RateCard,
    RatedInvoice,
    RatingReport,
    Tier,
    UsageKey,
    UsageRecord,
)
from billing.money import allocate_largest_remainder, round_to_minor_units


@dataclass(slots=True)
class UsageTotals:
    """Exact integer (or rational) numerators of every meter for one org, API key and user."""

    duration_ms: int = 0
    memory_mib_ms: int | Fraction = 0
    workspace_bytes_in: int = 0
    workspace_bytes_out: int = 0
    num_sessions: int = 0
    request_count: int = 0
    num_operations: int = 0
    oom_killed_count: int = 0


@dataclass(slots=True)
class UsageAggregate:
    """A period's usage summed per org and (API key, user); fed page by page, never row-stored."""

    by_org: dict[str, dict[UsageKey, UsageTotals]] = field(default_factory=dict)
    report: RatingReport = field(default_factory=RatingReport)

    def add(self, record: UsageRecord) -> None:
        keys = self.by_org.setdefault(record.org_id, {})
        key = UsageKey(record.api_key_id, record.user_id)
        totals = keys.get(key)
        if totals is None:
            totals = keys[key] = UsageTotals()
        totals.duration_ms += record.duration_ms
        if record.reserved_memory_mib is not None:
            totals.memory_mib_ms += record.reserved_memory_mib * record.duration_ms
        elif record.peak_memory_mib is not None:
            totals.memory_mib_ms += Fraction(record.peak_memory_mib) * record.duration_ms
            self.report.results_with_peak_only += 1
        else:
            self.report.results_without_memory += 1
        totals.workspace_bytes_in += record.workspace_bytes_in
        totals.workspace_bytes_out += record.workspace_bytes_out
        totals.num_sessions += record.num_sessions
        totals.request_count += record.request_count
        totals.num_operations += record.num_operations
        totals.oom_killed_count += record.oom_killed_count
        self.report.usage_results += 1

    def add_all(self, records: Iterable[UsageRecord]) -> None:
        for record in records:
            self.add(record)


class CardResolver(Protocol):
    """Finds the rate card (version) that prices an org in a period."""

    def __call__(self, account: OrgAccount) -> RateCard: ...


class AccountResolver(Protocol):
    """Finds the account of an org id (listed or not)."""

    def __call__(self, org_id: str) -> OrgAccount: ...


def graduated_charge(tiers: Iterable[Tier], quantity: Fraction) -> Fraction:
    """Each tier prices the slice of quantity between the previous bound and its own."""
    charge = Fraction(0)
    lower = Fraction(0)
    for tier in tiers:
        upper = None if tier.up_to is None else Fraction(tier.up_to)
        top = quantity if upper is None else min(quantity, upper)
        if top <= lower:
            break
        charge += (top - lower) * Fraction(tier.unit_price)
        if upper is None:
            break
        lower = upper
    return charge


def exact_meter_charge(price: MeterPrice, billable: Fraction) -> Fraction:
    """The unrounded charge for a billable quantity under a meter's pricing model."""
    if price.tiers:
        return graduated_charge(price.tiers, billable)
    assert price.unit_price is not None
    return billable * Fraction(price.unit_price)


def describe_pricing(price: MeterPrice) -> str:
    """A short human description of a meter's price, e.g. "0.12 / hour"."""
    if not price.tiers:
        return f"{price.unit_price} / {price.unit}"
    parts = []
    lower = Decimal(0)
    for tier in price.tiers:
        if tier.up_to is None:
            parts.append(f"{tier.unit_price} above {lower}")
        else:
            parts.append(f"{tier.unit_price} to {tier.up_to}")
            lower = tier.up_to
    return "; ".join(parts) + f" / {price.unit}"


def _allocation_order(key: UsageKey) -> tuple[bool, str, bool, str]:
    return (key.api_key_id is None, key.api_key_id or "", key.user_id is None, key.user_id or "")


def rate_meter(price: MeterPrice, usage: dict[UsageKey, UsageTotals], currency: str) -> MeterCharge:
    """Price one meter for one org: exact quantity, one half-up rounding, exact split."""
    definition = METERS[price.meter]
    numerators = {
        key: Fraction(getattr(totals, definition.totals_field)) for key, totals in usage.items()
    }
    keys = sorted((key for key, value in numerators.items() if value), key=_allocation_order)
    quantity = sum((numerators[key] for key in keys), Fraction(0)) / definition.divisor
    billable = max(Fraction(0), quantity - Fraction(price.included))
    amount_minor = round_to_minor_units(exact_meter_charge(price, billable), currency)
    shares = allocate_largest_remainder(amount_minor, [numerators[key] for key in keys])
    lines = tuple(
        AllocatedLine(key, numerators[key] / definition.divisor, share)
        for key, share in zip(keys, shares, strict=True)
    )
    return MeterCharge(
        meter=price.meter,
        unit=price.unit,
        description=definition.description,
        quantity=quantity,
        included=price.included,
        billable=billable,
        pricing=describe_pricing(price),
        amount_minor=amount_minor,
        lines=lines,
    )


def minimum_top_up(card: RateCard, usage_total_minor: int) -> MeterCharge | None:
    """A charge that lifts an org's total to the card's minimum, or None when it is met."""
    if card.minimum_charge is None:
        return None
    minimum_minor = round_to_minor_units(card.minimum_charge, card.currency)
    shortfall = minimum_minor - usage_total_minor
    if shortfall <= 0:
        return None
    return MeterCharge(
        meter=MINIMUM_CHARGE_METER,
        unit="period",
        description="Minimum charge top-up",
        quantity=Fraction(1),
        included=Decimal(0),
        billable=Fraction(1),
        pricing=f"minimum {card.minimum_charge} per period",
        amount_minor=shortfall,
        lines=(AllocatedLine(UsageKey(None, None), Fraction(1), shortfall),),
    )


def rate_org(
    account: OrgAccount, card: RateCard, usage: dict[UsageKey, UsageTotals]
) -> RatedInvoice:
    """Price every meter of the card for one org, then apply the minimum charge."""
    charges = [rate_meter(price, usage, card.currency) for price in card.meters]
    top_up = minimum_top_up(card, sum(charge.amount_minor for charge in charges))
    if top_up is not None:
        charges.append(top_up)
    return RatedInvoice(org=account, currency=card.currency, rate_card=card, charges=tuple(charges))


def rate_period(
    aggregate: UsageAggregate, account_for: AccountResolver, card_for: CardResolver
) -> list[RatedInvoice]:
    """Rate every org that has usage, in org-id order."""
    invoices = []
    for org_id in sorted(aggregate.by_org):
        account = account_for(org_id)
        invoices.append(rate_org(account, card_for(account), aggregate.by_org[org_id]))
    aggregate.report.orgs_without_contact = sorted(
        invoice.org.org_id for invoice in invoices if not invoice.org.emails
    )
    return invoices
