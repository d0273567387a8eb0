"""The Review page: a period's invoices beside last month, flagged, filtered, sorted, paged."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from billing.finance.review_board import FLAGS, STATUSES, period_review
from billing.periods import BillingPeriod
from billing.web.auth import ledger_engine
from billing.web.console.render import page
from billing.web.console.session import User

router = APIRouter(include_in_schema=False)

# Sortable columns whose first click sorts largest first.
NUMERIC = ("total", "change", "change_percent")


def _query(**fields: str | int | None) -> str:
    """A query string of the fields that hold something (the page's own links)."""
    return "?" + urlencode(
        {name: value for name, value in fields.items() if value not in (None, "")}
    )


@router.get("/periods/{period}/review")
def review(
    request: Request,
    user: User,
    period: str,
    status: str = "",
    flag: str = "",
    q: str = "",
    sort: str = "org",
    order: str = "",
    page_number: Annotated[int, Query(alias="page")] = 1,
) -> Response:
    parsed = BillingPeriod.parse(period)
    descending = order == "desc"
    board = period_review(
        request.app.state.settings,
        ledger_engine(request),
        parsed,
        status=status or None,
        flag=flag or None,
        query=q,
        sort=sort or "org",
        descending=descending,
        page=page_number,
    )
    kept = {"status": status, "flag": flag, "q": q.strip()}
    order_text = "desc" if descending else ""

    def sort_link(column: str) -> str:
        """The header's link: this column, the other way round when it is already sorted."""
        if column == (sort or "org"):
            flipped = "" if descending else "desc"
        else:
            flipped = "desc" if column in NUMERIC else ""
        return _query(**kept, sort=column, order=flipped)

    def page_link(number: int) -> str:
        return _query(**kept, sort=sort, order=order_text, page=number)

    chosen = {**kept, "sort": sort or "org", "order": order_text}
    return page(
        request,
        "review.html",
        user,
        board=board,
        statuses=STATUSES,
        flags=FLAGS,
        chosen=chosen,
        sort_link=sort_link,
        page_link=page_link,
    )
