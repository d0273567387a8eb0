"""Sending a close to the Celery workers from the command line, and waiting for its answer."""

from __future__ import annotations

from billing.config import Settings
from billing.errors import BillingError
from billing.periods import BillingPeriod


def close_on_workers(
    settings: Settings,
    period: BillingPeriod,
    trigger: str,
    org_ids: tuple[str, ...] = (),
    timeout: float = 3600,  # float-ok: seconds
    *,
    draft: bool = False,
    reissue: bool = False,
) -> str:
    """Enqueue the close of a period on the broker and wait for the worker's result."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from workers.tasks import close_period

    async_result = close_period.apply_async(
        args=[str(period), trigger, list(org_ids)], kwargs={"draft": draft, "reissue": reissue}
    )
    try:
        outcome = async_result.get(timeout=timeout, propagate=False)
    except CeleryTimeout:
        raise BillingError(
            f"close of {period} was queued as task {async_result.id} but no worker answered "
            f"in {timeout:.0f}s; "
            "is a worker running (celery -A workers.celery_app worker)?"
        ) from None
    if async_result.failed():
        raise BillingError(f"close of {period} failed on the worker: {outcome}")
    if isinstance(outcome, dict) and "skipped" in outcome:
        raise BillingError(f"close of {period} did not run on the worker: {outcome['skipped']}")
    return f"closed {period} on the workers: {outcome}"
