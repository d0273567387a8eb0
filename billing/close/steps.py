"""The ledger steps both drivers call: rate and store a batch of orgs, finalize, and sum up."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Protocol, TypeVar

from sqlalchemy import select
from sqlmodel import Session, col

from billing.close.pricing import Pricing
from billing.config import Settings
from billing.db.ledger import (
    NumbersGiven,
    OrgOutcome,
    finalize_drafts,
    pending_correction_orgs,
    store_period,
)
from billing.db.tables import Invoice
from billing.domain import RatedInvoice, RatingReport, UsageRecord
from billing.periods import BillingPeriod
from billing.rating import rate_orgs
from billing.states import InvoiceStatus

T = TypeVar("T")
Clock = Callable[[], datetime]
Card = tuple[str, str, str]  # a rate card's id, version and content hash


def who_started() -> str:
    """The user and host behind a run, for the audit trail."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class CloseOptions:
    """How a close treats the ledger: stop at drafts, reissue instead of correcting, wait;
    `review` opens a review window (BILLING_REVIEW_DAYS): drafts that beat finalizes later."""

    draft: bool = False
    reissue: bool = False
    review: bool = False
    wait_seconds: float = 0.0  # float-ok: a timeout


def due_date(settings: Settings, issued_at: datetime) -> datetime:
    """When an invoice issued at `issued_at` falls due (BILLING_PAYMENT_TERMS_DAYS later)."""
    return issued_at + timedelta(days=settings.payment_terms_days)


def rate(
    pricing: Pricing, orgs: Iterable[tuple[str, Sequence[UsageRecord]]], report: RatingReport
) -> Iterator[RatedInvoice]:
    """Price each org's usage with its account's rate card, org by org as it streams in, each
    with its tax rule for the period (none without BILLING_TAX_RATES)."""
    return map(pricing.with_tax, rate_orgs(orgs, pricing.account_for, pricing.card_for, report))


def store_batch(
    session: Session,
    settings: Settings,
    pricing: Pricing,
    run_id: int,
    rated: Sequence[RatedInvoice],
    scope: set[str],
    *,
    reissue: bool,
    stamp: datetime,
) -> list[OrgOutcome]:
    """Store one batch of rated orgs as the run's drafts (a difference from a finalized invoice
    becomes a correction, or with `reissue` a replacement); `scope` is the orgs it covers."""
    return store_period(
        session,
        run_id=run_id,
        period=pricing.period,
        rated=rated,
        now=stamp,
        due_at=due_date(settings, stamp),
        empty_invoice=pricing.empty_invoice,
        org_scope=scope,
        reissue=reissue,
    )


def finalize(
    session: Session,
    settings: Settings,
    period: BillingPeriod,
    scope: set[str] | None,
    stamp: datetime,
) -> NumbersGiven:
    """Number and freeze the period's drafts (only `scope`'s orgs when given)."""
    return finalize_drafts(session, period, stamp, due_date(settings, stamp), scope)


def card_of(invoice: RatedInvoice) -> Card:
    """The rate card an invoice was priced with: id, version and content hash."""
    card = invoice.rate_card
    return (card.id, card.version, card.content_hash)


def cards_used(rated: Sequence[RatedInvoice]) -> list[dict[str, str]]:
    return describe_cards({card_of(invoice) for invoice in rated})


def describe_cards(cards: Iterable[Card]) -> list[dict[str, str]]:
    """Rate cards as the run records them, in id and version order."""
    return [
        {"id": card_id, "version": version, "content_hash": digest}
        for card_id, version, digest in sorted(cards)
    ]


def in_batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter), drawn lazily."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def orgs_to_revisit(session: Session, period: BillingPeriod, org_ids: Sequence[str]) -> set[str]:
    """The orgs a close must look at even without usage now: those with a live invoice of the
    period or corrections waiting for it (a partial close: only its own orgs)."""
    if org_ids:
        return set(org_ids)
    invoiced = session.execute(
        select(col(Invoice.org_id)).where(
            col(Invoice.period) == str(period), col(Invoice.status) != InvoiceStatus.VOID
        )
    ).scalars()
    return set(invoiced) | pending_correction_orgs(session, period, None)


class Priced(Protocol):
    """Anything with a currency and a total: a statement, an invoice summary."""

    @property
    def currency(self) -> str: ...

    @property
    def total(self) -> Decimal: ...


def totals_by_currency(invoices: Iterable[Priced]) -> dict[str, str]:
    totals: dict[str, Decimal] = {}
    for invoice in invoices:
        totals[invoice.currency] = totals.get(invoice.currency, Decimal(0)) + invoice.total
    return {currency: str(total) for currency, total in sorted(totals.items())}
