"""Thin Celery tasks: parse ids and periods, call one service function, return plain data."""

from __future__ import annotations

from datetime import UTC, datetime

from billing.config import get_settings
from billing.periods import BillingPeriod
from billing.services import close_period as close_period_service
from workers.celery_app import app


@app.task(name="workers.tasks.close_period")
def close_period(
    period: str, trigger: str = "celery", org_ids: list[str] | None = None
) -> dict[str, object]:
    """Close one period (or some orgs of it) and report the run, invoices and folder."""
    result = close_period_service(
        get_settings(), BillingPeriod.parse(period), trigger=trigger, org_ids=tuple(org_ids or ())
    )
    return {
        "run_id": result.run_id,
        "period": str(result.period),
        "invoices": len(result.statements),
        "folder": str(result.folder),
    }


@app.task(name="workers.tasks.close_previous_month")
def close_previous_month() -> dict[str, object]:
    """The monthly beat entry: close the month before the current UTC one."""
    period = BillingPeriod.previous_to(datetime.now(UTC))
    result: dict[str, object] = close_period(str(period), trigger="celery-beat")
    return result
