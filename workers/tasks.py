"""Thin Celery tasks: parse ids and periods, call one service function, return plain data."""

from __future__ import annotations

from datetime import UTC, datetime

from billing.config import get_settings
from billing.db.locks import PeriodBusy
from billing.periods import BillingPeriod
from billing.services import close_period as close_period_service
from billing.stages import CloseOptions
from workers.celery_app import app


@app.task(name="workers.tasks.close_period")
def close_period(
    period: str,
    trigger: str = "celery",
    org_ids: list[str] | None = None,
    draft: bool = False,
    reissue: bool = False,
) -> dict[str, object]:
    """Close one period (or some orgs of it) and report the run, invoices and folder.

    A close of the same period already running elsewhere makes this one a clean no-op."""
    try:
        result = close_period_service(
            get_settings(),
            BillingPeriod.parse(period),
            trigger=trigger,
            org_ids=tuple(org_ids or ()),
            options=CloseOptions(draft=draft, reissue=reissue),
        )
    except PeriodBusy as busy:
        return {"period": period, "skipped": str(busy)}
    return {
        "run_id": result.run_id,
        "period": str(result.period),
        "invoices": len(result.statements),
        "drafts": result.drafts,
        "folder": str(result.folder),
    }


@app.task(name="workers.tasks.close_previous_month")
def close_previous_month() -> dict[str, object]:
    """The monthly beat entry: close the month before the current UTC one."""
    period = BillingPeriod.previous_to(datetime.now(UTC))
    result: dict[str, object] = close_period(str(period), trigger="celery-beat")
    return result
