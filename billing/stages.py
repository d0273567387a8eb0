"""The ledger stages every run shares: rate and store drafts, finalize, publish, record."""

from __future__ import annotations

import dataclasses
import getpass
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from billing.config import Settings
from billing.db.ledger import finalize_drafts, store_period
from billing.db.locks import write_transaction
from billing.db.repository import RunOutcome, finish_run, load_statements, store_daily_usage
from billing.db.tables import BillingRun, Invoice
from billing.domain import RatedInvoice, RatingReport, Statement
from billing.periods import BillingPeriod
from billing.pricing import Pricing
from billing.publishing import CloseResult, Progress, publish_statements
from billing.rating import UsageAggregate, rate_period

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
        self,
        aggregate: UsageAggregate,
        org_ids: Sequence[str],
        snapshot_run_id: int,
        options: CloseOptions,
    ) -> CloseResult:
        """Rate the totals, store drafts in one transaction, finalize, then publish."""
        assert self.pricing is not None
        pricing, outcome = self.pricing, self.outcome
        outcome.report = aggregate.report
        rated = rate_period(aggregate, pricing.account_for, pricing.card_for)
        self.say(f"rated {len(rated)} orgs from {aggregate.report.usage_results} usage results")
        scope = set(org_ids) or None
        with write_transaction(self.engine) as session:
            stamp = self.now()
            outcomes = store_period(
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
            store_daily_usage(session, self.run_id, snapshot_run_id)
        outcome.org_outcomes = [dataclasses.asdict(item) for item in outcomes]
        outcome.rate_cards = cards_used(rated)
        drafted = sum(1 for item in outcomes if item.action in ("drafted", "reissued"))
        self.say(f"stored {drafted} draft invoices of {pricing.period}")
        for item in outcomes:
            if item.action != "drafted":
                self.say(f"{item.org_id}: {item.action} {item.detail}".rstrip())
        if not options.draft:
            self.finalize(pricing.period, scope)
        return self.publish(pricing.period, self.run_id)

    def finalize(self, period: BillingPeriod, scope: set[str] | None) -> int:
        with write_transaction(self.engine) as session:
            stamp = self.now()
            finalized = finalize_drafts(session, period, stamp, self._due(stamp), scope)
        self.outcome.finalized_count = len(finalized)
        if finalized:
            self.say(
                f"finalized {len(finalized)} invoices of {period}: "
                f"{finalized[0]} to {finalized[-1]}"
            )
        return len(finalized)

    def publish(
        self, period: BillingPeriod, facts_run_id: int, pages: int | None = None
    ) -> CloseResult:
        """Render, report and email from the stored invoices; `pages` and the facts come from
        the run that fetched when this one did not (a finalize)."""
        with Session(self.engine) as session:
            statements = load_statements(session, period)
        self.outcome.invoice_count = len(statements)
        self.outcome.totals = totals_by_currency(statements)
        return publish_statements(
            self.settings,
            period,
            statements,
            facts_run_id,
            self.outcome.report or RatingReport(),
            self.outcome.pages_fetched if pages is None else pages,
            self.say,
            outcome=self.outcome,
            org_outcomes=self.outcome.org_outcomes,
        )

    def _due(self, issued_at: datetime) -> datetime:
        return issued_at + timedelta(days=self.settings.payment_terms_days)


def cards_used(rated: Sequence[RatedInvoice]) -> list[dict[str, str]]:
    cards = {(i.rate_card.id, i.rate_card.version, i.rate_card.content_hash): None for i in rated}
    return [
        {"id": card_id, "version": version, "content_hash": digest}
        for card_id, version, digest in sorted(cards)
    ]


def totals_by_currency(statements: Sequence[Statement]) -> dict[str, str]:
    totals: dict[str, Decimal] = {}
    for statement in statements:
        totals[statement.currency] = totals.get(statement.currency, Decimal(0)) + statement.total
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
