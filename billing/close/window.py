"""The review window as a close sees it: a close that opens one, or finds one open, only
replaces drafts (no numbers, no email) and records the window's deadline on its run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from billing.close.runs import close_request, start_recorded_run
from billing.close.steps import CloseOptions
from billing.config import Settings
from billing.db.review import open_window, record_review_deadline
from billing.errors import ConfigError
from billing.periods import BillingPeriod
from billing.states import RunStage
from billing.usage.client import UsageQuery


@dataclass(frozen=True)
class ReviewDecision:
    """What a close does about the review window: its options, the deadline it records on its
    run (None: no window) and the progress line that says so ("" when there is no window)."""

    options: CloseOptions
    deadline: datetime | None = None
    note: str = ""

    def record(self, session: Session, run_id: int) -> None:
        """Write the deadline on the close's run (nothing without a window)."""
        if self.deadline is not None:
            record_review_deadline(session, run_id, self.deadline)


def check_review_setting(settings: Settings, options: CloseOptions) -> None:
    """A close asked for a review window needs BILLING_REVIEW_DAYS above 0."""
    if options.review and settings.review_days == 0:
        raise ConfigError(
            "--review needs a review window: set BILLING_REVIEW_DAYS to the days drafts stay "
            "open for review (it is 0), or close without --review"
        )


def review_decision(
    session: Session,
    settings: Settings,
    period: BillingPeriod,
    options: CloseOptions,
    now: datetime,
) -> ReviewDecision:
    """Decided with the period held: while its window is open any close is a draft close that
    keeps the window's deadline; a close with `options.review` (BILLING_REVIEW_DAYS above 0)
    opens a window; otherwise the options stand."""
    open_until = open_window(session, period, now)
    if open_until is not None:
        return ReviewDecision(
            dataclasses.replace(options, draft=True, review=True),
            open_until,
            f"the review window of {period} is open until {open_until:%Y-%m-%d %H:%M} UTC: "
            "this close replaces its drafts (late usage taken in, no corrections) and "
            "finalizes nothing; the window's end does",
        )
    if options.review and settings.review_days > 0:
        deadline = now + timedelta(days=settings.review_days)
        return ReviewDecision(
            dataclasses.replace(options, draft=True),
            deadline,
            f"review window of {period} open until {deadline:%Y-%m-%d %H:%M} UTC: drafts only "
            "(no numbers, no email); then beat finalizes every draft not on hold",
        )
    return ReviewDecision(dataclasses.replace(options, review=False))


def start_close(
    session: Session,
    settings: Settings,
    period: BillingPeriod,
    query: UsageQuery,
    options: CloseOptions,
    *,
    trigger: str,
    now: datetime,
    on_workers: bool,
) -> tuple[int, ReviewDecision]:
    """Record the start of a close fetching `query`, with the period held, as the review window
    decides (`review_decision`: a draft close while one is open, its deadline written on the
    run); a close on workers starts at its fetching stage. Returns the run's id and the
    decision: the options the close goes on with and the progress line that says so. Both
    drivers, inline and on workers, start a close here."""
    review = review_decision(session, settings, period, options, now)
    chosen = review.options
    run_id = start_recorded_run(
        session,
        period,
        trigger=trigger,
        upstream=settings.mka1_base_url,
        now=now,
        operation="review" if chosen.review else "draft" if chosen.draft else "close",
        request_params=close_request(settings, query, chosen if on_workers else None),
        mode="distributed" if on_workers else "local",
        stage=RunStage.FETCHING if on_workers else None,
    )
    review.record(session, run_id)
    return run_id, review
