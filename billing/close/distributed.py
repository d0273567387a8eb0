"""The distributed close as steps a queue can run anywhere: each step works on ids, is safe to
run twice, and says what should run next; completion is decided from the database.

    begin ─▶ fetch ─▶ rate batch × N ─▶ (advance: finalize) ─▶ render × M ─▶ email × M ─▶ report

(render and email run in batches of BILLING_PUBLISH_BATCH invoices per task, each invoice
still its own unit: done once, skipped on a redelivery.)

Celery tasks (workers/tasks.py) call these and enqueue the returned `Work`; nothing here
imports Celery. A periodic sweep finds runs whose messages were lost and returns their
undone work.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col

from billing.close.fetch import close_query, fetch_checked, http_client, record_fetch
from billing.close.preflight import Operation, preflight
from billing.close.pricing import load_pricing, warn_of_ignored_tax_rules
from billing.close.publish import (
    keyed_documents,
    load_cost_centre_map,
    output_folder,
    report_writer,
    run_facts,
    write_documents,
)
from billing.close.runs import (
    finish,
    record_invoices,
    record_rating,
    requested_close,
)
from billing.close.steps import (
    Card,
    CloseOptions,
    cards_used,
    finalize,
    in_batches,
    orgs_to_revisit,
    rate,
    store_batch,
)
from billing.close.window import check_review_setting, start_close
from billing.config import Settings
from billing.db.engine import ledger
from billing.db.locks import hold_period, write_transaction
from billing.db.period_reads import invoice_summaries, iter_statements, period_org_totals
from billing.db.repository import RunOutcome, statements_for
from billing.db.review import held_outcomes
from billing.db.runtasks import (
    add_units,
    begin_unit,
    finish_unit,
    stage_counts,
    stalled_runs,
    undone_units,
    unit_results,
)
from billing.db.snapshots import iter_snapshot
from billing.db.tables import BillingRun, EmailDelivery, Invoice, UsageSnapshotRow
from billing.db.webhooks import record_run_end
from billing.domain import RatingReport, Statement, UsageRecord
from billing.email.outbox import OutboxSender
from billing.errors import BillingError
from billing.periods import BillingPeriod
from billing.statements.files import period_folder
from billing.statements.render_keys import StatementPdfs
from billing.states import (
    DeliveryStatus,
    InvoiceStatus,
    RunStage,
    RunStatus,
    UnitStatus,
    UnitStep,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Work:
    """What should be enqueued next for a run."""

    run_id: int
    fetch: bool = False
    rate: tuple[str, ...] = ()
    render: tuple[int, ...] = ()
    email: tuple[int, ...] = ()
    report: bool = False

    def __bool__(self) -> bool:
        return bool(self.fetch or self.rate or self.render or self.email or self.report)

    def describe(self) -> str:
        parts = [
            "fetch" if self.fetch else "",
            f"{len(self.rate)} rate batches" if self.rate else "",
            f"{len(self.render)} renders" if self.render else "",
            f"{len(self.email)} emails" if self.email else "",
            "the report" if self.report else "",
        ]
        return ", ".join(part for part in parts if part) or "nothing"

    def __or__(self, other: Work) -> Work:
        return Work(
            self.run_id,
            self.fetch or other.fetch,
            tuple(dict.fromkeys(self.rate + other.rate)),
            tuple(dict.fromkeys(self.render + other.render)),
            tuple(dict.fromkeys(self.email + other.email)),
            self.report or other.report,
        )


def begin_close(
    settings: Settings,
    period: BillingPeriod,
    *,
    trigger: str,
    org_ids: tuple[str, ...] = (),
    options: CloseOptions | None = None,
    now: Clock = _now,
) -> int:
    """Record a distributed run of the period, or raise PeriodBusy if one is under way."""
    pricing = load_pricing(settings, period)
    load_cost_centre_map(settings)
    options = options or CloseOptions()
    check_review_setting(settings, options)
    preflight(
        settings,
        period,
        Operation.CLOSE,
        now=now(),
        draft=options.draft,
        pricing=pricing,
        org_ids=org_ids,
    )
    query = close_query(settings, pricing, org_ids)
    with ledger(settings) as engine, hold_period(engine, str(period), 0, log.info, now):
        with Session(engine) as session:
            run_id, review = start_close(
                session,
                settings,
                period,
                query,
                options,
                trigger=trigger,
                now=now(),
                on_workers=True,
            )
        warn_of_ignored_tax_rules(pricing)  # the run has started: a refusal stayed one line
        if review.note:
            log.info("run %s: %s", run_id, review.note)
        with write_transaction(engine) as session:
            add_units(session, run_id, UnitStep.FETCH, [("all", None)], now())
    return run_id


def _run_row(session: Session, run_id: int) -> BillingRun:
    run = session.get(BillingRun, run_id)
    if run is None:
        raise BillingError(f"no billing run {run_id}")
    return run


def _begin_run_unit(
    engine: Engine, run_id: int, step: UnitStep, cap: int, now: Clock
) -> tuple[BillingPeriod, tuple[str, ...]] | None:
    """Count a delivery of a run's one unit of `step` (its fetch, its report); when there is
    work to do, the run's period and the orgs it closes (none: all)."""
    with write_transaction(engine) as session:
        run = _run_row(session, run_id)
        if run.status != RunStatus.RUNNING:
            return None
        if begin_unit(session, run_id, step, "all", cap, now()) is None:
            return None
        _options, org_ids = requested_close(run)
        return BillingPeriod.parse(run.period), org_ids


def fetch(settings: Settings, run_id: int, *, cap: int = 5, now: Clock = _now) -> Work:
    """Fetch the run's usage into its snapshot (again from scratch on a redelivery), check
    it, and split the orgs to rate into batches."""
    with ledger(settings) as engine:
        begun = _begin_run_unit(engine, run_id, UnitStep.FETCH, cap, now)
        if begun is None:
            return Work(run_id)
        period, org_ids = begun
        with write_transaction(engine) as session:
            session.execute(delete(UsageSnapshotRow).where(col(UsageSnapshotRow.run_id) == run_id))
        query = close_query(settings, load_pricing(settings, period), org_ids)
        try:
            with http_client(settings) as http:
                fetched = fetch_checked(settings, http, query, engine, run_id, log.info)
        except BillingError as error:
            if error.retryable:
                raise
            _fail(engine, run_id, UnitStep.FETCH, "all", str(error), now)
            return Work(run_id)
        orgs = _orgs_to_rate(engine, period, set(fetched.org_totals), org_ids)
        batches = list(in_batches(orgs, settings.rate_batch_orgs))
        with write_transaction(engine) as session:
            run = _run_row(session, run_id)
            record_fetch(run, fetched)
            run.usage_results = fetched.report.usage_results
            run.results_without_memory = fetched.report.results_without_memory
            run.batches_total = len(batches)
            run.stage = RunStage.RATING
            run.heartbeat_at = now()
            units = [(str(n), batch) for n, batch in enumerate(batches)]
            add_units(session, run_id, UnitStep.RATE, units, now())
            finish_unit(session, run_id, UnitStep.FETCH, "all", now())
    if not batches:
        return advance(settings, run_id, now=now)
    return Work(run_id, rate=tuple(str(n) for n in range(len(batches))))


def _orgs_to_rate(
    engine: Engine, period: BillingPeriod, with_usage: set[str], org_ids: tuple[str, ...]
) -> list[str]:
    """Orgs with usage, plus those whose invoice of the period or waiting corrections must be
    looked at even without usage now (a partial close: only its own orgs)."""
    with Session(engine) as session:
        return sorted(with_usage | orgs_to_revisit(session, period, org_ids))


def rate_batch(
    settings: Settings, run_id: int, unit: str, *, cap: int = 5, now: Clock = _now
) -> Work:
    """Rate one batch of orgs from the run's snapshot and store their drafts (or corrections)
    in one transaction that also marks the batch done."""
    with ledger(settings) as engine:
        with write_transaction(engine) as session:
            run = _run_row(session, run_id)
            task = begin_unit(session, run_id, UnitStep.RATE, unit, cap, now())
            if run.status != RunStatus.RUNNING or task is None:
                return Work(run_id)
            org_ids = tuple(json.loads(task.payload))
            period = BillingPeriod.parse(run.period)
            options, _scope = requested_close(run)
        pricing = load_pricing(settings, period)
        by_org: dict[str, list[UsageRecord]] = {}
        with Session(engine) as session:
            for record in iter_snapshot(session, run_id, org_ids=org_ids):
                by_org.setdefault(record.org_id, []).append(record)
        rated = list(rate(pricing, sorted(by_org.items()), RatingReport()))
        with write_transaction(engine) as session:
            stamp = now()
            outcomes = store_batch(
                session,
                settings,
                pricing,
                run_id,
                rated,
                set(org_ids),
                reissue=options.reissue,
                stamp=stamp,
            )
            result = {
                "outcomes": [dataclasses.asdict(outcome) for outcome in outcomes],
                "cards": cards_used(rated),
            }
            finish_unit(session, run_id, UnitStep.RATE, unit, stamp, result=result)
    return advance(settings, run_id, now=now)


def advance(settings: Settings, run_id: int, *, now: Clock = _now) -> Work:
    """Move the run on when its stage is complete, judged from the database: finalize once
    every batch is rated, report once every invoice is rendered and emailed."""
    with ledger(settings) as engine, write_transaction(engine) as session:
        run = session.execute(
            select(BillingRun).where(col(BillingRun.id) == run_id).with_for_update()
        ).scalar_one()
        if run.status != RunStatus.RUNNING:
            return Work(run_id)
        run.heartbeat_at = now()
        counts: dict[str, Counter[str]] = stage_counts(session, run_id)
        stuck = [
            f"{step} {status}: {count}"
            for step, states in counts.items()
            for status, count in states.items()
            if status in (UnitStatus.PARKED, UnitStatus.FAILED)
        ]
        if stuck:
            run.status, run.finished_at = RunStatus.FAILED, now()
            run.error = run.error or (
                f"units that cannot finish ({', '.join(stuck)}): parked after too many "
                f"deliveries, or failed; billing runs show {run_id}"
            )
            record_run_end(session, run, run.finished_at)  # webhook event: run.failed
            return Work(run_id)
        rated = counts.get(UnitStep.RATE, Counter())[UnitStatus.DONE]
        if run.stage == RunStage.RATING and rated >= run.batches_total:
            period = BillingPeriod.parse(run.period)
            options, org_ids = requested_close(run)
            if not options.draft:
                finalized = finalize(session, settings, period, set(org_ids) or None, now())
                run.finalized_count = finalized.count
                if finalized.held:  # kept for the report step, which records every outcome
                    run.org_outcomes = json.dumps(held_outcomes(finalized.held))
            invoices = _live_invoices(session, period, org_ids)
            run.invoice_count = len(invoices)
            run.stage = RunStage.PUBLISHING
            add_units(session, run_id, UnitStep.RENDER, [(str(i), None) for i in invoices], now())
            add_units(session, run_id, UnitStep.EMAIL, [(str(i), None) for i in invoices], now())
            if not invoices:
                run.stage = RunStage.REPORTING
                return Work(run_id, report=True)
            return Work(run_id, render=tuple(invoices))
        if run.stage == RunStage.PUBLISHING:
            rendered = counts.get(UnitStep.RENDER, Counter())[UnitStatus.DONE]
            emailed = counts.get(UnitStep.EMAIL, Counter())[UnitStatus.DONE]
            if rendered >= run.invoice_count and emailed >= run.invoice_count:
                run.stage = RunStage.REPORTING
                add_units(session, run_id, UnitStep.REPORT, [("all", None)], now())
                return Work(run_id, report=True)
        return Work(run_id)


def _live_invoices(session: Session, period: BillingPeriod, org_ids: tuple[str, ...]) -> list[int]:
    query = select(col(Invoice.id)).where(
        col(Invoice.period) == str(period), col(Invoice.status) != InvoiceStatus.VOID
    )
    if org_ids:
        query = query.where(col(Invoice.org_id).in_(org_ids))
    return [int(i) for i in session.execute(query.order_by(col(Invoice.org_id))).scalars()]


def _statements(session: Session, invoice_ids: Sequence[int]) -> list[Statement]:
    """These invoices as statements, in the order given (one read for the whole batch)."""
    if not invoice_ids:
        return []
    invoices = session.execute(select(Invoice).where(col(Invoice.id).in_(invoice_ids))).scalars()
    by_id = {invoice.id: invoice for invoice in invoices}
    missing = [i for i in invoice_ids if i not in by_id]
    if missing:
        raise BillingError(f"no invoice {missing[0]}")
    ordered = [by_id[i] for i in invoice_ids]
    statements: list[Statement] = []
    for period in dict.fromkeys(invoice.period for invoice in ordered):
        same = [invoice for invoice in ordered if invoice.period == period]
        statements += statements_for(session, BillingPeriod.parse(period), same)
    place = {invoice_id: at for at, invoice_id in enumerate(invoice_ids)}
    return sorted(statements, key=lambda statement: place[statement.invoice_id])


class UnitFailed(BillingError):
    """One invoice of a batch failed for good: the run fails naming that unit."""

    def __init__(self, unit: str, detail: str) -> None:
        super().__init__(detail)
        self.unit = unit
        self.detail = detail


PerStatement = Callable[[Statement], None]
BatchWork = Callable[[Engine, list[Statement]], AbstractContextManager[PerStatement]]


def _invoice_units(
    settings: Settings,
    run_id: int,
    step: UnitStep,
    invoice_ids: Sequence[int],
    open_work: BatchWork,
    cap: int,
    now: Clock,
) -> list[int]:
    """Count a delivery of each invoice's unit of `step`, then do the work of those that have
    some (what `open_work` opens, e.g. one SMTP connection, serves the whole batch), each
    marked done as soon as it is: a redelivered batch skips what is done. Returns the ids
    done here. A non-transient failure raises UnitFailed naming the invoice."""
    with ledger(settings) as engine:
        with write_transaction(engine) as session:
            todo = [
                invoice_id
                for invoice_id in invoice_ids
                if begin_unit(session, run_id, step, str(invoice_id), cap, now()) is not None
            ]
            statements = _statements(session, todo)
        done: list[int] = []
        if not statements:
            return done
        with open_work(engine, statements) as work_on:
            for statement in statements:
                _work_on_unit(work_on, statement)
                with write_transaction(engine) as session:
                    finish_unit(session, run_id, step, str(statement.invoice_id), now())
                done.append(statement.invoice_id)
    return done


def _work_on_unit(work_on: PerStatement, statement: Statement) -> None:
    """One invoice's work; a failure for good becomes UnitFailed naming it (transient ones and
    retryable BillingErrors go up as they are, and the batch is retried)."""
    try:
        work_on(statement)
    except UnitFailed:
        raise
    except BillingError as error:
        if error.retryable:
            raise
        raise UnitFailed(str(statement.invoice_id), str(error)) from error
    except (OperationalError, IntegrityError, ConnectionError, TimeoutError):
        raise
    except Exception as error:
        raise UnitFailed(str(statement.invoice_id), repr(error)[:500]) from error


def render_invoices(
    settings: Settings,
    run_id: int,
    invoice_ids: Sequence[int],
    *,
    cap: int = 5,
    now: Clock = _now,
) -> Work:
    """Write a batch of invoices' PDFs and CSVs (the same file names on every redelivery) with
    one renderer; a PDF whose key matches its statement's (an unchanged invoice, a
    redelivery) is kept as it is. Then their emails, and the run moved on once."""

    @contextmanager
    def renderer(_engine: Engine, statements: list[Statement]) -> Iterator[PerStatement]:
        folder = period_folder(settings.output_dir, statements[0].period)
        pdfs = StatementPdfs(settings, folder)
        yield lambda statement: write_documents(folder, *keyed_documents(pdfs, statement))

    done = _invoice_units(settings, run_id, UnitStep.RENDER, invoice_ids, renderer, cap, now)
    if not done:
        return Work(run_id)
    return Work(run_id, email=tuple(done)) | advance(settings, run_id, now=now)


def email_invoices(
    settings: Settings,
    run_id: int,
    invoice_ids: Sequence[int],
    *,
    cap: int = 5,
    now: Clock = _now,
) -> Work:
    """Send a batch of invoices' pending statement deliveries through the outbox, over one
    transport (one SMTP connection for the batch); then move the run on once."""

    @contextmanager
    def sender(engine: Engine, statements: list[Statement]) -> Iterator[PerStatement]:
        pending = _pending_deliveries(engine, [s.invoice_id for s in statements])
        if not pending:
            yield lambda _statement: None
            return
        folder = period_folder(settings.output_dir, statements[0].period)
        pdfs = StatementPdfs(settings, folder)
        with OutboxSender(
            settings,
            engine,
            BillingPeriod.parse(statements[0].period),
            pdfs.renderer.environment,
            folder,
            delivery_ids=pending,
            now=now,
        ) as outbox:

            def send(statement: Statement) -> None:
                if statement.invoice_id in outbox.waiting and statement.status in (
                    InvoiceStatus.FINALIZED,
                    InvoiceStatus.SENT,
                ):
                    outbox.send_for(keyed_documents(pdfs, statement)[0])

            yield send

    if not _invoice_units(settings, run_id, UnitStep.EMAIL, invoice_ids, sender, cap, now):
        return Work(run_id)
    return advance(settings, run_id, now=now)


def _pending_deliveries(engine: Engine, invoice_ids: Sequence[int]) -> list[int]:
    """The invoices' deliveries not sent yet (or cut off while sending)."""
    waiting = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)
    with Session(engine) as session:
        found = session.execute(
            select(col(EmailDelivery.id)).where(
                col(EmailDelivery.invoice_id).in_(invoice_ids),
                col(EmailDelivery.status).in_(waiting),
            )
        ).scalars()
        return [int(i) for i in found]


def report(settings: Settings, run_id: int, *, cap: int = 5, now: Clock = _now) -> Work:
    """Write the period's summary, run report and allocation; the run has succeeded."""
    with ledger(settings) as engine:
        begun = _begin_run_unit(engine, run_id, UnitStep.REPORT, cap, now)
        if begun is None:
            return Work(run_id)
        period = begun[0]
        with Session(engine) as session:
            previous = period_org_totals(session, period.previous())
            facts = run_facts(session, run_id, settings)
            rated = unit_results(session, run_id, UnitStep.RATE)
        folder = output_folder(settings, period, log.info)
        with report_writer(settings, folder, period, load_cost_centre_map(settings)) as writer:
            for statement in iter_statements(engine, period):
                writer.add(statement)
            writer.finish(previous, facts)
        with Session(engine) as session:
            invoices = invoice_summaries(session, period)
            outcome = _recorded_so_far(_run_row(session, run_id))
        record_invoices(outcome, invoices)
        org_outcomes: list[dict[str, str]] = []
        cards: set[Card] = set()
        for result in rated:
            assert isinstance(result, dict)
            org_outcomes += result["outcomes"]
            cards |= {
                (card["id"], card["version"], card["content_hash"]) for card in result["cards"]
            }
        record_rating(outcome, [*org_outcomes, *outcome.org_outcomes], cards)
        outcome.status = RunStatus.SUCCEEDED
        finish(engine, run_id, outcome, now)
        with write_transaction(engine) as session:
            finish_unit(session, run_id, UnitStep.REPORT, "all", now())
    return Work(run_id)


def _recorded_so_far(run: BillingRun) -> RunOutcome:
    """What the run's row holds from its fetch and its finalize, to be written again at its end."""
    return RunOutcome(
        pages_fetched=run.pages_fetched,
        usage_checksum=run.usage_checksum,
        duplicate_results=run.duplicate_results,
        completeness=run.completeness,
        finalized_count=run.finalized_count,
        org_outcomes=json.loads(run.org_outcomes or "[]"),  # the held drafts, from the finalize
    )


def _fail(engine: Engine, run_id: int, step: UnitStep, unit: str, error: str, now: Clock) -> None:
    with write_transaction(engine) as session:
        finish_unit(session, run_id, step, unit, now(), error=error)
        run = _run_row(session, run_id)
        run.status, run.error, run.finished_at = RunStatus.FAILED, f"{step} {unit}: {error}", now()
        record_run_end(session, run, run.finished_at)  # webhook event: run.failed


def fail_unit(settings: Settings, run_id: int, step: UnitStep, unit: str, error: str) -> None:
    """Record that a unit failed for good (not transient): the run fails with its reason."""
    with ledger(settings) as engine:
        _fail(engine, run_id, step, unit, error, _now)


def sweep(settings: Settings, *, stalled_after: timedelta, now: Clock = _now) -> list[Work]:
    """The undone work of every distributed run with no sign of life for `stalled_after`."""
    found = []
    with ledger(settings) as engine:
        with Session(engine) as session:
            runs = stalled_runs(session, now() - stalled_after)
        for run_id in runs:
            with write_transaction(engine) as session:
                run = _run_row(session, run_id)
                run.heartbeat_at = now()
                stage = run.stage
                undone = {
                    step: [task.unit for task in undone_units(session, run_id, step)]
                    for step in UnitStep
                }
            publishing = stage == RunStage.PUBLISHING
            work = Work(
                run_id,
                fetch=stage == RunStage.FETCHING and bool(undone[UnitStep.FETCH]),
                rate=tuple(undone[UnitStep.RATE]) if stage == RunStage.RATING else (),
                render=tuple(int(u) for u in undone[UnitStep.RENDER]) if publishing else (),
                email=tuple(
                    int(u) for u in undone[UnitStep.EMAIL] if u not in undone[UnitStep.RENDER]
                )
                if publishing
                else (),
                report=stage == RunStage.REPORTING,
            )
            found.append(work | advance(settings, run_id, now=now))
    return found


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands: its stage and, per stage, units done out of units known."""

    run_id: int
    period: str
    status: str
    stage: str | None
    done: dict[str, int]
    total: dict[str, int]
    problems: int
    error: str | None

    def describe(self) -> str:
        parts = [f"{name} {self.done.get(name, 0)}/{count}" for name, count in self.total.items()]
        return f"run {self.run_id} {self.status}, {self.stage or '-'}: " + ", ".join(parts)


def run_progress(settings: Settings, run_id: int) -> RunProgress:
    """A run's progress read from the database (what `billing runs show` and the CLI print)."""
    with ledger(settings, migrate=False) as engine, Session(engine) as session:
        run = _run_row(session, run_id)
        counts = stage_counts(session, run_id)
        return RunProgress(
            run_id=run_id,
            period=run.period,
            status=run.status,
            stage=run.stage,
            done={step: c.get(UnitStatus.DONE, 0) for step, c in counts.items()},
            total={step: sum(c.values()) for step, c in counts.items()},
            problems=sum(
                c.get(UnitStatus.FAILED, 0) + c.get(UnitStatus.PARKED, 0) for c in counts.values()
            ),
            error=run.error,
        )
