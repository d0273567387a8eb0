"""Use cases: close a period (fetch, rate, store, render, email) and the steps it is made of."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

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
from billing.db.tables import BillingRun, Invoice
from billing.domain import OrgAccount, RateCard, RatedInvoice, RatingReport, Statement
from billing.errors import BillingError, StorageError
from billing.fetching import check_completeness, describe_query, fetch_and_snapshot
from billing.mail import StatementDocuments, build_statement_email, email_backend
from billing.periods import BillingPeriod
from billing.rating import UsageAggregate, rate_org, rate_period
from billing.statements.allocation import (
    CostCentreMap,
    allocate,
    allocation_csv,
    centre_totals,
    load_cost_centres,
)
from billing.statements.csv_files import statement_csv, summary_csv
from billing.statements.files import period_folder, safe_stem, write_atomically
from billing.statements.pdf import StatementRenderer
from billing.statements.reports import CentreTotal, RunFacts, build_period_report, report_pdf
from billing.usage.client import UsageClient, UsageQuery

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


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


def publish_statements(
    settings: Settings,
    period: BillingPeriod,
    statements: Sequence[Statement],
    run_id: int,
    report: RatingReport,
    pages: int,
    say: Progress,
    *,
    outcome: RunOutcome | None = None,
) -> CloseResult:
    """Render each statement to PDF and CSV, write the period's reports (summary.csv,
    summary.pdf, allocation.csv), and hand emails to the backend.

    `outcome`, when the caller passes its run's, supplies the duplicate count to the report;
    without it the report reads what the run table holds.
    """
    centres = load_cost_centre_map(settings)
    folder = period_folder(settings.output_dir, str(period))
    renderer = StatementRenderer.from_settings(settings)
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
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            previous = load_statements(session, period.previous())
            facts = run_facts(session, run_id, settings, report, outcome)
    finally:
        engine.dispose()
    write_period_reports(settings, folder, period, statements, previous, facts, centres)
    say(f"wrote {len(statements)} statements, the summary and the reports to {folder}")
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


def load_cost_centre_map(settings: Settings) -> CostCentreMap:
    """The cost-centre map BILLING_COST_CENTRES names, validated; empty when unset."""
    if settings.cost_centres is None:
        return CostCentreMap()
    return load_cost_centres(settings.cost_centres)


def run_facts(
    session: Session,
    run_id: int | None,
    settings: Settings,
    report: RatingReport | None = None,
    outcome: RunOutcome | None = None,
) -> RunFacts | None:
    """What the run behind the invoices recorded, for the report.

    A run still in progress (the close that is publishing) has not written its counts yet: they
    come from its rating report and, when given, its outcome. A close that got this far passed
    its completeness check (or skipped it by setting). A re-rate shows the checks of the close
    whose snapshot it priced.
    """
    run = session.get(BillingRun, run_id) if run_id is not None else None
    if run is None:
        return None
    checked = run
    if run.rerated_from_run_id is not None:
        checked = session.get(BillingRun, run.rerated_from_run_id) or run
    duplicates: int | None = checked.duplicate_results
    completeness = checked.completeness
    if checked.status == "running":
        duplicates = outcome.duplicate_results if outcome is not None else None
        completeness = outcome.completeness if outcome is not None else None
        if completeness is None:
            completeness = "passed" if settings.completeness_check else "skipped"
    return RunFacts(
        run_id=run.id,
        trigger=run.trigger,
        status=run.status,
        pages_fetched=run.pages_fetched,
        usage_results=report.usage_results if report is not None else run.usage_results,
        results_without_memory=(
            report.results_without_memory if report is not None else run.results_without_memory
        ),
        results_with_peak_only=None,
        duplicate_results=duplicates,
        completeness=completeness,
    )


def write_period_reports(
    settings: Settings,
    folder: Path,
    period: BillingPeriod,
    statements: Sequence[Statement],
    previous: Sequence[Statement],
    facts: RunFacts | None,
    centres: CostCentreMap,
) -> list[Path]:
    """allocation.csv and summary.pdf beside summary.csv, from stored data only."""
    rows = allocate(statements, centres)
    allocation_path = write_atomically(folder, "allocation.csv", allocation_csv(rows))
    report = build_period_report(
        str(period),
        str(period.previous()),
        statements,
        previous,
        facts,
        [CentreTotal(*values) for values in centre_totals(rows)],
        issuer_name=settings.issuer_name,
        swing_threshold_percent=settings.report_swing_percent,
        top_orgs=settings.report_top_orgs,
    )
    pdf = report_pdf(report, settings.templates_dir, settings.locale)
    return [allocation_path, write_atomically(folder, "summary.pdf", pdf)]


@dataclass(frozen=True)
class RenderResult:
    """What a re-render wrote: the statements it read back and the files."""

    period: BillingPeriod
    folder: Path
    statements: list[Statement]
    files: list[Path]


def render_statements(
    settings: Settings,
    period: BillingPeriod,
    org_id: str | None = None,
    *,
    progress: Progress | None = None,
) -> RenderResult:
    """Write a period's statements and reports again from the stored invoices.

    Nothing is re-rated, the upstream is never called, no run is recorded and no email is sent.
    With `org_id` only that org's PDF and CSV are written.
    """
    say = progress or log.info
    centres = load_cost_centre_map(settings) if org_id is None else CostCentreMap()
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            statements = load_statements(session, period, org_id)
            if not statements:
                whose = f" of org {org_id}" if org_id is not None else ""
                raise BillingError(
                    f"no stored invoices{whose} for {period}: "
                    f"run billing close --period {period} first"
                )
            previous: list[Statement] = []
            facts: RunFacts | None = None
            if org_id is None:
                previous = load_statements(session, period.previous())
                latest = session.execute(
                    select(func.max(col(Invoice.run_id))).where(col(Invoice.period) == str(period))
                ).scalar_one_or_none()
                facts = run_facts(session, latest, settings)
    except SQLAlchemyError as error:
        raise StorageError(
            f"cannot read the invoices of {period} from BILLING_DATABASE_URL: "
            f"{type(error).__name__}; run billing db upgrade or billing close first"
        ) from None
    finally:
        engine.dispose()
    folder = period_folder(settings.output_dir, str(period))
    renderer = StatementRenderer.from_settings(settings)
    files: list[Path] = []
    for statement in statements:
        documents = render_documents(renderer, statement)
        write_documents(folder, documents)
        files += [folder / f"{documents.stem}.pdf", folder / f"{documents.stem}.csv"]
    if org_id is None:
        files.append(write_atomically(folder, "summary.csv", summary_csv(statements)))
        files += write_period_reports(
            settings, folder, period, statements, previous, facts, centres
        )
    say(f"re-rendered {len(statements)} statements of {period} into {folder}")
    return RenderResult(period=period, folder=folder, statements=statements, files=files)
