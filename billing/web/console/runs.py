"""The Run page: a run's audit (as `billing runs show` prints it), its warnings, and its
progress per step as a fragment the page reloads while the run is running."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from billing.finance.overview import RunView, run_view
from billing.states import RunStatus
from billing.web.auth import ledger_engine
from billing.web.console.render import PAGE_HEADERS, page, templates
from billing.web.console.session import User

router = APIRouter(include_in_schema=False)

# An org outcome that says nothing more than that its draft was made (not listed, as the CLI).
DRAFTED = "drafted"
# Seconds between reloads of a running run's progress.
REFRESH_SECONDS = 2


def request_fields(raw: str | None) -> list[tuple[str, str]]:
    """The run's request parameters as (name, value) pairs; the raw text when not a JSON
    object."""
    if not raw:
        return []
    try:
        decoded = json.loads(raw)
    except ValueError:
        return [("request", raw)]
    if not isinstance(decoded, dict):
        return [("request", raw)]
    return [
        (str(name), value if isinstance(value, str) else json.dumps(value))
        for name, value in decoded.items()
    ]


def progress_context(view: RunView) -> dict[str, Any]:
    live = view.detail.run.status == RunStatus.RUNNING
    return {"view": view, "run": view.detail.run, "live": live, "refresh": REFRESH_SECONDS}


@router.get("/runs/{run_id}")
def run_page(request: Request, user: User, run_id: int) -> Response:
    view = run_view(ledger_engine(request), run_id)
    detail = view.detail
    return page(
        request,
        "run.html",
        user,
        request_fields=request_fields(detail.run.request_params),
        totals={currency: Decimal(amount) for currency, amount in detail.totals.items()},
        outcomes=[o for o in detail.org_outcomes if o.get("action") != DRAFTED or o.get("detail")],
        **progress_context(view),
    )


@router.get("/runs/{run_id}/progress")
def run_progress(request: Request, user: User, run_id: int) -> Response:
    """The progress fragment alone (what console.js swaps in)."""
    view = run_view(ledger_engine(request), run_id)
    return templates.TemplateResponse(
        request, "run_progress.html", progress_context(view), headers=PAGE_HEADERS
    )
