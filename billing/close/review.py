"""The end of a review window, as beat runs it: every period whose window has ended is
finalized once, as `billing finalize` does; held drafts stay drafts, a busy period waits."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlmodel import Session, col

from billing.close.inline import finalize_period
from billing.close.publish import Progress
from billing.config import Settings
from billing.db.engine import ledger
from billing.db.review import HELD, due_review_periods
from billing.db.tables import BillingRun
from billing.errors import BillingError, PeriodBusy
from billing.periods import BillingPeriod
from billing.wording import plural

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# The trigger recorded on the finalize runs of a window's end.
TRIGGER = "review-window"


class WindowNotDue(BillingError):
    """The period stopped being due between the look and the lock (a new window opened, or
    another run finalized it): nothing is done."""


@dataclass(frozen=True)
class WindowEnd:
    """What the end of one period's review window did: `finalized`, `busy` (another run of
    the period holds it: the next beat tries again), `skipped` (no longer due) or `failed`."""

    period: str
    outcome: str
    detail: str = ""
    run_id: int | None = None
    finalized: int = 0
    held: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "period": self.period,
            "outcome": self.outcome,
            "detail": self.detail,
            "run_id": self.run_id,
            "finalized": self.finalized,
            "held": self.held,
        }


def _utc_now() -> datetime:
    return datetime.now(UTC)


def rendering_here(settings: Settings) -> Settings:
    """The settings, rendering PDFs in this process when it may not start processes of its
    own (a daemonic process, such as a Celery prefork worker's)."""
    if multiprocessing.current_process().daemon:
        return settings.model_copy(update={"render_processes": 1})
    return settings


def finalize_due_reviews(
    settings: Settings, *, now: Clock = _utc_now, progress: Progress | None = None
) -> list[WindowEnd]:
    """Finalize every period whose review window has ended and that still has drafts not on
    hold: numbers gapless in org order, statements rendered, emails through the outbox, as
    `billing finalize --period P` (trigger `review-window`). Nothing is finalized twice: a
    finalized period has no such drafts left, and the period is looked at again once held."""
    say = progress or log.info
    with ledger(settings) as engine, Session(engine) as session:
        due = due_review_periods(session, now())
    if not due:
        return []
    settings = rendering_here(settings)
    return [_end_window(settings, period, now, say) for period in due]


def _end_window(settings: Settings, period: BillingPeriod, now: Clock, say: Progress) -> WindowEnd:
    def still_due(session: Session) -> None:
        if not due_review_periods(session, now(), period):
            raise WindowNotDue(f"the review window of {period} is no longer due")

    say(f"the review window of {period} has ended: finalizing its drafts not on hold")
    try:
        result = finalize_period(
            settings, period, trigger=TRIGGER, progress=say, now=now, precondition=still_due
        )
    except WindowNotDue as skipped:
        return WindowEnd(str(period), "skipped", str(skipped))
    except PeriodBusy as busy:
        say(f"{busy}; the review window of {period} is finalized at the next beat")
        return WindowEnd(str(period), "busy", str(busy))
    except BillingError as error:
        log.warning("the review window of %s could not be finalized: %s", period, error)
        return WindowEnd(str(period), "failed", str(error))
    held = [item["org_id"] for item in result.org_outcomes if item["action"] == HELD]
    with Session(result.engine) as session:  # the finalize's own run (the result names the
        run = session.execute(  # run whose rating the invoices hold)
            select(BillingRun)
            .where(col(BillingRun.period) == str(period), col(BillingRun.trigger) == TRIGGER)
            .order_by(col(BillingRun.id).desc())
            .limit(1)
        ).scalar_one()
        run_id, finalized = run.id, run.finalized_count
    result.engine.dispose()
    detail = f"{plural(finalized, 'invoice')} finalized" + (f", {len(held)} held" if held else "")
    return WindowEnd(str(period), "finalized", detail, run_id, finalized, held)
