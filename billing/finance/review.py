"""Holds on drafts under review: a held draft is not finalized (by the review window's end,
`billing finalize` or a close) until it is released; kept by org and period, with who and when."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlmodel import Session, col

from billing.close.steps import who_started
from billing.config import Settings
from billing.db.engine import existing_ledger, ledger
from billing.db.locks import hold_period, write_transaction
from billing.db.repository import invoice_by_reference
from billing.db.review import latest_review_deadline, open_hold
from billing.db.tables import BillingRun, Invoice, ReviewHold
from billing.errors import InvoiceStateError, NotFound
from billing.periods import BillingPeriod
from billing.states import InvoiceStatus

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class HoldChange:
    """A hold put on a draft or released: the draft, the hold as it stands now, and when the
    review window of the draft's period ends (None: the draft is not under a window)."""

    invoice_id: int
    org_id: str
    period: str
    reason: str
    by: str
    at: datetime
    window_ends: datetime | None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def hold(
    settings: Settings,
    reference: str,
    reason: str,
    *,
    now: Clock = _utc_now,
    progress: Callable[[str], None] = lambda _text: None,
    wait_seconds: float = 0.0,  # float-ok: a timeout
    actor: str | None = None,
) -> HoldChange:
    """Hold a draft (by its id, as `billing invoices list` shows it) with a reason: it stays a
    draft, and every draft that replaces it for its org and period does, until released.
    `actor` is who is recorded as holding it (None: the user and host running this)."""
    if not reason.strip():
        raise InvoiceStateError("a hold needs a reason: pass --reason TEXT")

    def change(session: Session, draft: Invoice) -> HoldChange:
        if draft.status != InvoiceStatus.DRAFT:
            raise InvoiceStateError(_not_a_draft(draft))
        standing = open_hold(session, draft.org_id, draft.period)
        if standing is not None:
            raise InvoiceStateError(
                f"draft {draft.id} of {draft.org_id} for {draft.period} is already on hold "
                f"since {standing.held_at:%Y-%m-%d %H:%M} UTC by {standing.held_by} "
                f"({standing.reason}); billing invoices release {draft.id} first to hold it anew"
            )
        added = ReviewHold(
            org_id=draft.org_id,
            period=draft.period,
            reason=reason.strip(),
            held_by=actor or who_started(),
            held_at=now(),
        )
        session.add(added)
        session.flush()
        return _change(session, draft, added.reason, added.held_by, added.held_at)

    return _under_lock(settings, reference, change, now, progress, wait_seconds)


def release(
    settings: Settings,
    reference: str,
    reason: str | None = None,
    *,
    now: Clock = _utc_now,
    progress: Callable[[str], None] = lambda _text: None,
    wait_seconds: float = 0.0,  # float-ok: a timeout
    actor: str | None = None,
) -> HoldChange:
    """Release the hold on a draft (by its id): the next finalize of its period (the review
    window's end, `billing finalize` or a close) numbers it. The hold stays on record, with
    who released it, when and, when given, why (added to its reason)."""

    def change(session: Session, draft: Invoice) -> HoldChange:
        standing = open_hold(session, draft.org_id, draft.period)
        if standing is None:
            raise InvoiceStateError(
                f"{_name(draft)} of {draft.org_id} for {draft.period} is not on hold: "
                "nothing to release (billing invoices list shows the drafts)"
            )
        standing.released_by = actor or who_started()
        standing.released_at = now()
        if reason is not None and reason.strip():
            standing.reason = f"{standing.reason}; released: {reason.strip()}"
        session.flush()
        return _change(session, draft, standing.reason, standing.released_by, standing.released_at)

    return _under_lock(settings, reference, change, now, progress, wait_seconds)


def _under_lock(
    settings: Settings,
    reference: str,
    change: Callable[[Session, Invoice], HoldChange],
    now: Clock,
    progress: Callable[[str], None],
    wait_seconds: float,  # float-ok: a timeout
) -> HoldChange:
    """Find the invoice, hold its period (no finalize runs meanwhile) and make the change in
    one transaction, the invoice's row locked."""
    with ledger(settings) as engine:
        with Session(engine) as session:
            period = _find(session, reference).period
        with (
            hold_period(engine, period, wait_seconds, progress, now),
            write_transaction(engine) as session,
        ):
            return change(session, _find(session, reference, lock=True))


def _find(session: Session, reference: str, *, lock: bool = False) -> Invoice:
    """An invoice by a draft's id (or, to say what to do instead, by its number)."""
    found = invoice_by_reference(session, reference.strip(), lock=lock)
    if found is None:
        raise NotFound(
            f"no invoice {reference!r}: give a draft's id (billing invoices list shows it)"
        )
    return found


def _name(invoice: Invoice) -> str:
    return f"invoice {invoice.number}" if invoice.number else f"draft {invoice.id}"


def _not_a_draft(invoice: Invoice) -> str:
    where = f"{_name(invoice)} of {invoice.org_id} for {invoice.period} is {invoice.status}"
    if invoice.status == InvoiceStatus.VOID:
        return f"{where}: there is nothing to hold"
    return (
        f"{where}: only a draft can be held, and a finalized invoice never changes; "
        f"billing void {invoice.number} --reason TEXT withdraws it instead"
    )


def _change(session: Session, draft: Invoice, reason: str, by: str, at: datetime) -> HoldChange:
    assert draft.id is not None
    return HoldChange(
        invoice_id=draft.id,
        org_id=draft.org_id,
        period=draft.period,
        reason=reason,
        by=by,
        at=at,
        window_ends=_window_of(session, draft),
    )


def _window_of(session: Session, draft: Invoice) -> datetime | None:
    """When the review window that drafted this invoice ends (None: not drafted in one)."""
    drafted_in_window = session.execute(
        select(col(BillingRun.review_deadline)).where(col(BillingRun.id) == draft.run_id)
    ).scalar_one_or_none()
    if drafted_in_window is None:
        return None
    return latest_review_deadline(session, BillingPeriod.parse(draft.period))


def open_holds(settings: Settings) -> set[tuple[str, str]]:
    """(org, period) of every open hold, for `billing invoices list` to mark held drafts."""
    with existing_ledger(settings) as engine, Session(engine) as session:
        found = session.execute(
            select(col(ReviewHold.org_id), col(ReviewHold.period)).where(
                col(ReviewHold.released_at).is_(None)
            )
        )
        return {(str(org_id), str(period)) for org_id, period in found}
