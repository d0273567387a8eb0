"""Publishing a period: statements (PDF, CSV), the summary, run report and allocation, emails."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

from billing.config import Settings
from billing.db.engine import open_ledger
from billing.db.outbox import pending_void_notices
from billing.db.period_reads import (
    invoice_summaries,
    iter_statements,
    live_invoice_ids,
    period_org_totals,
)
from billing.db.repository import RunOutcome, load_statements, statements_for
from billing.db.tables import BillingRun, Invoice
from billing.domain import InvoiceSummary, RatingReport, Statement
from billing.email.messages import StatementDocuments
from billing.email.outbox import OutboxSender
from billing.errors import BillingError, StorageError
from billing.periods import BillingPeriod
from billing.statements.allocation import CostCentreMap, load_cost_centres
from billing.statements.csv_files import statement_csv
from billing.statements.files import (
    period_folder,
    safe_stem,
    sweep_abandoned,
    void_stem,
    write_atomically,
)
from billing.statements.parallel import render_pdfs, render_processes
from billing.statements.pdf import template_environment
from billing.statements.period_reports import PeriodReportWriter
from billing.statements.render_keys import KeyedPdf, StatementPdfs, forget_key, write_pdf
from billing.statements.reports import RunFacts
from billing.states import RunStatus
from billing.wording import plural

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

# Statements rendered between two progress lines of a long publish or re-render.
PROGRESS_EVERY = 100


@dataclass(frozen=True)
class CloseResult:
    """What a close did: the run, its invoices at a glance and where the files are.

    The statements themselves are not held (a period can have thousands): `statements` reads
    them back from the database when asked.
    """

    run_id: int
    period: BillingPeriod
    invoices: list[InvoiceSummary]
    folder: Path
    summary_path: Path
    report: RatingReport
    pages_fetched: int
    emails_sent: int
    engine: Engine = field(repr=False, compare=False)
    orgs_without_contact: list[str] = field(default_factory=list)
    org_outcomes: list[dict[str, str]] = field(default_factory=list)
    email_outcomes: dict[str, int] = field(default_factory=dict)
    pdfs_rendered: int = 0  # statement PDFs printed by this pass
    pdfs_reused: int = 0  # statement PDFs whose key matched: the bytes on disk were kept

    @property
    def drafts(self) -> int:
        return sum(1 for invoice in self.invoices if invoice.draft)

    @cached_property
    def statements(self) -> list[Statement]:
        """The period's live statements as stored now, read on first use (through the close's
        engine, whose connections are let go again afterwards)."""
        try:
            with Session(self.engine) as session:
                return load_statements(session, self.period)
        finally:
            self.engine.dispose()


def documents_of(statement: Statement, pdf: bytes, issuer_name: str) -> StatementDocuments:
    """A statement's PDF as given and its CSV (FOCUS columns naming `issuer_name`)."""
    return StatementDocuments(
        statement=statement,
        pdf=pdf,
        csv=statement_csv(statement, issuer_name=issuer_name),
        stem=safe_stem(statement.org_id),
    )


def write_documents(
    folder: Path, documents: StatementDocuments, keyed: KeyedPdf | None = None
) -> None:
    """The statement's PDF (then its key, when `keyed`; a reused PDF is not written again) and
    its CSV, each atomically."""
    write_pdf(folder, documents.stem, documents.pdf, keyed)
    write_atomically(folder, f"{documents.stem}.csv", documents.csv)


def keyed_documents(
    pdfs: StatementPdfs, statement: Statement
) -> tuple[StatementDocuments, KeyedPdf]:
    """One statement's documents for its live file (`<org>.pdf`): the PDF reused when its key
    matches, else rendered here."""
    keyed = pdfs.pdf(statement, safe_stem(statement.org_id))
    return documents_of(statement, keyed.pdf, pdfs.renderer.issuer_name), keyed


def output_folder(settings: Settings, period: BillingPeriod, say: Progress) -> Path:
    """The period's statements folder, rid of the work files a killed close left in it."""
    folder = period_folder(settings.output_dir, str(period))
    if removed := sweep_abandoned(folder):
        say(f"removed {len(removed)} work file(s) a stopped close left in {folder}")
    return folder


def report_writer(
    settings: Settings, folder: Path, period: BillingPeriod, centres: CostCentreMap
) -> PeriodReportWriter:
    """The writer of a period's summary.csv, allocation.csv, changes.csv and summary.pdf."""
    return PeriodReportWriter(
        folder,
        str(period),
        str(period.previous()),
        centres,
        issuer_name=settings.issuer_name,
        swing_threshold_percent=settings.report_swing_percent,
        top_orgs=settings.report_top_orgs,
        max_org_rows=settings.report_max_org_rows,
        templates_dir=settings.templates_dir,
        locale=settings.locale,
    )


def rendered_statements(
    settings: Settings, engine: Engine, period: BillingPeriod, pdfs: StatementPdfs
) -> Iterator[tuple[StatementDocuments, KeyedPdf]]:
    """Every live statement of a period with its PDF and CSV, in org-id order, streamed from the
    database in batches; a PDF whose key matches the one in `pdfs`' folder is reused, the others
    are rendered by BILLING_RENDER_PROCESSES processes."""
    statements = iter_statements(engine, period)

    def stored(statement: Statement) -> bytes | None:
        return pdfs.stored(statement, safe_stem(statement.org_id))

    processes = render_processes(settings)
    for statement, pdf in render_pdfs(settings, statements, processes, reuse=stored):
        yield documents_of(statement, pdf, settings.issuer_name), pdfs.keyed(statement, pdf)


def publish_statements(
    settings: Settings,
    engine: Engine,
    period: BillingPeriod,
    run_id: int,
    report: RatingReport,
    pages: int,
    say: Progress,
    *,
    outcome: RunOutcome | None = None,
    org_outcomes: Sequence[dict[str, str]] = (),
) -> CloseResult:
    """Render each stored statement of the period to PDF and CSV, send what the outbox holds
    for it, and write the period's reports (summary.csv, allocation.csv, changes.csv,
    summary.pdf), in one streamed pass: one batch of statements is held at a time.

    Finalizing queued one delivery per contact; each is sent once (an invoice is `sent` when
    all of its are). Drafts are rendered (marked DRAFT) but never emailed.

    `outcome`, when the caller passes its run's, supplies the duplicate count to the report;
    without it the report reads what the run table holds.
    """
    centres = load_cost_centre_map(settings)
    folder = output_folder(settings, period, say)
    written = 0
    environment = template_environment(settings.templates_dir, settings.locale)
    pdfs = StatementPdfs(settings, folder)
    with (
        report_writer(settings, folder, period, centres) as writer,
        OutboxSender(settings, engine, period, environment, folder) as outbox,
    ):
        for documents, keyed in rendered_statements(settings, engine, period, pdfs):
            write_documents(folder, documents, keyed)
            outbox.send_for(documents)
            writer.add(documents.statement)
            written += 1
            if written % PROGRESS_EVERY == 0:
                say(
                    f"{plural(written, 'statement')} so far ({pdfs.describe()}), "
                    f"{plural(outbox.report.sent, 'email')} sent"
                )
        if outbox.waiting:  # their files were written above: the PDFs are reused from there
            remaining = StatementPdfs(settings, folder)
            outbox.send_remaining(lambda stored: keyed_documents(remaining, stored)[0])
        outbox.send_notices()  # of invoices this close voided (--reissue), or a void left
        with Session(engine) as session:
            invoices = invoice_summaries(session, period)  # with the states sending set
            previous = period_org_totals(session, period.previous())
            facts = run_facts(session, run_id, settings, report, outcome)
        writer.finish(previous, facts)
    delivery = outbox.report
    for cut_off in delivery.cut_off:
        say(f"email {cut_off} was cut off before the server replied: marked unknown")
    if delivery.messages:
        say(f"emails: {delivery.describe()}")
    say(
        f"wrote {plural(written, 'statement')} ({pdfs.describe()}), "
        f"the summary and the reports to {folder}"
    )
    return CloseResult(
        run_id=run_id,
        period=period,
        invoices=invoices,
        folder=folder,
        summary_path=folder / "summary.csv",
        report=report,
        pages_fetched=pages,
        emails_sent=delivery.sent,
        engine=engine,
        email_outcomes=dict(delivery.outcomes),
        orgs_without_contact=[invoice.org_id for invoice in invoices if not invoice.emails],
        org_outcomes=list(org_outcomes),
        pdfs_rendered=pdfs.rendered,
        pdfs_reused=pdfs.reused,
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
    if checked.status == RunStatus.RUNNING:
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


def publish_void(settings: Settings, engine: Engine, invoice: Invoice, say: Progress) -> Path:
    """After a void (the period's lock held): the invoice's statements are kept as
    `<org>-<number>-VOID.pdf|csv`, marked VOID, instead of the org's live `<org>.pdf|csv`; the
    period's reports are written again without rendering any other statement; the void
    notice is sent. Returns the kept PDF."""
    period = BillingPeriod.parse(invoice.period)
    folder = output_folder(settings, period, say)
    with Session(engine) as session:
        [statement] = statements_for(session, period, [invoice])
    pdfs = StatementPdfs(settings, folder)
    stem = void_stem(invoice.org_id, statement.invoice_number)
    keyed = pdfs.pdf(statement, stem)
    kept = dataclasses.replace(documents_of(statement, keyed.pdf, settings.issuer_name), stem=stem)
    write_documents(folder, kept, keyed)
    forget_key(folder, safe_stem(invoice.org_id))
    for suffix in (".pdf", ".csv"):
        (folder / f"{safe_stem(invoice.org_id)}{suffix}").unlink(missing_ok=True)
    renderer = pdfs.renderer
    write_period_reports(settings, engine, period, folder, say)
    with Session(engine) as session:
        notices = pending_void_notices(session, invoice.id or 0)
    with OutboxSender(
        settings, engine, period, renderer.environment, folder, delivery_ids=notices
    ) as outbox:
        outbox.send_notices()
    if outbox.report.messages:
        say(f"void notice of {statement.invoice_number}: {outbox.report.describe()}")
    return folder / f"{kept.stem}.pdf"


def write_period_reports(
    settings: Settings, engine: Engine, period: BillingPeriod, folder: Path, say: Progress
) -> None:
    """summary.csv, changes.csv, allocation.csv and summary.pdf again from the stored
    invoices, with no statement rendered."""
    with Session(engine) as session:
        if not live_invoice_ids(session, period):
            say(f"no invoices of {period} stand; the period's reports are left as they were")
            return
        previous = period_org_totals(session, period.previous())
        latest = session.execute(
            select(func.max(col(Invoice.run_id))).where(col(Invoice.period) == str(period))
        ).scalar_one_or_none()
        facts = run_facts(session, latest, settings)
    with report_writer(settings, folder, period, load_cost_centre_map(settings)) as writer:
        for statement in iter_statements(engine, period):
            writer.add(statement)
        writer.finish(previous, facts)


@dataclass(frozen=True)
class RenderResult:
    """What a re-render wrote: how many statements it read back, and the files."""

    period: BillingPeriod
    folder: Path
    count: int
    files: list[Path]
    rendered: int = 0  # PDFs printed
    reused: int = 0  # PDFs whose key matched: left as they were


def render_statements(
    settings: Settings,
    period: BillingPeriod,
    org_id: str | None = None,
    *,
    progress: Progress | None = None,
    force: bool = False,
) -> RenderResult:
    """Write a period's statements and reports again from the stored invoices.

    Nothing is re-rated, the upstream is never called, no run is recorded and no email is sent.
    With `org_id` only that org's PDF and CSV are written. Statements are streamed in batches
    as a close does. A PDF whose key matches its statement's (billing/statements/render_keys.py)
    is kept as it is, unless `force`.
    """
    say = progress or log.info
    centres = load_cost_centre_map(settings) if org_id is None else CostCentreMap()
    folder = output_folder(settings, period, say)
    engine = open_ledger(settings, migrate=False)
    files: list[Path] = []
    count = 0
    pdfs = StatementPdfs(settings, folder, force=force)
    try:
        if org_id is not None:
            with Session(engine) as session:
                statements = load_statements(session, period, org_id)
            if not statements:
                raise BillingError(
                    f"no stored invoices of org {org_id} for {period}: "
                    f"run billing close --period {period} first"
                )
            documents, keyed = keyed_documents(pdfs, statements[0])
            write_documents(folder, documents, keyed)
            files += [folder / f"{documents.stem}.pdf", folder / f"{documents.stem}.csv"]
            count = 1
        else:
            with Session(engine) as session:
                if not live_invoice_ids(session, period):
                    raise BillingError(
                        f"no stored invoices for {period}: "
                        f"run billing close --period {period} first"
                    )
                previous = period_org_totals(session, period.previous())
                latest = session.execute(
                    select(func.max(col(Invoice.run_id))).where(col(Invoice.period) == str(period))
                ).scalar_one_or_none()
                facts = run_facts(session, latest, settings)
            with report_writer(settings, folder, period, centres) as writer:
                for documents, keyed in rendered_statements(settings, engine, period, pdfs):
                    write_documents(folder, documents, keyed)
                    writer.add(documents.statement)
                    files += [folder / f"{documents.stem}.pdf", folder / f"{documents.stem}.csv"]
                    count += 1
                    if count % PROGRESS_EVERY == 0:
                        say(f"{plural(count, 'statement')} so far ({pdfs.describe()})")
                files += writer.finish(previous, facts)
    except SQLAlchemyError as error:
        raise StorageError(
            f"cannot read the invoices of {period} from BILLING_DATABASE_URL: "
            f"{type(error).__name__}; run billing db upgrade or billing close first"
        ) from None
    finally:
        engine.dispose()
    say(f"wrote {plural(count, 'statement')} of {period} ({pdfs.describe()}) into {folder}")
    return RenderResult(
        period=period,
        folder=folder,
        count=count,
        files=files,
        rendered=pdfs.rendered,
        reused=pdfs.reused,
    )
