"""Use cases: close a period (fetch, rate, store, render, email) and the steps it is made of."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from billing.close.fetch import (
    check_completeness,
    describe_query,
    fetch_and_snapshot,
    http_client,
    usage_client,
)
from billing.close.pricing import load_pricing
from billing.close.publish import CloseResult, Progress, load_cost_centre_map
from billing.close.steps import (
    CloseOptions,
    Stage,
    drafting_run,
    run_recorded,
    who_started,
)
from billing.config import Settings
from billing.db.engine import ledger_engine
from billing.db.ledger import InvoiceStateError
from billing.db.locks import hold_period
from billing.db.repository import (
    RunOutcome,
    start_run,
)
from billing.db.snapshots import latest_snapshot_run
from billing.domain import RatedInvoice, RatingReport
from billing.errors import BillingError
from billing.periods import BillingPeriod
from billing.rating import UsageAggregate, rate_org
from billing.usage.client import UsageClient, UsageQuery

log = logging.getLogger(__name__)

DEFAULT_OPTIONS = CloseOptions()

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def open_database(settings: Settings) -> Engine:
    """The ledger's engine, migrated to the newest schema when auto-migrate is on."""
    return ledger_engine(settings.database_url, migrate=settings.auto_migrate)


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
    engine = open_database(settings)
    query = pricing.usage_query(
        tuple(org_ids), settings.mka1_bucket_width, settings.mka1_group_by_extra
    )
    try:
        with hold_period(engine, str(period), options.wait_seconds, say, now):
            with Session(engine) as session:
                run_id = start_run(
                    session,
                    period,
                    trigger,
                    settings.mka1_base_url,
                    now(),
                    request_params=describe_query(settings.mka1_base_url, query),
                    operation="draft" if options.draft else "close",
                    started_by=who_started(),
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
                stage = Stage(settings, engine, pricing, run_id, outcome, say, now)
                return stage.rate_store_publish(run_id, org_ids, options)

            return run_recorded(engine, run_id, work, now)
    finally:
        engine.dispose()


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
    engine = open_database(settings)
    try:
        with hold_period(engine, str(period), options.wait_seconds, say, now):
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
                        f"the last close of {period} (run {source.id}) was a partial close of "
                        f"{partial}; run a full close (billing close --period {period}) "
                        "before re-rating"
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
                    operation="rerate",
                    started_by=who_started(),
                )

            def work(outcome: RunOutcome) -> CloseResult:
                say(f"re-rating the usage read from the snapshot of run {source_id}")
                outcome.pages_fetched = pages
                outcome.usage_checksum = checksum
                stage = Stage(settings, engine, pricing, run_id, outcome, say, now)
                return stage.rate_store_publish(source_id, (), options)

            return run_recorded(engine, run_id, work, now)
    finally:
        engine.dispose()


def finalize_period(
    settings: Settings,
    period: BillingPeriod,
    *,
    trigger: str = "cli",
    progress: Progress | None = None,
    now: Clock = _utc_now,
    wait_seconds: float = 0.0,  # float-ok: a timeout
) -> CloseResult:
    """Finalize the drafts of a period (numbers them, freezes them), then render and email."""
    say = progress or log.info
    engine = open_database(settings)
    try:
        with hold_period(engine, str(period), wait_seconds, say, now):
            with Session(engine) as session:
                drafted_by = drafting_run(session, period)
                run_id = start_run(
                    session,
                    period,
                    trigger,
                    "(no fetch: finalizes stored drafts)",
                    now(),
                    operation="finalize",
                    started_by=who_started(),
                )

            def work(outcome: RunOutcome) -> CloseResult:
                stage = Stage(settings, engine, None, run_id, outcome, say, now)
                if not stage.finalize(period, None):
                    raise InvoiceStateError(
                        f"no draft invoices of {period} to finalize: "
                        f"run billing close --period {period} --draft first"
                    )
                outcome.report = drafted_by.report if drafted_by else RatingReport()
                if drafted_by is None:
                    return stage.publish(period, run_id)
                return stage.publish(period, drafted_by.run_id, drafted_by.pages)

            return run_recorded(engine, run_id, work, now)
    finally:
        engine.dispose()


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
