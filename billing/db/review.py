"""The review window and holds in the ledger: is a period's window open, which periods are due
for finalizing, which drafts are held; the caller supplies the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, exists, func, select, update
from sqlmodel import Session, col

from billing.db.tables import BillingRun, Invoice, ReviewHold
from billing.periods import BillingPeriod
from billing.states import InvoiceStatus

# The action a held draft has in a run's org outcomes (`billing runs show`, the close summary).
HELD = "held"


def on_hold() -> ColumnElement[bool]:
    """True for an invoice whose org and period have an open hold (for WHERE clauses on
    Invoice): a hold is kept by org and period, so it outlives the draft it was put on."""
    return exists(
        select(col(ReviewHold.id)).where(
            col(ReviewHold.org_id) == col(Invoice.org_id),
            col(ReviewHold.period) == col(Invoice.period),
            col(ReviewHold.released_at).is_(None),
        )
    )


def held_drafts(session: Session, in_scope: ColumnElement[bool]) -> list[tuple[str, str]]:
    """(org id, reason) of the drafts among `in_scope` that are on hold, in org order."""
    found = session.execute(
        select(col(Invoice.org_id), col(ReviewHold.reason))
        .join(
            ReviewHold,
            (col(ReviewHold.org_id) == col(Invoice.org_id))
            & (col(ReviewHold.period) == col(Invoice.period))
            & col(ReviewHold.released_at).is_(None),
        )
        .where(in_scope, col(Invoice.status) == InvoiceStatus.DRAFT)
        .order_by(col(Invoice.org_id))
    )
    return [(str(org_id), str(reason)) for org_id, reason in found]


def held_outcomes(held: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """Held drafts as a run records its org outcomes."""
    return [{"org_id": org_id, "action": HELD, "detail": reason} for org_id, reason in held]


def open_hold(session: Session, org_id: str, period: str) -> ReviewHold | None:
    """The open hold on an org's draft of a period, if there is one."""
    hold: ReviewHold | None = session.execute(
        select(ReviewHold).where(
            col(ReviewHold.org_id) == org_id,
            col(ReviewHold.period) == period,
            col(ReviewHold.released_at).is_(None),
        )
    ).scalar_one_or_none()
    return hold


def latest_review_deadline(session: Session, period: BillingPeriod) -> datetime | None:
    """The latest review deadline recorded on a run of the period (None: it never had one)."""
    deadline: datetime | None = session.execute(
        select(func.max(col(BillingRun.review_deadline))).where(
            col(BillingRun.period) == str(period)
        )
    ).scalar_one_or_none()
    return deadline


def open_window(session: Session, period: BillingPeriod, now: datetime) -> datetime | None:
    """The deadline of the period's review window while it is open (its latest deadline is
    still ahead and the period has drafts), else None."""
    deadline = latest_review_deadline(session, period)
    if deadline is None or deadline <= now:
        return None
    drafts = session.execute(
        select(exists().where(col(Invoice.period) == str(period), _is_draft()))
    ).scalar_one()
    return deadline if drafts else None


def record_review_deadline(session: Session, run_id: int, deadline: datetime) -> None:
    """Write the review deadline a run opened (or found open) on its row, at once."""
    session.execute(
        update(BillingRun).where(col(BillingRun.id) == run_id).values(review_deadline=deadline)
    )
    session.commit()


def due_review_periods(
    session: Session, now: datetime, period: BillingPeriod | None = None
) -> list[BillingPeriod]:
    """The periods (or only `period`) whose review window has ended (their latest deadline is
    past) and that still have drafts rated inside a window and not on hold: beat finalizes
    them, oldest first."""
    latest = (
        select(
            col(BillingRun.period).label("period"),
            func.max(col(BillingRun.review_deadline)).label("deadline"),
        )
        .where(col(BillingRun.review_deadline).is_not(None))
        .group_by(col(BillingRun.period))
        .subquery()
    )
    query = (
        select(col(Invoice.period))
        .join(BillingRun, col(BillingRun.id) == col(Invoice.run_id))
        .join(latest, latest.c.period == col(Invoice.period))
        .where(
            _is_draft(),
            col(BillingRun.review_deadline).is_not(None),
            latest.c.deadline <= now,
            ~on_hold(),
        )
    )
    if period is not None:
        query = query.where(col(Invoice.period) == str(period))
    periods = session.execute(query.distinct()).scalars()
    return sorted(BillingPeriod.parse(period) for period in periods)


def _is_draft() -> ColumnElement[bool]:
    return col(Invoice.status) == InvoiceStatus.DRAFT
