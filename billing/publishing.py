"""Publishing a period: statements (PDF, CSV), the summary, run report and allocation, emails."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

from billing.config import Settings
from billing.db.engine import make_engine
from billing.db.repository import (
    RunOutcome,
    load_statements,
)
from billing.db.tables import BillingRun, Invoice
from billing.delivery import OutboxSender
from billing.domain import RatingReport, Statement
from billing.errors import BillingError, StorageError
from billing.mail import StatementDocuments
from billing.periods import BillingPeriod
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
    org_outcomes: list[dict[str, str]] = field(default_factory=list)
    email_outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def drafts(self) -> int:
        return sum(1 for statement in self.statements if statement.draft)


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
    org_outcomes: Sequence[dict[str, str]] = (),
) -> CloseResult:
    """Render each statement to PDF and CSV, write the period's reports (summary.csv,
    summary.pdf, allocation.csv), and send what the outbox holds for them.

    Finalizing queued one delivery per contact; each is sent once (an invoice is `sent` when
    all of its are). Drafts are rendered (marked DRAFT) but never emailed.

    `outcome`, when the caller passes its run's, supplies the duplicate count to the report;
    without it the report reads what the run table holds.
    """
    centres = load_cost_centre_map(settings)
    folder = period_folder(settings.output_dir, str(period))
    renderer = StatementRenderer.from_settings(settings)
    engine = make_engine(settings.database_url)
    try:
        with OutboxSender(settings, engine, period, renderer.environment, folder) as outbox:
            for statement in statements:
                documents = render_documents(renderer, statement)
                write_documents(folder, documents)
                outbox.send_for(documents)
            outbox.send_remaining(lambda stored: render_documents(renderer, stored))
        delivery = outbox.report
        for cut_off in delivery.cut_off:
            say(f"email {cut_off} was cut off before the server replied: marked unknown")
        if delivery.messages:
            say(f"emails: {delivery.describe()}")
        summary_path = write_atomically(folder, "summary.csv", summary_csv(statements))
        with Session(engine) as session:
            published = load_statements(session, period)  # with the states sending set
            previous = load_statements(session, period.previous())
            facts = run_facts(session, run_id, settings, report, outcome)
    finally:
        engine.dispose()
    write_period_reports(settings, folder, period, statements, previous, facts, centres)
    say(f"wrote {len(statements)} statements, the summary and the reports to {folder}")
    return CloseResult(
        run_id=run_id,
        period=period,
        statements=published,
        folder=folder,
        summary_path=summary_path,
        report=report,
        pages_fetched=pages,
        emails_sent=delivery.sent,
        email_outcomes=dict(delivery.outcomes),
        orgs_without_contact=[s.org_id for s in statements if not s.emails],
        org_outcomes=list(org_outcomes),
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
