"""Which months each rate card, and so each org, can be billed for, from its versions' dates."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from billing.catalog.loader import OrgDirectory, RateCatalog
from billing.domain import RateCard
from billing.periods import BillingPeriod

# How many org ids a card's line names before it only counts the rest.
NAMED_ORGS = 5


@dataclass(frozen=True, order=True)
class MonthRange:
    """The months from `first` to `last` (both included); `last` None: with no end."""

    first: BillingPeriod
    last: BillingPeriod | None

    def __str__(self) -> str:
        if self.last is None:
            return f"{_month(self.first)} on"
        if self.last == self.first:
            return _month(self.first)
        return f"{_month(self.first)} to {_month(self.last)}"


def _month(period: BillingPeriod) -> str:
    return f"{period.year:04d}-{period.month:02d}"


def _first_month_from(day: date) -> BillingPeriod:
    """The first month whose first day is on or after `day`."""
    month = BillingPeriod(day.year, day.month)
    return month if day.day == 1 else month.next()


def billable_months(versions: Sequence[RateCard]) -> list[MonthRange]:
    """The months a card's versions price, as `RateCatalog.card_for` chooses them: by the
    month's first day, the latest version started by then, unless it ended before it."""
    ordered = sorted(versions, key=lambda card: card.effective_from)
    ranges: list[MonthRange] = []
    for index, card in enumerate(ordered):
        ends = [day for day in (card.effective_until,) if day is not None]
        if index + 1 < len(ordered):
            ends.append(ordered[index + 1].effective_from - timedelta(days=1))
        first = _first_month_from(card.effective_from)
        last = BillingPeriod(min(ends).year, min(ends).month) if ends else None
        if last is not None and last < first:
            continue
        if ranges and ranges[-1].last is not None and ranges[-1].last.next() == first:
            first = ranges.pop().first
        ranges.append(MonthRange(first, last))
    return ranges


def common_months(*coverages: Sequence[MonthRange]) -> list[MonthRange]:
    """The months every one of the coverages includes."""
    common = [MonthRange(BillingPeriod(1970, 1), None)]
    for ranges in coverages:
        common = [
            both
            for mine in common
            for theirs in ranges
            if (both := _overlap(mine, theirs)) is not None
        ]
    return sorted(common)


def _overlap(one: MonthRange, other: MonthRange) -> MonthRange | None:
    first = max(one.first, other.first)
    ends = [last for last in (one.last, other.last) if last is not None]
    last = min(ends) if ends else None
    return None if last is not None and last < first else MonthRange(first, last)


def describe_months(ranges: Iterable[MonthRange]) -> str:
    """The months as text: `2026-01 on`, `2026-01 to 2026-06, 2026-09 on`, or `no month`."""
    return ", ".join(str(each) for each in ranges) or "no month"


@dataclass
class CardUse:
    """One card: the months it bills and the listed orgs it prices."""

    card_id: str
    months: list[MonthRange]
    default: bool = False
    org_ids: list[str] = field(default_factory=list)

    def orgs_text(self) -> str:
        """Who the card prices: a few org ids, how many more, and the unlisted orgs."""
        named = ", ".join(self.org_ids[:NAMED_ORGS])
        more = len(self.org_ids) - NAMED_ORGS
        listed = (
            f"{len(self.org_ids)} org{'s' if len(self.org_ids) != 1 else ''} ({named}"
            + (f" and {more} more" if more > 0 else "")
            + ")"
            if self.org_ids
            else ""
        )
        if self.default:
            return f"the default card: {listed + ' and ' if listed else ''}every org not listed"
        return listed or "no org"


def card_uses(catalog: RateCatalog, directory: OrgDirectory) -> list[CardUse]:
    """Per card of the catalog, in id order: its months and the orgs it prices."""
    uses = {
        card_id: CardUse(card_id, billable_months(catalog.versions(card_id)))
        for card_id in catalog.ids()
    }
    if directory.default_rate_card in uses:
        uses[directory.default_rate_card].default = True
    for account in directory.orgs.values():
        use = uses.get(directory.rate_card_id(account))
        if use is not None:
            use.org_ids.append(account.org_id)
    return list(uses.values())


def months_every_org_can_be_billed(uses: Iterable[CardUse]) -> list[MonthRange]:
    """The months in which every org, listed or not, has a card version that prices it."""
    return common_months(*(use.months for use in uses if use.default or use.org_ids))
