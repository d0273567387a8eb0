"""The in-process driver of the close: the period's lock held throughout, one transaction for
all the rating, a process pool for the PDFs; also the re-rate, the finalize and the quote."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from billing.close.fetch import close_query, fetch_checked, http_client, usage_client
from billing.close.preflight import (
    Operation,
    check_api_key,
    check_drafts_cover_month,
    check_snapshot_covers_month,
    is_month_to_date,
    preflight,
)
from billing.close.pricing import Pricing, load_pricing, warn_of_ignored_tax_rules
from billing.close.publish import CloseResult, Progress, load_cost_centre_map, publish_statements
from billing.close.runs import (
    DraftingRun,
    drafting_run,
    record_invoices,
    record_rating,
    run_recorded,
    start_recorded_run,
)
from billing.close.steps import (
    Card,
    CloseOptions,
    card_of,
    finalize,
    in_batches,
    orgs_to_revisit,
    rate,
    store_batch,
)
from billing.close.window import check_review_setting, review_decision, start_close
from billing.config import Settings
from billing.db.engine import ledger
from billing.db.ledger import OrgOutcome
from billing.db.locks import hold_period, write_transaction
from billing.db.repository import RunOutcome
from billing.db.review import HELD, held_outcomes
from billing.db.snapshots import iter_snapshot_orgs, latest_snapshot_run
from billing.domain import RatedInvoice, RatingReport
from billing.errors import BillingError, InvoiceStateError
from billing.periods import BillingPeriod
from billing.rating import UsageAggregate, rate_org
from billing.usage.client import UsageClient, UsageQuery
from billing.wording import plural, span

log = logging.getLogger(__name__)

DEFAULT_OPTIONS = CloseOptions()

Clock = Callable[[], datetime]
Found = TypeVar("Found")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class LocalRun:
    """A run this process drives while it holds the period: where its steps write and report."""

    settings: Settings
    engine: Engine
    run_id: int
    outcome: RunOutcome
    say: Progress
    now: Clock

    def rate_store_publish(
        self,
        pricing: Pricing,
        snapshot_run_id: int,
        org_ids: Sequence[str],
        options: CloseOptions,
    ) -> CloseResult:
        """Rate the snapshot org by org and store the drafts batch by batch, all in one
        transaction (a failure stores nothing); then finalize and publish. Only one batch of
        rated invoices is held at a time."""
        self.outcome.report = report = RatingReport()
        outcomes: list[OrgOutcome] = []
        cards: set[Card] = set()
        seen: set[str] = set()
        with write_transaction(self.engine) as session, Session(self.engine) as reading:
            stamp = self.now()

            def store(rated: Sequence[RatedInvoice], scope: set[str]) -> None:
                outcomes.extend(
                    store_batch(
                        session,
                        self.settings,
                        pricing,
                        self.run_id,
                        rated,
                        scope,
                        reissue=options.reissue,
                        stamp=stamp,
                    )
                )

            rated = rate(pricing, iter_snapshot_orgs(reading, snapshot_run_id), report)
            for batch in in_batches(rated, self.settings.rate_batch_orgs):
                scope = {invoice.org.org_id for invoice in batch}
                store(batch, scope)
                seen |= scope
                cards |= {card_of(invoice) for invoice in batch}
            if rest := orgs_to_revisit(session, pricing.period, org_ids) - seen:
                store([], rest)
        self.say(
            f"rated {plural(len(seen), 'org')} from {plural(report.usage_results, 'usage result')}"
        )
        record_rating(self.outcome, (dataclasses.asdict(item) for item in outcomes), cards)
        drafted = sum(1 for item in outcomes if item.action in ("drafted", "reissued"))
        # One line per event: each org's outcome is listed once, in the result; here the counts.
        others = Counter(item.action for item in outcomes if item.action != "drafted")
        besides = "".join(f"; {count} {action}" for action, count in sorted(others.items()))
        self.say(f"stored {plural(drafted, 'draft invoice')} of {pricing.period}{besides}")
        if not options.draft:
            self.finalize(pricing.period, set(org_ids) or None)
        return self.publish(pricing.period, self.run_id)

    def finalize(self, period: BillingPeriod, scope: set[str] | None) -> int:
        with write_transaction(self.engine) as session:
            finalized = finalize(session, self.settings, period, scope, self.now())
        self.outcome.finalized_count = finalized.count
        self.outcome.org_outcomes += held_outcomes(finalized.held)
        if finalized.count:
            self.say(
                f"finalized {plural(finalized.count, 'invoice')} of {period}: "
                f"{span(str(finalized.first), str(finalized.last))}"
            )
        return finalized.count

    def publish(
        self, period: BillingPeriod, facts_run_id: int, pages: int | None = None
    ) -> CloseResult:
        """Render, report and email from the stored invoices; `pages` and the facts come from
        the run that fetched when this one did not (a finalize)."""
        result = publish_statements(
            self.settings,
            self.engine,
            period,
            facts_run_id,
            self.outcome.report or RatingReport(),
            self.outcome.pages_fetched if pages is None else pages,
            self.say,
            outcome=self.outcome,
            org_outcomes=self.outcome.org_outcomes,
        )
        record_invoices(self.outcome, result.invoices)
        return result


def held_run(
    settings: Settings,
    period: BillingPeriod,
    wait_seconds: float,  # float-ok: a timeout
    say: Progress,
    now: Clock,
    start: Callable[[Session], tuple[int, Found]],
    work: Callable[[LocalRun, Found], CloseResult],
) -> CloseResult:
    """Open the ledger, hold the period, record the run's start (`start` also hands on what it
    found), do its work and record how it ended: a close, a re-rate or a finalize."""
    with ledger(settings) as engine, hold_period(engine, str(period), wait_seconds, say, now):
        with Session(engine) as session:
            run_id, found = start(session)

        def recorded(outcome: RunOutcome) -> CloseResult:
            return work(LocalRun(settings, engine, run_id, outcome, say, now), found)

        return run_recorded(engine, run_id, recorded, now)


def fetch_usage(
    client: UsageClient, query: UsageQuery, progress: Progress
) -> tuple[UsageAggregate, int]:
    """Stream every usage page of a query into exact per-org totals."""
    aggregate = UsageAggregate()
    pages = 0
    for page in client.iter_pages(query):
        aggregate.add_all(page.records)
        pages = page.number
        progress(f"fetched usage page {page.number} ({len(page.records)} results)")
    return aggregate, pages


def quote_org(
    settings: Settings,
    period: BillingPeriod,
    org_id: str,
    *,
    http: httpx.Client | None = None,
) -> tuple[RatedInvoice | None, RatingReport]:
    """Price one org's usage for a period without storing anything (the dry run before a close)."""
    check_api_key(settings)
    pricing = load_pricing(settings, period)
    with _http_session(settings, http) as session_http:
        client = usage_client(settings, session_http)
        aggregate, _pages = fetch_usage(client, pricing.usage_query((org_id,)), log.debug)
    usage = aggregate.by_org.get(org_id)
    if usage is None:
        return None, aggregate.report
    account = pricing.account_for(org_id)
    return pricing.with_tax(rate_org(account, pricing.card_for(account), usage)), aggregate.report


def close_period(
    settings: Settings,
    period: BillingPeriod,
    *,
    trigger: str = "cli",
    http: httpx.Client | None = None,
    progress: Progress | None = None,
    now: Clock = _utc_now,
    org_ids: Sequence[str] = (),
    options: CloseOptions = DEFAULT_OPTIONS,
) -> CloseResult:
    """Close a month: fetch (with snapshot and completeness check), rate, store drafts,
    finalize them (unless `options.draft`), render, email.

    Finalized invoices are never changed: a difference becomes a correction (or, with
    `options.reissue`, a void and a replacement). With `org_ids` only those orgs are fetched
    and stored (a partial close). One close of a period runs at a time.
    """
    say = progress or log.info
    pricing = load_pricing(settings, period)
    load_cost_centre_map(settings)  # a bad map fails before anything is fetched
    check_review_setting(settings, options)
    started = now()
    preflight(
        settings,
        period,
        Operation.CLOSE,
        now=started,
        draft=options.draft,
        pricing=pricing,
        org_ids=org_ids,
    )
    if is_month_to_date(period, started):
        say(
            f"{period} has not ended: these drafts are month-to-date, "
            f"up to {started:%Y-%m-%d %H:%M} UTC"
        )
    query = close_query(settings, pricing, org_ids)

    def start(session: Session) -> tuple[int, CloseOptions]:
        run_id, review = start_close(
            session, settings, period, query, options, trigger=trigger, now=now(), on_workers=False
        )
        if review.note:
            say(review.note)
        return run_id, review.options

    def work(run: LocalRun, chosen: CloseOptions) -> CloseResult:
        warn_of_ignored_tax_rules(pricing)  # the run has started: a refusal stayed one line
        with _http_session(settings, http) as session_http:
            fetch_checked(settings, session_http, query, run.engine, run.run_id, say, run.outcome)
            return run.rate_store_publish(pricing, run.run_id, org_ids, chosen)

    return held_run(settings, period, options.wait_seconds, say, now, start, work)


@dataclass(frozen=True)
class SnapshotSource:
    """The close whose usage snapshot a re-rate prices again."""

    run_id: int
    checksum: str | None
    pages: int
    options: CloseOptions = DEFAULT_OPTIONS  # as the review window leaves them


def rerate_period(
    settings: Settings,
    period: BillingPeriod,
    *,
    trigger: str = "cli",
    progress: Progress | None = None,
    now: Clock = _utc_now,
    options: CloseOptions = DEFAULT_OPTIONS,
) -> CloseResult:
    """Re-rate a period from the usage snapshot of its last close, without calling the upstream.

    Like a close, it replaces drafts and turns differences to finalized invoices into
    corrections (or reissues)."""
    say = progress or log.info
    pricing = load_pricing(settings, period)
    load_cost_centre_map(settings)
    preflight(settings, period, Operation.RERATE, now=now(), draft=options.draft, pricing=pricing)

    def start(session: Session) -> tuple[int, SnapshotSource]:
        source = latest_snapshot_run(session, str(period))
        if source is None or source.id is None:
            raise BillingError(
                f"no usage snapshot of {period} to re-rate: "
                f"run billing close --period {period} first"
            )
        check_snapshot_covers_month(source, period, draft=options.draft)
        partial = json.loads(source.request_params or "{}").get("org_ids")
        if partial:
            raise BillingError(
                f"the last close of {period} (run {source.id}) was a partial close of "
                f"{partial}; run a full close (billing close --period {period}) "
                "before re-rating"
            )
        moment = now()
        review = review_decision(session, settings, period, options, moment)
        found = SnapshotSource(
            source.id, source.usage_checksum, source.pages_fetched, review.options
        )
        run_id = start_recorded_run(
            session,
            period,
            trigger=f"rerate:{trigger}",
            upstream=f"snapshot of run {found.run_id}",
            now=moment,
            operation="rerate",
            request_params=source.request_params,
            rerated_from_run_id=found.run_id,
        )
        review.record(session, run_id)
        if review.note:
            say(review.note)
        return run_id, found

    def work(run: LocalRun, source: SnapshotSource) -> CloseResult:
        warn_of_ignored_tax_rules(pricing)
        say(f"re-rating the usage read from the snapshot of run {source.run_id}")
        run.outcome.pages_fetched = source.pages
        run.outcome.usage_checksum = source.checksum
        return run.rate_store_publish(pricing, source.run_id, (), source.options)

    return held_run(settings, period, options.wait_seconds, say, now, start, work)


def finalize_period(
    settings: Settings,
    period: BillingPeriod,
    *,
    trigger: str = "cli",
    progress: Progress | None = None,
    now: Clock = _utc_now,
    wait_seconds: float = 0.0,  # float-ok: a timeout
    precondition: Callable[[Session], None] | None = None,
    actor: str | None = None,
) -> CloseResult:
    """Finalize the drafts of a period (numbers them, freezes them), then render and email;
    `precondition`, checked with the period held before the run is recorded, may refuse;
    `actor` is who the run records as its starter (None: the user and host running this)."""
    say = progress or log.info
    load_cost_centre_map(settings)
    preflight(settings, period, Operation.FINALIZE, now=now())

    def start(session: Session) -> tuple[int, DraftingRun | None]:
        if precondition is not None:
            precondition(session)
        check_drafts_cover_month(session, period)
        drafted_by = drafting_run(session, period)
        run_id = start_recorded_run(
            session,
            period,
            trigger=trigger,
            upstream="(no fetch: finalizes stored drafts)",
            now=now(),
            operation="finalize",
            started_by=actor,
        )
        return run_id, drafted_by

    def work(run: LocalRun, drafted_by: DraftingRun | None) -> CloseResult:
        if not run.finalize(period, None):
            if held := [o["org_id"] for o in run.outcome.org_outcomes if o["action"] == HELD]:
                raise InvoiceStateError(
                    f"every draft of {period} is on hold ({', '.join(held)}): release them "
                    "with billing invoices release INVOICE, then finalize"
                )
            raise InvoiceStateError(
                f"no draft invoices of {period} to finalize: "
                f"run billing close --period {period} --draft first"
            )
        run.outcome.report = drafted_by.report if drafted_by else RatingReport()
        if drafted_by is None:
            return run.publish(period, run.run_id)
        published = run.publish(period, drafted_by.run_id, drafted_by.pages)
        # the report's facts are the drafting run's; the result names this finalize run
        return dataclasses.replace(published, run_id=run.run_id)

    return held_run(settings, period, wait_seconds, say, now, start, work)


@contextmanager
def _http_session(settings: Settings, given: httpx.Client | None) -> Iterator[httpx.Client]:
    """The given HTTP client, or a fresh one closed afterwards."""
    if given is not None:
        yield given
        return
    fresh = http_client(settings)
    try:
        yield fresh
    finally:
        fresh.close()
