"""The rating module as it was before issue 21 made it faster (Fractions throughout, one row at a
time): the reference that tests/unit/test_rating_equivalence.py holds billing.rating to."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Protocol

from billing.domain import (
    METERS,
    MINIMUM_CHARGE_METER,
    TOTALS_FIELDS,
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
from billing.errors import RateCardError
from billing.money import WIDE, allocate_largest_remainder, round_to_minor_units

# (api_key_id, user_id, session_kind): the grain rating sums at.
TotalsKey = tuple[str | None, str | None, str | None]
Totals = list[int | Decimal]
_DURATION, _MEMORY, _PEAK, _BYTES_IN, _BYTES_OUT, _SESSIONS, _REQUESTS, _OPERATIONS = range(
    len(TOTALS_FIELDS)
)


@dataclass(slots=True)
class UsageAggregate:
    """A period's usage summed per org and (API key, user, session kind); rows are not kept.

    Numerators stay exact: integers, or Decimals (from peak memory) summed in a wide context.
    """

    by_org: dict[str, dict[TotalsKey, Totals]] = field(default_factory=dict)
    report: RatingReport = field(default_factory=RatingReport)

    def add(self, record: UsageRecord) -> None:
        self.add_all((record,))

    def add_all(self, records: Iterable[UsageRecord]) -> None:
        """Sum the records in (exact: integers, Decimals in the wide context); one loop with
        every lookup local, the hottest loop of rating."""
        by_org = self.by_org
        count = without_memory = peak_only = 0
        with localcontext(WIDE):
            for record in records:
                keys = by_org.get(record.org_id)
                if keys is None:
                    keys = by_org[record.org_id] = {}
                key = (record.api_key_id, record.user_id, record.session_kind)
                totals = keys.get(key)
                if totals is None:
                    totals = keys[key] = [0] * len(TOTALS_FIELDS)
                duration = record.duration_ms
                reserved = record.reserved_memory_mib
                peak = record.peak_memory_mib
                totals[_DURATION] += duration
                if reserved is not None:
                    totals[_MEMORY] += reserved * duration
                    totals[_PEAK] += (reserved if peak is None else peak) * duration
                elif peak is not None:
                    peak_ms = peak * duration
                    totals[_MEMORY] += peak_ms
                    totals[_PEAK] += peak_ms
                    peak_only += 1
                else:
                    without_memory += 1
                totals[_BYTES_IN] += record.workspace_bytes_in
                totals[_BYTES_OUT] += record.workspace_bytes_out
                totals[_SESSIONS] += record.num_sessions
                totals[_REQUESTS] += record.request_count
                totals[_OPERATIONS] += record.num_operations
                count += 1
        self.report.count(count, without_memory, peak_only)


class CardResolver(Protocol):
    """Finds the rate card (version, with the org's overrides) that prices an org."""

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


def volume_charge(tiers: Iterable[Tier], quantity: Fraction) -> Fraction:
    """The whole quantity at the price of the tier it reaches (a bound belongs to its tier)."""
    for tier in tiers:
        if tier.up_to is None or quantity <= Fraction(tier.up_to):
            return quantity * Fraction(tier.unit_price)
    raise ValueError("tiers must end with an unbounded tier")


def package_charge(package_size: Decimal, package_price: Decimal, quantity: Fraction) -> Fraction:
    """Quantity rounded up to whole packages, each at the package price."""
    packages = math.ceil(quantity / Fraction(package_size))
    return packages * Fraction(package_price)


def model_charge(price: MeterPrice, billable: Fraction) -> Fraction:
    """The unrounded charge of a billable quantity under the price's charge model."""
    if price.tiers:
        if price.tier_mode == "volume":
            return volume_charge(price.tiers, billable)
        return graduated_charge(price.tiers, billable)
    if price.package_size is not None and price.package_price is not None:
        return package_charge(price.package_size, price.package_price, billable)
    assert price.unit_price is not None
    return billable * Fraction(price.unit_price)


def exact_meter_charge(
    price: MeterPrice, billable: Fraction, discount_percent: Decimal | None = None
) -> Fraction:
    """Model charge, held within the meter's minimum and maximum, less the org's discount."""
    charge = model_charge(price, billable)
    if price.minimum is not None:
        charge = max(charge, Fraction(price.minimum))
    if price.maximum is not None:
        charge = min(charge, Fraction(price.maximum))
    if discount_percent:
        charge = charge * (100 - Fraction(discount_percent)) / 100
    return charge


def describe_pricing(price: MeterPrice, discount_percent: Decimal | None = None) -> str:
    """A short human description of a charge's price, e.g. "0.12 / hour"."""
    unit = price.unit
    if price.tiers:
        parts = []
        lower = Decimal(0)
        for tier in price.tiers:
            if tier.up_to is None:
                parts.append(f"{tier.unit_price} above {lower}")
            else:
                parts.append(f"{tier.unit_price} to {tier.up_to}")
                lower = tier.up_to
        mode = "volume: " if price.tier_mode == "volume" else ""
        text = mode + "; ".join(parts) + f" / {unit}"
    elif price.package_size is not None:
        text = f"{price.package_price} per {price.package_size} {unit}"
    else:
        text = f"{price.unit_price} / {unit}"
    if price.minimum is not None:
        text += f", min {price.minimum}"
    if price.maximum is not None:
        text += f", max {price.maximum}"
    if discount_percent:
        text += f", less {discount_percent}%"
    return text


def _allocation_order(key: UsageKey) -> tuple[bool, str, bool, str]:
    return (key.api_key_id is None, key.api_key_id or "", key.user_id is None, key.user_id or "")


def _numerators(
    price: MeterPrice, usage: Mapping[TotalsKey, Totals], org_id: str
) -> dict[UsageKey, Fraction]:
    """The meter's exact numerator per (API key, user), limited to its session kind if any."""
    index = METERS[price.meter].totals_index
    # Integers are summed as integers (exact, and far cheaper than Fractions), Decimals as
    # Fractions; each sum becomes a Fraction once, at the end.
    numerators: dict[UsageKey, int | Fraction] = {}
    for (api_key_id, user_id, session_kind), totals in usage.items():
        if price.session_kind is not None:
            if session_kind is None:
                raise RateCardError(
                    f"org {org_id}: charge {price.name!r} is for {price.session_kind} sessions "
                    "but the usage was fetched without session_kind"
                )
            if session_kind != price.session_kind:
                continue
        value = totals[index]
        if value:
            key = UsageKey(api_key_id, user_id)
            exact = value if isinstance(value, int) else Fraction(value)
            known = numerators.get(key)
            numerators[key] = exact if known is None else known + exact
    return {key: Fraction(value) for key, value in numerators.items()}


def rate_meter(
    price: MeterPrice,
    usage: Mapping[TotalsKey, Totals],
    currency: str,
    *,
    org_id: str = "",
    discount_percent: Decimal | None = None,
) -> MeterCharge:
    """Price one charge for one org: exact quantity, one half-up rounding, exact split."""
    definition = METERS[price.meter]
    numerators = _numerators(price, usage, org_id)
    keys = sorted(numerators, key=_allocation_order)
    quantity = sum(numerators.values(), Fraction(0)) / definition.divisor
    billable = max(Fraction(0), quantity - Fraction(price.included))
    exact = exact_meter_charge(price, billable, discount_percent)
    amount_minor = round_to_minor_units(exact, currency)
    # What the statement prints before its discount line: the undiscounted charge, rounded
    # half-up once on its own (the discount line is the difference, so the rows still add up).
    list_amount_minor = (
        round_to_minor_units(exact_meter_charge(price, billable), currency)
        if discount_percent
        else None
    )
    if keys:
        shares = allocate_largest_remainder(amount_minor, [numerators[key] for key in keys])
        lines = tuple(
            AllocatedLine(key, numerators[key] / definition.divisor, share)
            for key, share in zip(keys, shares, strict=True)
        )
    elif amount_minor:
        lines = (AllocatedLine(UsageKey(None, None), Fraction(0), amount_minor),)
    else:
        lines = ()
    description = price.description or definition.description
    if price.session_kind and not price.description:
        description += f" ({price.session_kind})"
    return MeterCharge(
        meter=price.name,
        unit=price.unit,
        description=description,
        quantity=quantity,
        included=price.included,
        billable=billable,
        pricing=describe_pricing(price, discount_percent),
        amount_minor=amount_minor,
        lines=lines,
        list_amount_minor=list_amount_minor,
    )


def minimum_top_up(
    minimum: Decimal | None, currency: str, usage_total_minor: int
) -> MeterCharge | None:
    """A charge that lifts an org's total to its minimum, or None when it is met."""
    if minimum is None:
        return None
    shortfall = round_to_minor_units(minimum, currency) - usage_total_minor
    if shortfall <= 0:
        return None
    return MeterCharge(
        meter=MINIMUM_CHARGE_METER,
        unit="period",
        description="Minimum charge top-up",
        quantity=Fraction(1),
        included=Decimal(0),
        billable=Fraction(1),
        pricing=f"minimum {minimum} per period",
        amount_minor=shortfall,
        lines=(AllocatedLine(UsageKey(None, None), Fraction(1), shortfall),),
    )


def rate_org(
    account: OrgAccount, card: RateCard, usage: Mapping[TotalsKey, Totals]
) -> RatedInvoice:
    """Price every charge of the card for one org, then apply its minimum."""
    charges = [
        rate_meter(
            price,
            usage,
            card.currency,
            org_id=account.org_id,
            discount_percent=account.discount_percent,
        )
        for price in card.meters
    ]
    minimum = (
        account.minimum_commitment
        if account.minimum_commitment is not None
        else card.minimum_charge
    )
    top_up = minimum_top_up(minimum, card.currency, sum(c.amount_minor for c in charges))
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


SECONDS_PER_DAY = 86_400


def daily_duration(records: Iterable[UsageRecord]) -> tuple[tuple[int, int], ...]:
    """Session time summed per UTC day of each result's bucket start, in day order."""
    days: dict[int, int] = {}
    for record in records:
        day = record.bucket_start // SECONDS_PER_DAY * SECONDS_PER_DAY
        days[day] = days.get(day, 0) + record.duration_ms
    return tuple(sorted(days.items()))


def rate_orgs(
    orgs: Iterable[tuple[str, Sequence[UsageRecord]]],
    account_for: AccountResolver,
    card_for: CardResolver,
    report: RatingReport,
) -> Iterator[RatedInvoice]:
    """Rate org by org as each org's usage streams in (each org once), so only one org's
    results are held; each invoice carries its session time per day. `report` counts what was
    read."""
    for org_id, records in orgs:
        aggregate = UsageAggregate(report=report)
        aggregate.add_all(records)
        account = account_for(org_id)
        invoice = rate_org(account, card_for(account), aggregate.by_org[org_id])
        if not invoice.org.emails:
            report.orgs_without_contact.append(org_id)
        yield dataclasses.replace(invoice, daily_duration_ms=daily_duration(records))
