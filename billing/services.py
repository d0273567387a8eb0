"""Use cases: close a period (fetch, rate, store, render, email) and the steps it is made of."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from billing.catalog import (
    OrgDirectory,
    RateCatalog,
    check_directory_against_catalog,
    load_org_directory,
    load_rate_cards,
)
from billing.catalog.loader import card_for_account
from billing.config import Settings
from billing.db.engine import make_engine, upgrade_schema
from billing.db.repository import (
    RunOutcome,
    finish_run,
    load_statements,
    replace_period_invoices,
    start_run,
)
from billing.db.snapshots import iter_snapshot, latest_snapshot_run
from billing.domain import OrgAccount, RateCard, RatedInvoice, RatingReport
from billing.errors import BillingError
from billing.fetching import check_completeness, describe_query, fetch_and_snapshot
from billing.periods import BillingPeriod
from billing.publishing import CloseResult, Progress, load_cost_centre_map, publish_statements
from billing.rating import UsageAggregate, rate_org, rate_period
from billing.usage.client import UsageClient, UsageQuery

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Pricing:
    """The rate cards and org directory, validated together for one period."""

    catalog: RateCatalog
    directory: OrgDirectory
    period: BillingPeriod

    def account_for(self, org_id: str) -> OrgAccount:
        return self.directory.account_for(org_id)

    def card_for(self, account: OrgAccount) -> RateCard:
        return card_for_account(self.catalog, self.directory, account, self.period)

    def usage_query(
        self,
        org_ids: tuple[str, ...] = (),
        bucket_width: str = "1d",
        extra_group_by: tuple[str, ...] = (),
    ) -> UsageQuery:
        """The fetch this pricing needs: by session kind too when a card prices by kind."""
        if any(card.needs_session_kind for card in self.catalog.cards):
            extra_group_by = (*extra_group_by, "session_kind")
        query = UsageQuery.for_period(self.period, org_ids, extra_group_by)
        return dataclasses.replace(query, bucket_width=bucket_width)


def load_pricing(settings: Settings, period: BillingPeriod) -> Pricing:
    """Load and cross-check rate cards and the org directory before anything is fetched."""
    catalog = load_rate_cards(settings.rate_cards)
    directory = load_org_directory(settings.orgs)
    check_directory_against_catalog(directory, catalog, period)
    return Pricing(catalog, directory, period)


def open_database(settings: Settings) -> Engine:
    """The ledger's engine, migrated to the newest schema when auto-migrate is on."""
    engine = make_engine(settings.database_url)
    if settings.auto_migrate:
        upgrade_schema(engine)
    return engine


def usage_client(settings: Settings, http: httpx.Client) -> UsageClient:
    return UsageClient(
        http,
        settings.mka1_base_url,
        settings.mka1_api_key,
        on_behalf_of=settings.mka1_on_behalf_of,
        max_attempts=settings.mka1_max_attempts,
        page_deadline_seconds=settings.mka1_page_deadline_seconds,
    )


def http_client(settings: Settings) -> httpx.Client:
    timeout = httpx.Timeout(
        settings.mka1_timeout_seconds, connect=min(10.0, settings.mka1_timeout_seconds)
    )
    return httpx.Client(timeout=timeout, follow_redirects=False)


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
    pricing = load_pricing(settings, period)
    with _http_session(settings, http) as session_http:
        client = usage_client(settings, session_http)
        aggregate, _pages = fetch_usage(client, pricing.usage_query((org_id,)), log.debug)
    usage = aggregate.by_org.get(org_id)
    if usage is None:
        return None, aggregate.report
    account = pricing.account_for(org_id)
    return rate_org(account, pricing.card_for(account), usage), aggregate.report


def close_period(
    settings: Settings,
    period: BillingPeriod,
    *,
    trigger: str = "cli",
    http: httpx.Client | None = None,
    progress: Progress | None = None,
    now: Clock = _utc_now,
    org_ids: Sequence[str] = (),
) -> CloseResult:
    """Close a month: fetch (with snapshot and completeness check), rate, store, render, email.

    With `org_ids` only those orgs are fetched and their invoices replaced (a partial close).
    """
    say = progress or log.info
    pricing = load_pricing(settings, period)
    load_cost_centre_map(settings)  # a bad map fails before anything is fetched
    engine = open_database(settings)
    query = pricing.usage_query(
        tuple(org_ids), settings.mka1_bucket_width, settings.mka1_group_by_extra
    )
    with Session(engine) as session:
        run_id = start_run(
            session,
            period,
            trigger,
            settings.mka1_base_url,
            now(),
            request_params=describe_query(settings.mka1_base_url, query),
        )

    def work(outcome: RunOutcome) -> CloseResult:
        with _http_session(settings, http) as session_http:
            client = usage_client(settings, session_http)
            fetched = fetch_and_snapshot(client, query, engine, run_id, say)
            outcome.pages_fetched = fetched.pages
            outcome.usage_checksum = fetched.checksum
            outcome.duplicate_results = fetched.duplicate_results
            try:
                if settings.completeness_check:
                    check_completeness(client, query, fetched, say)
            finally:
                outcome.completeness = fetched.completeness
        return _rate_store_publish(
            settings, engine, pricing, fetched.aggregate, run_id, outcome, say, now, org_ids, run_id
        )

    return _run(engine, run_id, work, now)


def rerate_period(
    settings: Settings,
    period: BillingPeriod,
    *,
    trigger: str = "cli",
    progress: Progress | None = None,
    now: Clock = _utc_now,
) -> CloseResult:
    """Re-rate a period from the usage snapshot of its last close, without calling the upstream."""
    say = progress or log.info
    pricing = load_pricing(settings, period)
    engine = open_database(settings)
    with Session(engine) as session:
        source = latest_snapshot_run(session, str(period))
        if source is None or source.id is None:
            raise BillingError(
                f"no usage snapshot of {period} to re-rate: "
                f"run billing close --period {period} first"
            )
        partial = json.loads(source.request_params or "{}").get("org_ids")
        if partial:
            raise BillingError(
                f"the last close of {period} (run {source.id}) was a partial close of {partial}; "
                f"run a full close (billing close --period {period}) before re-rating"
            )
        source_id, checksum, pages = source.id, source.usage_checksum, source.pages_fetched
        run_id = start_run(
            session,
            period,
            f"rerate:{trigger}",
            f"snapshot of run {source_id}",
            now(),
            request_params=source.request_params,
            rerated_from_run_id=source_id,
        )

    def work(outcome: RunOutcome) -> CloseResult:
        aggregate = UsageAggregate()
        with Session(engine) as session:
            aggregate.add_all(iter_snapshot(session, source_id))
        say(
            f"read {aggregate.report.usage_results} usage results "
            f"from the snapshot of run {source_id}"
        )
        outcome.pages_fetched = pages
        outcome.usage_checksum = checksum
        return _rate_store_publish(
            settings, engine, pricing, aggregate, run_id, outcome, say, now, (), source_id
        )

    return _run(engine, run_id, work, now)


def _rate_store_publish(
    settings: Settings,
    engine: Engine,
    pricing: Pricing,
    aggregate: UsageAggregate,
    run_id: int,
    outcome: RunOutcome,
    say: Progress,
    now: Clock,
    org_ids: Sequence[str] = (),
    snapshot_run_id: int | None = None,
) -> CloseResult:
    """Rate the totals, store the invoices in one transaction, then write and send statements."""
    outcome.report = aggregate.report
    rated = rate_period(aggregate, pricing.account_for, pricing.card_for)
    say(f"rated {len(rated)} orgs from {aggregate.report.usage_results} usage results")
    with Session(engine) as session, session.begin():
        issued_at = now()
        replace_period_invoices(
            session,
            run_id,
            pricing.period,
            rated,
            issued_at,
            org_scope=set(org_ids) or None,
            due_at=issued_at + timedelta(days=settings.payment_terms_days),
            snapshot_run_id=snapshot_run_id,
        )
    with Session(engine) as session:
        statements = load_statements(session, pricing.period)
    outcome.invoice_count = len(statements)
    return publish_statements(
        settings,
        pricing.period,
        statements,
        run_id,
        aggregate.report,
        outcome.pages_fetched,
        say,
        outcome=outcome,
    )


def _run(
    engine: Engine, run_id: int, work: Callable[[RunOutcome], CloseResult], now: Clock
) -> CloseResult:
    """Do a run's work and record how it ended, failed or succeeded."""
    outcome = RunOutcome()
    try:
        result = work(outcome)
    except BillingError as error:
        outcome.status, outcome.error = "failed", str(error)
        with Session(engine) as session:
            finish_run(session, run_id, outcome, now())
        engine.dispose()
        raise
    outcome.status = "succeeded"
    with Session(engine) as session:
        finish_run(session, run_id, outcome, now())
    engine.dispose()
    return result


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
