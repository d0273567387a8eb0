"""The Periods page: each month's state at a glance (runs, invoices per state, totals per
currency, emails, review deadline), newest first."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from starlette.responses import Response

from billing.finance.overview import recent_periods
from billing.web.auth import ledger_engine
from billing.web.console.render import page, redirect
from billing.web.console.session import User

router = APIRouter(include_in_schema=False)


@router.get("/")
def home(request: Request, user: User) -> Response:
    return redirect(request, "/periods")


@router.get("/periods")
def periods(request: Request, user: User) -> Response:
    summaries = recent_periods(ledger_engine(request), datetime.now(UTC))
    return page(request, "periods.html", user, summaries=summaries)
