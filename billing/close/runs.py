"""A billing run's record: its start, the request and options it keeps, and how it ended."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from billing.close.fetch import describe_query
from billing.close.steps import Card, CloseOptions, describe_cards, totals_by_currency, who_started
from billing.config import Settings
from billing.db.repository import RunOutcome, describe_running_run, finish_run, start_run
from billing.db.tables import BillingRun, Invoice
from billing.domain import InvoiceSummary, RatingReport
from billing.errors import PeriodBusy
from billing.periods import BillingPeriod
from billing.states import InvoiceStatus, RunStage, RunStatus
from billing.usage.client import UsageQuery

R = TypeVar("R")
Clock = Callable[[], datetime]


def close_request(settings: Settings, query: UsageQuery, options: CloseOptions | None) -> str:
    """A close's upstream request as JSON for its run row (never the API key); a close on
    workers keeps its options there too, for the steps that come after its start."""
    described = describe_query(settings.mka1_base_url, query)
    if options is None:
        return described
    params = json.loads(described)
    params["close_options"] = {
        "draft": options.draft,
        "reissue": options.reissue,
        "review": options.review,
    }
    return json.dumps(params, sort_keys=True)


def requested_close(run: BillingRun) -> tuple[CloseOptions, tuple[str, ...]]:
    """The options and the orgs (none: all of them) a close recorded in its request."""
    params = json.loads(run.request_params or "{}")
    chosen = params.get("close_options", {})
    options = CloseOptions(
        draft=bool(chosen.get("draft")),
        reissue=bool(chosen.get("reissue")),
        review=bool(chosen.get("review")),
    )
    return options, tuple(params.get("org_ids") or ())


def start_recorded_run(
    session: Session,
    period: BillingPeriod,
    *,
    trigger: str,
    upstream: str,
    now: datetime,
    operation: str,
    request_params: str | None = None,
    rerated_from_run_id: int | None = None,
    mode: str = "local",
    stage: RunStage | None = None,
    started_by: str | None = None,
) -> int:
    """Record that a run of the period has begun (committed at once, so a failure is still on
    record), or raise PeriodBusy when another run of it is under way; `started_by` is who
    started it (None: the user and host running this)."""
    try:
        return start_run(
            session,
            period,
            trigger,
            upstream,
            now,
            request_params=request_params,
            rerated_from_run_id=rerated_from_run_id,
            operation=operation,
            started_by=started_by or who_started(),
            mode=mode,
            stage=stage,
        )
    except IntegrityError:
        session.rollback()
        raise PeriodBusy(
            f"another run of {period} is under way"
            f"{describe_running_run(session, str(period))}; it will finish by "
            "itself (billing runs show RUN)"
        ) from None


@dataclass(frozen=True)
class DraftingRun:
    """The close whose rating the drafts of a period hold."""

    run_id: int
    report: RatingReport
    pages: int


def drafting_run(session: Session, period: BillingPeriod) -> DraftingRun | None:
    run = session.execute(
        select(BillingRun)
        .join(Invoice, col(Invoice.run_id) == col(BillingRun.id))
        .where(col(Invoice.period) == str(period), col(Invoice.status) == InvoiceStatus.DRAFT)
        .order_by(col(BillingRun.id).desc())
        .limit(1)
    ).scalar_one_or_none()
    if run is None or run.id is None:
        return None
    report = RatingReport(
        usage_results=run.usage_results, results_without_memory=run.results_without_memory
    )
    return DraftingRun(run.id, report, run.pages_fetched)


def record_rating(
    outcome: RunOutcome, org_outcomes: Iterable[dict[str, str]], cards: Iterable[Card]
) -> None:
    """What rating did to each org, and the rate cards it priced with."""
    outcome.org_outcomes = list(org_outcomes)
    outcome.rate_cards = describe_cards(cards)


def record_invoices(outcome: RunOutcome, invoices: Sequence[InvoiceSummary]) -> None:
    """The period's live invoices after the run: how many, and their totals per currency."""
    outcome.invoice_count = len(invoices)
    outcome.totals = totals_by_currency(invoices)


def finish(engine: Engine, run_id: int, outcome: RunOutcome, now: Clock) -> None:
    """Write how the run ended (`outcome.status`) with all it recorded."""
    with Session(engine) as session:
        finish_run(session, run_id, outcome, now())


def run_recorded(engine: Engine, run_id: int, work: Callable[[RunOutcome], R], now: Clock) -> R:
    """Do a run's work and record how it ended, failed or succeeded."""
    outcome = RunOutcome()
    try:
        result = work(outcome)
    except Exception as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        outcome.status, outcome.error = RunStatus.FAILED, message or type(error).__name__
        finish(engine, run_id, outcome, now)
        raise
    outcome.status = RunStatus.SUCCEEDED
    finish(engine, run_id, outcome, now)
    return result
