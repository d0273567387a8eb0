"""Pure rating: sum usage exactly, price each org's charges, allocate them to keys and users."""

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
from billing.money import (
    WIDE,
    allocate_largest_remainder,
    minor_unit_exponent,
    round_to_minor_units,
)

# (api_key_id, user_id, session_kind): the grain rating sums at.
TotalsKey = tuple[str | None, str | None, str | None]
Totals = list[int | Decimal]


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
        every lookup local and every index a literal (TOTALS_FIELDS order), the hottest loop of
        rating.

        Measured for issue 21: gathering a batch's figures in lists and summing them per key
        with `sum` in C ran half the instructions of this loop but no faster on this machine
        (the figures are read twice, the second time from cold memory), so the loop stays.
        """
        by_org = self.by_org
        count = without_memory = peak_only = 0
        with localcontext(WIDE):
            for record in records:
                org_id = record.org_id
                keys = by_org.get(org_id)
                if keys is None:
                    keys = by_org[org_id] = {}
                key = (record.api_key_id, record.user_id, record.session_kind)
                totals = keys.get(key)
                if totals is None:
                    totals = keys[key] = [0, 0, 0, 0, 0, 0, 0, 0]
                duration = record.duration_ms
                reserved = record.reserved_memory_mib
                totals[0] += duration
                if reserved is not None:
                    peak = record.peak_memory_mib
                    memory = reserved * duration
                    totals[1] += memory
                    totals[2] += memory if peak is None else peak * duration
                else:
                    peak = record.peak_memory_mib
                    if peak is not None:
                        peak_ms = peak * duration
                        totals[1] += peak_ms
                        totals[2] += peak_ms
                        peak_only += 1
                    else:
                        without_memory += 1
                totals[3] += record.workspace_bytes_in
                totals[4] += record.workspace_bytes_out
                totals[5] += record.num_sessions
                totals[6] += record.request_count
                totals[7] += record.num_operations
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


def _pair_order(pair: tuple[str | None, str | None]) -> tuple[bool, str, bool, str]:
    api_key_id, user_id = pair
    return (api_key_id is None, api_key_id or "", user_id is None, user_id or "")


# An exact rational as (numerator, denominator), the denominator positive and not necessarily
# the least: rating works on these in integers and makes Fractions only of what it returns.
Ratio = tuple[int, int]


def _ratio(value: Decimal | int) -> Ratio:
    return value.as_integer_ratio()


@dataclass(frozen=True, slots=True)
class _PriceTerms:
    """What rating needs of one price, worked out once: its figures as integer ratios, its
    meter's totals index and divisor, and its texts."""

    price: MeterPrice
    totals_index: int
    divisor: int
    included: Ratio
    unit_price: Ratio | None
    tiers: tuple[tuple[Ratio | None, Ratio], ...]
    volume: bool
    package: tuple[Ratio, Ratio] | None
    minimum: Ratio | None
    maximum: Ratio | None
    description: str
    pricing: str


def _price_terms(price: MeterPrice) -> _PriceTerms:
    definition = METERS[price.meter]
    description = price.description or definition.description
    if price.session_kind and not price.description:
        description += f" ({price.session_kind})"
    package = None
    if not price.tiers and price.package_size is not None and price.package_price is not None:
        package = (_ratio(price.package_size), _ratio(price.package_price))
    return _PriceTerms(
        price=price,
        totals_index=definition.totals_index,
        divisor=definition.divisor,
        included=_ratio(price.included),
        unit_price=None if price.unit_price is None else _ratio(price.unit_price),
        tiers=tuple(
            (None if tier.up_to is None else _ratio(tier.up_to), _ratio(tier.unit_price))
            for tier in price.tiers
        ),
        volume=price.tier_mode == "volume",
        package=package,
        minimum=None if price.minimum is None else _ratio(price.minimum),
        maximum=None if price.maximum is None else _ratio(price.maximum),
        description=description,
        pricing=describe_pricing(price),
    )


# id(price) -> its terms (which hold the price, so the id stays its own while cached); cards
# are shared by the orgs they price, and an org's overrides make prices of its own, so the
# cache is emptied when it grows past this.
_TERMS: dict[int, _PriceTerms] = {}
_TERMS_LIMIT = 4_096


def _terms_of(price: MeterPrice) -> _PriceTerms:
    terms = _TERMS.get(id(price))
    if terms is None or terms.price is not price:
        if len(_TERMS) >= _TERMS_LIMIT:
            _TERMS.clear()
        terms = _TERMS[id(price)] = _price_terms(price)
    return terms


def _model_charge_ratio(terms: _PriceTerms, billable: Ratio) -> Ratio:
    """model_charge in integers: the same charge, as a ratio."""
    number, denominator = billable
    if terms.tiers:
        if terms.volume:
            for upper, (price_n, price_d) in terms.tiers:
                if upper is None or number * upper[1] <= upper[0] * denominator:
                    return number * price_n, denominator * price_d
            raise ValueError("tiers must end with an unbounded tier")
        charge_n, charge_d = 0, 1
        lower_n, lower_d = 0, 1
        for upper, (price_n, price_d) in terms.tiers:
            if upper is None or number * upper[1] <= upper[0] * denominator:
                top_n, top_d = number, denominator
            else:
                top_n, top_d = upper
            if top_n * lower_d <= lower_n * top_d:
                break
            slice_n, slice_d = top_n * lower_d - lower_n * top_d, top_d * lower_d
            charge_n, charge_d = (
                charge_n * slice_d * price_d + slice_n * price_n * charge_d,
                charge_d * slice_d * price_d,
            )
            if upper is None:
                break
            lower_n, lower_d = upper
        return charge_n, charge_d
    if terms.package is not None:
        (size_n, size_d), (price_n, price_d) = terms.package
        over_n, over_d = number * size_d, denominator * size_n
        if over_d < 0:
            over_n, over_d = -over_n, -over_d
        return -(-over_n // over_d) * price_n, price_d
    assert terms.unit_price is not None
    price_n, price_d = terms.unit_price
    return number * price_n, denominator * price_d


def _exact_charge_ratio(terms: _PriceTerms, billable: Ratio, discount: Ratio | None) -> Ratio:
    """exact_meter_charge in integers: held within the minimum and maximum, less the discount."""
    charge_n, charge_d = _model_charge_ratio(terms, billable)
    if terms.minimum is not None:
        minimum_n, minimum_d = terms.minimum
        if minimum_n * charge_d > charge_n * minimum_d:
            charge_n, charge_d = minimum_n, minimum_d
    if terms.maximum is not None:
        maximum_n, maximum_d = terms.maximum
        if maximum_n * charge_d < charge_n * maximum_d:
            charge_n, charge_d = maximum_n, maximum_d
    if discount is not None:
        discount_n, discount_d = discount
        charge_n, charge_d = (
            charge_n * (100 * discount_d - discount_n),
            charge_d * 100 * discount_d,
        )
    return charge_n, charge_d


def _round_ratio(value: Ratio, exponent: int) -> int:
    """round_to_minor_units of a ratio: half-up (away from zero) to 10**-exponent."""
    number, denominator = value
    scale: int = 10**exponent
    number *= scale
    whole, remainder = divmod(-number if number < 0 else number, denominator)
    if 2 * remainder >= denominator:
        whole += 1
    return -whole if number < 0 else whole


class _OrgUsage:
    """One org's totals as rating reads them for each of its charges: its (API key, user)
    pairs in allocation order, each with one UsageKey shared by its lines."""

    __slots__ = ("items", "keys", "order")

    def __init__(self, usage: Mapping[TotalsKey, Totals]) -> None:
        self.items = list(usage.items())
        self.order = sorted(
            {(api_key_id, user_id) for api_key_id, user_id, _ in usage}, key=_pair_order
        )
        self.keys = {pair: UsageKey(*pair) for pair in self.order}


def _numerator_sums(
    price: MeterPrice, index: int, org: _OrgUsage, org_id: str
) -> dict[tuple[str | None, str | None], int | Decimal | Fraction]:
    """The meter's exact numerator per (API key, user), limited to its session kind if any."""
    sums: dict[tuple[str | None, str | None], int | Decimal | Fraction] = {}
    kind = price.session_kind
    for (api_key_id, user_id, session_kind), totals in org.items:
        if kind is not None:
            if session_kind is None:
                raise RateCardError(
                    f"org {org_id}: charge {price.name!r} is for {kind} sessions "
                    "but the usage was fetched without session_kind"
                )
            if session_kind != kind:
                continue
        value = totals[index]
        if value:
            pair = (api_key_id, user_id)
            known = sums.get(pair)
            if known is None:
                sums[pair] = value
            elif isinstance(known, int) and isinstance(value, int):
                sums[pair] = known + value
            else:
                sums[pair] = Fraction(known) + Fraction(value)
    return sums


def _rate_meter(
    price: MeterPrice,
    org: _OrgUsage,
    currency: str,
    org_id: str,
    discount_percent: Decimal | None,
) -> MeterCharge:
    """rate_meter in integer arithmetic: the same charge, quantities and lines."""
    terms = _terms_of(price)
    sums = _numerator_sums(price, terms.totals_index, org, org_id)
    pairs = [pair for pair in org.order if pair in sums] if sums else []
    ratios = [
        (value, 1) if isinstance(value, int) else value.as_integer_ratio()
        for value in map(sums.__getitem__, pairs)
    ]
    common = math.lcm(*(denominator for _, denominator in ratios)) if ratios else 1
    numerators = [
        number if denominator == common else number * (common // denominator)
        for number, denominator in ratios
    ]
    total = sum(numerators)
    over = common * terms.divisor  # quantity = numerator / over
    included_n, included_d = terms.included
    billable_n = total * included_d - included_n * over
    billable: Ratio = (billable_n, over * included_d) if billable_n > 0 else (0, 1)
    discount = _ratio(discount_percent) if discount_percent else None
    exponent = minor_unit_exponent(currency)
    amount_minor = _round_ratio(_exact_charge_ratio(terms, billable, discount), exponent)
    list_amount_minor = (
        _round_ratio(_exact_charge_ratio(terms, billable, None), exponent) if discount else None
    )
    if pairs:
        shares = allocate_largest_remainder(amount_minor, numerators)
        keys = org.keys
        lines = tuple(
            AllocatedLine(keys[pair], Fraction(number, over), share)
            for pair, number, share in zip(pairs, numerators, shares, strict=True)
        )
    elif amount_minor:
        lines = (AllocatedLine(UsageKey(None, None), Fraction(0), amount_minor),)
    else:
        lines = ()
    return MeterCharge(
        meter=price.name,
        unit=price.unit,
        description=terms.description,
        quantity=Fraction(total, over),
        included=price.included,
        billable=Fraction(*billable),
        pricing=describe_pricing(price, discount_percent) if discount_percent else terms.pricing,
        amount_minor=amount_minor,
        lines=lines,
        list_amount_minor=list_amount_minor,
    )


def rate_meter(
    price: MeterPrice,
    usage: Mapping[TotalsKey, Totals],
    currency: str,
    *,
    org_id: str = "",
    discount_percent: Decimal | None = None,
) -> MeterCharge:
    """Price one charge for one org: exact quantity, one half-up rounding, exact split."""
    return _rate_meter(price, _OrgUsage(usage), currency, org_id, discount_percent)


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
    org = _OrgUsage(usage)
    charges = [
        _rate_meter(price, org, card.currency, account.org_id, account.discount_percent)
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
