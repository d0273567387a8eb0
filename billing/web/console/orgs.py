"""The Org page: who an org is, its contacts and credit balance, its invoices over time and a
bar chart of its totals per period."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from fastapi import APIRouter, Request
from starlette.responses import Response

from billing.finance.lookup import InvoiceListRow
from billing.finance.overview import org_overview
from billing.states import InvoiceStatus
from billing.web.auth import ledger_engine
from billing.web.console.invoices import app_settings
from billing.web.console.render import page
from billing.web.console.session import User

router = APIRouter(include_in_schema=False)

CHART_HEIGHT = 120  # pixels of the tallest bar


@dataclass(frozen=True)
class Bar:
    """One period's live total in the chart: its height scaled to the currency's largest."""

    period: str
    currency: str
    total: Decimal
    height: int


def bars(invoices: list[InvoiceListRow]) -> list[Bar]:
    """The live (not void) invoices' totals per period and currency, oldest first; each bar's
    height relative to the largest total of its currency (negative totals draw as zero)."""
    totals: dict[tuple[str, str], Decimal] = {}
    for row in invoices:
        if row.status != InvoiceStatus.VOID:
            key = (row.period, row.currency)
            totals[key] = totals.get(key, Decimal(0)) + row.total
    tallest: dict[str, Decimal] = {}
    for (_period, currency), total in totals.items():
        tallest[currency] = max(tallest.get(currency, Decimal(0)), total)
    return [
        Bar(
            period,
            currency,
            total,
            int(max(total, Decimal(0)) * CHART_HEIGHT / tallest[currency])
            if tallest[currency] > 0
            else 0,
        )
        for (period, currency), total in sorted(totals.items())
    ]


@router.get("/orgs/{org_id:path}")
def show_org(request: Request, user: User, org_id: str) -> Response:
    overview = org_overview(app_settings(request), ledger_engine(request), org_id)
    return page(
        request,
        "org.html",
        user,
        org=overview,
        bars=bars(overview.invoices),
        chart_height=CHART_HEIGHT,
    )
