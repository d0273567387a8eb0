"""The ledger stages every run shares: rate and store drafts, finalize, publish, record."""

from __future__ import annotations

import dataclasses
import getpass
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Protocol, TypeVar

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from billing.close.pricing import Pricing
from billing.close.publish import CloseResult, Progress, publish_statements
from billing.config import Settings
from billing.db.ledger import OrgOutcome, finalize_drafts, pending_correction_orgs, store_period
from billing.db.locks import write_transaction
from billing.db.repository import RunOutcome, finish_run
from billing.db.snapshots import iter_snapshot_orgs
from billing.db.tables import BillingRun, Invoice
from billing.domain import RatedInvoice, RatingReport
from billing.periods import BillingPeriod
from billing.rating import rate_orgs

T = TypeVar("T")
Clock = Callable[[], datetime]


def who_started() -> str:
    """The user and host behind a run, for the audit trail."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class CloseOptions:
    """How a close treats the ledger: stop at drafts, reissue instead of correcting, wait."""

    draft: bool = False
    reissue: bool = False
    wait_seconds: float = 0.0  # float-ok: a timeout


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
        .where(col(Invoice.period) == str(period), col(Invoice.status) == "draft")
        .order_by(col(BillingRun.id).desc())
        .limit(1)
    ).scalar_one_or_none()
    if run is None or run.id is None:
        return None
    report = RatingReport(
        usage_results=run.usage_results, results_without_memory=run.results_without_memory
    )
    return DraftingRun(run.id, report, run.pages_fetched)


@dataclass
class Stage:
    """The ledger steps a run shares: rate and store drafts, finalize, publish."""

    settings: Settings
    engine: Engine
    pricing: Pricing | None
    run_id: int
    outcome: RunOutcome
    say: Progress
    now: Clock

    def rate_store_publish(
        self, snapshot_run_id: int, org_ids: Sequence[str], options: CloseOptions
    ) -> CloseResult:
        """Rate the snapshot org by org and store the drafts batch by batch, all in one
        transaction (a failure stores nothing); then finalize and publish. Only one batch of
        rated invoices is held at a time."""
        assert self.pricing is not None
        pricing, outcome = self.pricing, self.outcome
        outcome.report = report = RatingReport()
        outcomes: list[OrgOutcome] = []
        cards: set[tuple[str, str, str]] = set()
        seen: set[str] = set()
        with write_transaction(self.engine) as session, Session(self.engine) as reading:
            stamp = self.now()

            def store(rated: Sequence[RatedInvoice], scope: set[str]) -> None:
                outcomes.extend(
                    store_period(
                        session,
                        run_id=self.run_id,
                        period=pricing.period,
                        rated=rated,
                        now=stamp,
                        due_at=self._due(stamp),
                        empty_invoice=pricing.empty_invoice,
                        org_scope=scope,
                        reissue=options.reissue,
                    )
                )

            rated = rate_orgs(
                iter_snapshot_orgs(reading, snapshot_run_id),
                pricing.account_for,
                pricing.card_for,
                report,
            )
            for batch in in_batches(rated, self.settings.rate_batch_orgs):
                scope = {invoice.org.org_id for invoice in batch}
                store(batch, scope)
                seen |= scope
                cards |= {card_of(invoice) for invoice in batch}
            if rest := orgs_to_revisit(session, pricing.period, org_ids) - seen:
                store([], rest)
        self.say(f"rated {len(seen)} orgs from {report.usage_results} usage results")
        outcome.org_outcomes = [dataclasses.asdict(item) for item in outcomes]
        outcome.rate_cards = describe_cards(cards)
        drafted = sum(1 for item in outcomes if item.action in ("drafted", "reissued"))
        self.say(f"stored {drafted} draft invoices of {pricing.period}")
        for item in outcomes:
            if item.action != "drafted":
                self.say(f"{item.org_id}: {item.action} {item.detail}".rstrip())
        if not options.draft:
            self.finalize(pricing.period, set(org_ids) or None)
        return self.publish(pricing.period, self.run_id)

    def finalize(self, period: BillingPeriod, scope: set[str] | None) -> int:
        with write_transaction(self.engine) as session:
            stamp = self.now()
            finalized = finalize_drafts(session, period, stamp, self._due(stamp), scope)
        self.outcome.finalized_count = finalized.count
        if finalized.count:
            self.say(
                f"finalized {finalized.count} invoices of {period}: "
                f"{finalized.first} to {finalized.last}"
            )
        return finalized.count

    def publish(
        self, period: BillingPeriod, facts_run_id: int, pages: int | None = None
    ) -> CloseResult:
        """Render, report and email from the stored invoices; `pages` and the facts come from
        the run that fetched when this one did not (a finalize)."""
        result = publish_statements(
            self.settings,
            period,
            facts_run_id,
            self.outcome.report or RatingReport(),
            self.outcome.pages_fetched if pages is None else pages,
            self.say,
            outcome=self.outcome,
            org_outcomes=self.outcome.org_outcomes,
        )
        self.outcome.invoice_count = len(result.invoices)
        self.outcome.totals = totals_by_currency(result.invoices)
        return result

    def _due(self, issued_at: datetime) -> datetime:
        return issued_at + timedelta(days=self.settings.payment_terms_days)


def card_of(invoice: RatedInvoice) -> tuple[str, str, str]:
    """The rate card an invoice was priced with: id, version and content hash."""
    card = invoice.rate_card
    return (card.id, card.version, card.content_hash)


def cards_used(rated: Sequence[RatedInvoice]) -> list[dict[str, str]]:
    return describe_cards({card_of(invoice) for invoice in rated})


def describe_cards(cards: Iterable[tuple[str, str, str]]) -> list[dict[str, str]]:
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
            col(Invoice.period) == str(period), col(Invoice.status) != "void"
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


def run_recorded(
    engine: Engine, run_id: int, work: Callable[[RunOutcome], CloseResult], now: Clock
) -> CloseResult:
    """Do a run's work and record how it ended, failed or succeeded."""
    outcome = RunOutcome()
    try:
        result = work(outcome)
    except Exception as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        outcome.status, outcome.error = "failed", message or type(error).__name__
        with Session(engine) as session:
            finish_run(session, run_id, outcome, now())
        raise
    outcome.status = "succeeded"
    with Session(engine) as session:
        finish_run(session, run_id, outcome, now())
    return result
