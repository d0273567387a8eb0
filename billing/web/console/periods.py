"""The Periods page and one period's page: each month's state at a glance (runs, invoices per
state, totals per currency, emails, review deadline), and its finalize and send-emails actions."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, BackgroundTasks, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from billing.close.inline import finalize_period
from billing.db.tables import BillingRun
from billing.finance.emails import send_pending
from billing.finance.invoices import read_runs
from billing.finance.overview import PeriodSummary, period_summary, recent_periods
from billing.periods import BillingPeriod
from billing.states import Role
from billing.web.api import deliver_webhooks
from billing.web.auth import ledger_engine
from billing.web.console.forms import confirmation, posted
from billing.web.console.render import page, redirect
from billing.web.console.session import User
from billing.wording import plural

router = APIRouter(include_in_schema=False)


@router.get("/")
def home(request: Request, user: User) -> Response:
    return redirect(request, "/periods")


@router.get("/periods")
def periods(request: Request, user: User) -> Response:
    summaries = recent_periods(ledger_engine(request), datetime.now(UTC))
    return page(request, "periods.html", user, summaries=summaries)


def _summary(request: Request, period: BillingPeriod) -> PeriodSummary:
    return period_summary(ledger_engine(request), period, datetime.now(UTC))


@router.get("/periods/{period}")
def period_page(request: Request, user: User, period: str) -> Response:
    summary = _summary(request, BillingPeriod.parse(period))
    return page(request, "period.html", user, s=summary, approver=Role.APPROVER)


@router.post("/periods/{period}/finalize")
async def finalize(request: Request, user: User, period: str, after: BackgroundTasks) -> Response:
    form = await posted(request, user, Role.APPROVER)
    month = BillingPeriod.parse(period)
    back = f"/periods/{month}"
    if not form.confirmed:
        summary = await run_in_threadpool(_summary, request, month)
        held = summary.counts["held"]
        return confirmation(
            request,
            user,
            form,
            title=f"Finalize {month}",
            consequences=[
                f"{plural(summary.counts['draft'] - held, 'draft invoice')} of {month} will be "
                "numbered and frozen.",
                f"{plural(held, 'held draft')} will stay "
                f"{'a draft' if held == 1 else 'drafts'} until released.",
                "Invoice numbers are gapless and cannot be taken back: a mistake afterwards "
                "needs a void or a credit note.",
                "Each numbered statement is rendered to PDF and emailed to its org's contacts.",
            ],
            back=back,
            button="Finalize period",
        )
    settings, actor = request.app.state.settings, user.principal.actor
    after.add_task(deliver_webhooks, settings)
    result = await run_in_threadpool(
        finalize_period, settings, month, trigger="console", actor=actor
    )
    run = await run_in_threadpool(_finalize_run, request, month, actor)
    numbered = run.finalized_count if run else sum(not i.draft for i in result.invoices)
    return redirect(
        request,
        back,
        done=(
            f"Finalized {month}{f' in run {run.id}' if run else ''}: "
            f"{plural(numbered, 'invoice')} numbered, "
            f"{plural(result.drafts, 'draft')} left on hold, "
            f"{plural(result.emails_sent, 'email')} sent"
        ),
    )


def _finalize_run(request: Request, period: BillingPeriod, actor: str) -> BillingRun | None:
    """The finalize run this user just recorded (the result names the run whose facts it
    used: the close that drafted)."""
    runs = read_runs(ledger_engine(request), period=period, limit=5)
    return next((r for r in runs if r.operation == "finalize" and r.started_by == actor), None)


@router.post("/periods/{period}/emails/send")
async def send_emails(
    request: Request, user: User, period: str, after: BackgroundTasks
) -> Response:
    form = await posted(request, user, Role.APPROVER)
    month = BillingPeriod.parse(period)
    back = f"/periods/{month}"
    if not form.confirmed:
        summary = await run_in_threadpool(_summary, request, month)
        return confirmation(
            request,
            user,
            form,
            title=f"Send pending emails of {month}",
            consequences=[
                f"{plural(summary.emails['pending'], 'pending email')} of {month} will be sent "
                "(statements and credit notes), each once.",
                "An email already sent is never sent again.",
            ],
            back=back,
            button="Send pending emails",
        )
    settings = request.app.state.settings
    after.add_task(deliver_webhooks, settings)
    report = await run_in_threadpool(send_pending, settings, month)
    sent = report.describe() if report.messages else "no email was pending"
    return redirect(request, back, done=f"Sent the pending emails of {month}: {sent}")
