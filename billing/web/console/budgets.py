"""The Budgets page: each budget of BILLING_BUDGETS in a period, its month-to-date spend, the
percent used, the linear forecast, the alerts that fired and, once invoiced, the difference."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from billing.finance.budgets import SCOPE_WORDS, budget_status
from billing.periods import BillingPeriod
from billing.web.auth import ledger_engine
from billing.web.console.render import page
from billing.web.console.session import User

router = APIRouter(include_in_schema=False)


@router.get("/periods/{period}/budgets")
def budgets_page(request: Request, user: User, period: str) -> Response:
    month = BillingPeriod.parse(period)
    settings = request.app.state.settings
    statuses = (
        [] if settings.budgets is None else budget_status(settings, ledger_engine(request), month)
    )
    return page(
        request,
        "budgets.html",
        user,
        period=str(month),
        configured=settings.budgets is not None,
        statuses=statuses,
        scope_words=SCOPE_WORDS,
    )
