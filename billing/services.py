"""Use cases: close a period (fetch, rate, store, render, email) and the steps it is made of."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

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
from billing.domain import OrgAccount, RateCard, RatedInvoice, RatingReport, Statement
from billing.errors import BillingError
from billing.mail import StatementDocuments, build_statement_email, email_backend
from billing.periods import BillingPeriod
from billing.rating import UsageAggregate, rate_org, rate_period
from billing.statements.csv_files import statement_csv, summary_csv
from billing.statements.files import period_folder, safe_stem, write_atomically
from billing.statements.pdf import StatementRenderer
from billing.usage.client import UsageClient, UsageQuery

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CloseResult:
    """What a close did: the run, the stored statements and where the files are."""

    run_id: int
    period: BillingPeriod
    statements: list[Statement]
    folder: Path
    summary_path: Path
    report: RatingReport
    pages_fetched: int
    emails_sent: int
    orgs_without_contact: list[str] = field(default_factory=list)


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

    def usage_query(self, org_ids: tuple[str, ...] = ()) -> UsageQuery:
        """The fetch this pricing needs: by session kind too when a card prices by kind."""
        query = UsageQuery.for_period(self.period, org_ids=org_ids)
        if any(card.needs_session_kind for card in self.catalog.cards):
            query = dataclasses.replace(query, group_by=(*query.group_by, "session_kind"))
        return query


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
    client_http = http or http_client(settings)
    try:
        client = usage_client(settings, client_http)
        aggregate, _pages = fetch_usage(client, pricing.usage_query((org_id,)), log.debug)
    finally:
        if http is None:
            client_http.close()
    usage = aggregate.by_org.get(org_id)
    if usage is None:
        return None, aggregate.report
    account = pricing.account_for(org_id)
    return rate_org(account, pricing.card_for(account), usage), aggregate.report


def render_documents(renderer: StatementRenderer, statement: Statement) -> StatementDocuments:
    """PDF and CSV bytes of one stored statement (rendering never re-rates)."""
    return StatementDocuments(
        statement=statement,
        pdf=renderer.pdf(statement),
        csv=statement_csv(statement),
        stem=safe_stem(statement.org_id),
    )


def write_documents(folder: Path, documents: StatementDocuments) -> None:
    write_atomically(folder, f"{documents.stem}.pdf", documents.pdf)
    write_atomically(folder, f"{documents.stem}.csv", documents.csv)


def close_period(
    settings: Settings,
    period: BillingPeriod,
    *,
    trigger: str = "cli",
    http: httpx.Client | None = None,
    progress: Progress | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> CloseResult:
    """Close a month: fetch, rate, store (all or nothing), render, summarise and email."""
    say = progress or log.info
    pricing = load_pricing(settings, period)
    engine = open_database(settings)
    with Session(engine) as session:
        run_id = start_run(session, period, trigger, settings.mka1_base_url, now())
    pages = 0
    report: RatingReport | None = None
    try:
        owned_http = http is None
        http = http or http_client(settings)
        try:
            aggregate, pages = fetch_usage(usage_client(settings, http), pricing.usage_query(), say)
        finally:
            if owned_http:
                http.close()
        report = aggregate.report
        rated = rate_period(aggregate, pricing.account_for, pricing.card_for)
        say(f"rated {len(rated)} orgs from {report.usage_results} usage results")
        with Session(engine) as session, session.begin():
            replace_period_invoices(session, run_id, period, rated, issued_at=now())
        with Session(engine) as session:
            statements = load_statements(session, period)
        result = publish_statements(settings, period, statements, run_id, report, pages, say)
    except BillingError as error:
        with Session(engine) as session:
            finish_run(session, run_id, RunOutcome("failed", pages, report, 0, str(error)), now())
        raise
    with Session(engine) as session:
        finish_run(session, run_id, RunOutcome("succeeded", pages, report, len(statements)), now())
    engine.dispose()
    return result


def publish_statements(
    settings: Settings,
    period: BillingPeriod,
    statements: Sequence[Statement],
    run_id: int,
    report: RatingReport,
    pages: int,
    say: Progress,
) -> CloseResult:
    """Render each statement to PDF and CSV, write the summary, and hand emails to the backend."""
    folder = period_folder(settings.output_dir, str(period))
    renderer = StatementRenderer(settings.templates_dir, settings.locale, settings.issuer_name)
    backend = email_backend(settings.email_backend, folder)
    emails_sent = 0
    for statement in statements:
        documents = render_documents(renderer, statement)
        write_documents(folder, documents)
        if statement.emails:
            message = build_statement_email(
                documents,
                renderer.environment,
                settings.email_from,
                settings.issuer_name,
                settings.locale,
            )
            backend.send(message, statement.org_id)
            emails_sent += 1
    summary_path = write_atomically(folder, "summary.csv", summary_csv(statements))
    say(f"wrote {len(statements)} statements and the summary to {folder}")
    return CloseResult(
        run_id=run_id,
        period=period,
        statements=list(statements),
        folder=folder,
        summary_path=summary_path,
        report=report,
        pages_fetched=pages,
        emails_sent=emails_sent,
        orgs_without_contact=[s.org_id for s in statements if not s.emails],
    )
