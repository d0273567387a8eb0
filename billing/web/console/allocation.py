"""The Allocation page: the period's cost by cost centre (shared costs applied), shared rule,
org, API key and user, each grouped per currency with exact Decimal totals, and a bar chart of
the cost centres drawn as SVG."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from fastapi import APIRouter, Request
from starlette.responses import Response

from billing.finance.overview import period_allocation
from billing.periods import BillingPeriod
from billing.statements.allocation import AllocationRow
from billing.web.auth import ledger_engine
from billing.web.console.render import page
from billing.web.console.session import User

router = APIRouter(include_in_schema=False)

# The chart's geometry in SVG user units: the longest bar of a currency, its rows.
BAR_MAX = Decimal(420)
CHART_WIDTH = 640
HEADING_HEIGHT = 26
ROW_HEIGHT = 38


@dataclass(frozen=True)
class Share:
    """One group's cost in one currency: its id (None: lines without one), what the page
    calls it, its amount and how many line items it holds."""

    key: str | None
    name: str
    amount: Decimal
    line_items: int


@dataclass(frozen=True)
class Grouping:
    """Shares per currency (in the order shown) and their exact totals per currency."""

    by_currency: dict[str, list[Share]]
    totals: dict[str, Decimal]


def group(
    rows: Iterable[AllocationRow],
    key: Callable[[AllocationRow], str | None],
    name: Callable[[AllocationRow], str],
    *,
    keep_order: bool = False,
    amount: Callable[[AllocationRow], Decimal] = lambda row: row.billed_cost,
) -> Grouping:
    """The rows' `amount` (billed cost unless told) summed per (currency, key), exactly;
    largest first unless `keep_order` (the rows' own order, as allocation.csv's cost
    centres)."""
    amounts: dict[tuple[str, str | None], Decimal] = {}
    items: dict[tuple[str, str | None], int] = {}
    names: dict[tuple[str, str | None], str] = {}
    for row in rows:
        at = (row.currency, key(row))
        amounts[at] = amounts.get(at, Decimal(0)) + amount(row)
        items[at] = items.get(at, 0) + row.line_items
        names.setdefault(at, name(row))
    by_currency: dict[str, list[Share]] = {}
    for (currency, found), summed in amounts.items():
        share = Share(found, names[(currency, found)], summed, items[(currency, found)])
        by_currency.setdefault(currency, []).append(share)
    if not keep_order:
        for shares in by_currency.values():
            shares.sort(key=lambda share: (-share.amount, share.name))
    ordered = dict(sorted(by_currency.items()))
    totals = {
        currency: sum((share.amount for share in shares), Decimal(0))
        for currency, shares in ordered.items()
    }
    return Grouping(ordered, totals)


@dataclass(frozen=True)
class Bar:
    """One bar of the chart: where its label and bar stand, its width as a plain number."""

    share: Share
    currency: str
    label_y: int
    bar_y: int
    width: str
    end_x: str
    negative: bool


@dataclass(frozen=True)
class Chart:
    """The cost-centre chart: a heading per currency, a bar per cost centre, its height."""

    headings: list[tuple[str, int]]
    bars: list[Bar]
    height: int
    width: int = CHART_WIDTH


def plain(number: Decimal) -> str:
    """A Decimal as an SVG number: fixed point, no exponent."""
    return f"{number.quantize(Decimal('0.01')):f}"


def chart(centres: Grouping) -> Chart:
    """Bars as long as each cost centre's share of the currency's largest (ratios of
    Decimals; currencies are never compared with each other)."""
    headings: list[tuple[str, int]] = []
    bars: list[Bar] = []
    y = 0
    for currency, shares in centres.by_currency.items():
        headings.append((currency, y + 18))
        y += HEADING_HEIGHT
        largest = max((abs(share.amount) for share in shares), default=Decimal(0))
        for share in shares:
            width = abs(share.amount) / largest * BAR_MAX if largest else Decimal(0)
            end = plain(width + 6)
            bars.append(Bar(share, currency, y + 13, y + 18, plain(width), end, share.amount < 0))
            y += ROW_HEIGHT
    return Chart(headings, bars, max(y, 1))


def by_org(row: AllocationRow) -> str | None:
    """An org's id; None for a shared rule's fixed overhead, which is on no org's invoice."""
    return row.org_id or None


def org_name(row: AllocationRow) -> str:
    return row.org_name if row.org_id else f"(fixed overhead: {row.allocated_from})"


def share_flow(row: AllocationRow) -> str:
    return f"{row.allocated_from} → {row.cost_centre}"


def direct(row: AllocationRow) -> Decimal:
    return row.direct_cost


@router.get("/periods/{period}/allocation")
def allocation_page(request: Request, user: User, period: str) -> Response:
    month = BillingPeriod.parse(period)
    allocation = period_allocation(request.app.state.settings, ledger_engine(request), month)
    rows = allocation.rows
    centres = group(rows, lambda r: r.cost_centre, lambda r: r.cost_centre, keep_order=True)
    shares = [row for row in rows if row.is_share]
    tables = [("by-cost-centre", "By cost centre", "Cost centre", centres, False)]
    if shares:
        flows = group(shares, share_flow, share_flow)
        tables.append(("by-shared-rule", "Shared costs", "Rule → cost centre", flows, False))
    tables += [
        ("by-org", "By org", "Org", group(rows, by_org, org_name), True),
        (
            "by-api-key",
            "By API key (direct cost)",
            "API key",
            group(
                rows,
                lambda r: r.api_key_id,
                lambda r: r.api_key_id or "(no API key)",
                amount=direct,
            ),
            False,
        ),
        (
            "by-user",
            "By user (direct cost)",
            "User",
            group(rows, lambda r: r.user_id, lambda r: r.user_id or "(no user)", amount=direct),
            False,
        ),
    ]
    return page(
        request,
        "allocation.html",
        user,
        period=str(month),
        totals=allocation.totals,
        shared=bool(shares),
        chart=chart(centres),
        tables=tables,
    )
