"""Thin Celery tasks: ids and a period string in, one service step, the next steps enqueued.

Transient failures (the upstream or the database unreachable for a moment) are retried with
backoff; a step that fails for good fails its run with the reason; every delivery of a step is
counted in the database and a step delivered too often is parked.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Task
from sqlalchemy.exc import IntegrityError, OperationalError

from billing.close import distributed
from billing.close.distributed import Work
from billing.close.review import finalize_due_reviews as finalize_ended_windows
from billing.close.steps import CloseOptions, in_batches
from billing.config import get_settings
from billing.errors import BillingError, PeriodBusy, UpstreamUnavailable
from billing.finance.budgets import check_budgets as check_budgets_now
from billing.finance.webhooks import deliver_due
from billing.periods import BillingPeriod
from billing.states import UnitStep
from workers.celery_app import app

# IntegrityError: a duplicate of a step ran at the same moment; on the retry the step finds
# its unit done and skips it.
TRANSIENT = (UpstreamUnavailable, OperationalError, IntegrityError, ConnectionError)
STEP: dict[str, Any] = {
    "bind": True,
    "autoretry_for": TRANSIENT,
    "retry_backoff": True,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 5,
}


def enqueue(work: Work) -> None:
    """Send the steps a service step asked for: renders and emails in batches of
    BILLING_PUBLISH_BATCH invoices."""
    if work.fetch:
        fetch_usage.delay(work.run_id)
    for unit in work.rate:
        rate_batch.delay(work.run_id, unit)
    size = get_settings().publish_batch
    for batch in in_batches(work.render, size):
        render_invoices.delay(work.run_id, batch)
    for batch in in_batches(work.email, size):
        email_invoices.delay(work.run_id, batch)
    if work.report:
        report.delay(work.run_id)


def _cap() -> int:
    return get_settings().celery_max_deliveries


def _step(step: UnitStep, unit: str, run_id: int, call: Any) -> dict[str, object]:
    """Run one step; a failure that is not transient fails the run with its reason."""
    try:
        work = call()
    except TRANSIENT:
        raise
    except distributed.UnitFailed as failed:  # one invoice of a batch
        distributed.fail_unit(get_settings(), run_id, step, failed.unit, failed.detail)
        return {"run_id": run_id, "failed": failed.detail}
    except BillingError as error:
        if error.retryable:
            raise
        distributed.fail_unit(get_settings(), run_id, step, unit, str(error))
        return {"run_id": run_id, "failed": str(error)}
    except Exception as error:
        distributed.fail_unit(get_settings(), run_id, step, unit, repr(error)[:500])
        raise
    enqueue(work)
    return {"run_id": run_id, "stage": str(step), "unit": unit}


@app.task(name="workers.tasks.close_period", ignore_result=False, **STEP)
def close_period(
    self: Task,
    period: str,
    trigger: str = "celery",
    org_ids: list[str] | None = None,
    draft: bool = False,
    reissue: bool = False,
    review: bool = False,
) -> dict[str, object]:
    """Begin a distributed close; a close of the period already under way makes it a no-op."""
    try:
        run_id = distributed.begin_close(
            get_settings(),
            BillingPeriod.parse(period),
            trigger=trigger,
            org_ids=tuple(org_ids or ()),
            options=CloseOptions(draft=draft, reissue=reissue, review=review),
        )
    except PeriodBusy as busy:
        return {"period": period, "skipped": str(busy)}
    fetch_usage.delay(run_id)
    return {"run_id": run_id, "period": period}


@app.task(name="workers.tasks.close_previous_month")
def close_previous_month() -> dict[str, object]:
    """The monthly beat entry: close the month before the current UTC one (into drafts kept
    open for review when BILLING_REVIEW_DAYS is above 0)."""
    period = BillingPeriod.previous_to(datetime.now(UTC))
    windowed = get_settings().review_days > 0
    sent = close_period.delay(str(period), trigger="celery-beat", review=windowed)
    return {"period": str(period), "task": sent.id}


@app.task(name="workers.tasks.fetch_usage", **STEP)
def fetch_usage(self: Task, run_id: int) -> dict[str, object]:
    return _step(
        UnitStep.FETCH, "all", run_id, lambda: distributed.fetch(get_settings(), run_id, cap=_cap())
    )


@app.task(name="workers.tasks.rate_batch", **STEP)
def rate_batch(self: Task, run_id: int, unit: str) -> dict[str, object]:
    return _step(
        UnitStep.RATE,
        unit,
        run_id,
        lambda: distributed.rate_batch(get_settings(), run_id, unit, cap=_cap()),
    )


def _batch_label(invoice_ids: list[int]) -> str:
    return str(invoice_ids[0]) if len(invoice_ids) == 1 else f"{invoice_ids[0]}..{invoice_ids[-1]}"


def _render(run_id: int, invoice_ids: list[int]) -> dict[str, object]:
    return _step(
        UnitStep.RENDER,
        _batch_label(invoice_ids),
        run_id,
        lambda: distributed.render_invoices(get_settings(), run_id, invoice_ids, cap=_cap()),
    )


def _email(run_id: int, invoice_ids: list[int]) -> dict[str, object]:
    return _step(
        UnitStep.EMAIL,
        _batch_label(invoice_ids),
        run_id,
        lambda: distributed.email_invoices(get_settings(), run_id, invoice_ids, cap=_cap()),
    )


@app.task(name="workers.tasks.render_invoices", **STEP)
def render_invoices(self: Task, run_id: int, invoice_ids: list[int]) -> dict[str, object]:
    """A batch of invoices' PDFs and CSVs, one renderer for the batch."""
    return _render(run_id, invoice_ids)


@app.task(name="workers.tasks.email_invoices", **STEP)
def email_invoices(self: Task, run_id: int, invoice_ids: list[int]) -> dict[str, object]:
    """A batch of invoices' pending statement emails over one transport (one SMTP connection)."""
    return _email(run_id, invoice_ids)


# One invoice per message, as sent before batching: kept so that messages queued by an earlier
# version are still worked on after an upgrade.
@app.task(name="workers.tasks.render_invoice", **STEP)
def render_invoice(self: Task, run_id: int, invoice_id: int) -> dict[str, object]:
    return _render(run_id, [invoice_id])


@app.task(name="workers.tasks.email_invoice", **STEP)
def email_invoice(self: Task, run_id: int, invoice_id: int) -> dict[str, object]:
    return _email(run_id, [invoice_id])


@app.task(name="workers.tasks.report", **STEP)
def report(self: Task, run_id: int) -> dict[str, object]:
    return _step(
        UnitStep.REPORT,
        "all",
        run_id,
        lambda: distributed.report(get_settings(), run_id, cap=_cap()),
    )


@app.task(name="workers.tasks.sweep")
def sweep() -> dict[str, object]:
    """Re-enqueue the undone steps of runs with no sign of life (lost messages, dead workers)."""
    settings = get_settings()
    found = distributed.sweep(settings, stalled_after=timedelta(minutes=settings.stall_minutes))
    for work in found:
        enqueue(work)
    return {"runs": [work.run_id for work in found]}


@app.task(name="workers.tasks.finalize_due_reviews")
def finalize_due_reviews() -> dict[str, object]:
    """Finalize the periods whose review window has ended (drafts on hold stay drafts); a
    period busy with another run is left for the next beat."""
    done = finalize_ended_windows(get_settings())
    return {"periods": [item.as_dict() for item in done]}


@app.task(name="workers.tasks.deliver_webhooks")
def deliver_webhooks() -> dict[str, object]:
    """Deliver the webhooks due now (beat, every minute; and after a command wrote events).
    Deliveries are claimed one sender at a time, so overlapping tasks never send one twice."""
    counts = deliver_due(get_settings())
    return {
        "queued": counts.queued,
        "delivered": counts.delivered,
        "retrying": counts.retrying,
        "failed": counts.failed,
        "deferred": counts.deferred,
    }


@app.task(name="workers.tasks.check_budgets", **STEP)
def check_budgets(self: Task) -> dict[str, object]:
    """The daily month-to-date check of BILLING_BUDGETS (beat): spend recorded, each threshold
    alerted once per period and scope (a rerun, a retry or a restarted beat fires nothing twice:
    the ledger's unique constraint decides). A no-op without BILLING_BUDGETS."""
    settings = get_settings()
    if settings.budgets is None:
        return {"period": None, "fired": 0}
    check = check_budgets_now(settings)
    deliver_webhooks.delay()
    return {"period": check.period, "fired": len(check.fired), "sent": check.emails_sent}
