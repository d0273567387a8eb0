"""The distributed close as steps a queue can run anywhere: each step works on ids, is safe to
run twice, and says what should run next; completion is decided from the database.

    begin ─▶ fetch ─▶ rate batch × N ─▶ (advance: finalize) ─▶ render × M ─▶ email × M ─▶ report

Celery tasks (workers/tasks.py) call these and enqueue the returned `Work`; nothing here
imports Celery. A periodic sweep finds runs whose messages were lost and returns their
undone work.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from billing.close.fetch import (
    check_completeness,
    describe_query,
    fetch_and_snapshot,
    http_client,
    usage_client,
)
from billing.close.pricing import load_pricing
from billing.close.publish import (
    load_cost_centre_map,
    output_folder,
    render_documents,
    report_writer,
    run_facts,
    write_documents,
)
from billing.close.steps import (
    CloseOptions,
    cards_used,
    orgs_to_revisit,
    totals_by_currency,
    who_started,
)
from billing.config import Settings
from billing.db.engine import ledger_engine
from billing.db.ledger import finalize_drafts, store_period
from billing.db.locks import PeriodBusy, hold_period, write_transaction
from billing.db.outbox import PENDING, SENDING
from billing.db.period_reads import invoice_summaries, iter_statements, period_org_totals
from billing.db.repository import (
    RunOutcome,
    describe_running_run,
    finish_run,
    load_statements,
    start_run,
)
from billing.db.runtasks import (
    DONE,
    EMAIL,
    FAILED,
    FETCH,
    PARKED,
    RATE,
    RENDER,
    REPORT,
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
from billing.domain import RatingReport, Statement, UsageRecord
from billing.email.messages import StatementDocuments
from billing.email.outbox import OutboxSender
from billing.errors import BillingError
from billing.periods import BillingPeriod
from billing.rating import rate_orgs
from billing.statements.files import period_folder, safe_stem
from billing.statements.pdf import StatementRenderer, shared_renderer

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# Stages of a distributed run, in order (billing_run.stage).
FETCHING, RATING, PUBLISHING, REPORTING = "fetching", "rating", "publishing", "reporting"


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


class _Ledger:
    """An engine for one step, disposed at its end."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: Engine = ledger_engine(settings.database_url, migrate=settings.auto_migrate)

    def __enter__(self) -> _Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.engine.dispose()


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
    query = pricing.usage_query(org_ids, settings.mka1_bucket_width, settings.mka1_group_by_extra)
    params = json.loads(describe_query(settings.mka1_base_url, query))
    options = options or CloseOptions()
    params["close_options"] = {"draft": options.draft, "reissue": options.reissue}
    with _Ledger(settings) as ledger, hold_period(ledger.engine, str(period), 0, log.info, now):
        with Session(ledger.engine) as session:
            try:
                run_id = start_run(
                    session,
                    period,
                    trigger,
                    settings.mka1_base_url,
                    now(),
                    request_params=json.dumps(params, sort_keys=True),
                    operation="draft" if options.draft else "close",
                    started_by=who_started(),
                    mode="distributed",
                    stage=FETCHING,
                )
            except IntegrityError:
                session.rollback()
                raise PeriodBusy(
                    f"another run of {period} is under way"
                    f"{describe_running_run(session, str(period))}; it will finish by "
                    "itself (billing runs show RUN)"
                ) from None
        with write_transaction(ledger.engine) as session:
            add_units(session, run_id, FETCH, [("all", None)], now())
    return run_id


def _run_row(session: Session, run_id: int) -> BillingRun:
    run = session.get(BillingRun, run_id)
    if run is None:
        raise BillingError(f"no billing run {run_id}")
    return run


def _begin_run_unit(
    session: Session, run_id: int, stage: str, cap: int, now: Clock
) -> BillingRun | None:
    """Count a delivery of a run's one unit of `stage`; the run when there is work to do."""
    run = _run_row(session, run_id)
    if run.status != "running" or begin_unit(session, run_id, stage, "all", cap, now()) is None:
        return None
    return run


def _options(run: BillingRun) -> tuple[CloseOptions, tuple[str, ...]]:
    params = json.loads(run.request_params or "{}")
    chosen = params.get("close_options", {})
    options = CloseOptions(draft=bool(chosen.get("draft")), reissue=bool(chosen.get("reissue")))
    return options, tuple(params.get("org_ids") or ())


def fetch(settings: Settings, run_id: int, *, cap: int = 5, now: Clock = _now) -> Work:
    """Fetch the run's usage into its snapshot (again from scratch on a redelivery), check
    it, and split the orgs to rate into batches."""
    with _Ledger(settings) as ledger:
        engine = ledger.engine
        with write_transaction(engine) as session:
            run = _begin_run_unit(session, run_id, FETCH, cap, now)
            if run is None:
                return Work(run_id)
            period = BillingPeriod.parse(run.period)
            _options_unused, org_ids = _options(run)
            session.execute(delete(UsageSnapshotRow).where(col(UsageSnapshotRow.run_id) == run_id))
        pricing = load_pricing(settings, period)
        query = pricing.usage_query(
            org_ids, settings.mka1_bucket_width, settings.mka1_group_by_extra
        )
        try:
            with http_client(settings) as http:
                client = usage_client(settings, http)
                fetched = fetch_and_snapshot(client, query, engine, run_id, log.info)
                if settings.completeness_check:
                    check_completeness(client, query, fetched, log.info)
        except BillingError as error:
            if error.retryable:
                raise
            _fail(engine, run_id, FETCH, "all", str(error), now)
            return Work(run_id)
        orgs = _orgs_to_rate(engine, period, set(fetched.org_totals), org_ids)
        size = settings.rate_batch_orgs
        batches = [orgs[start : start + size] for start in range(0, len(orgs), size)]
        with write_transaction(engine) as session:
            run = _run_row(session, run_id)
            run.pages_fetched = fetched.pages
            run.usage_checksum = fetched.checksum
            run.duplicate_results = fetched.duplicate_results
            run.completeness = fetched.completeness
            run.usage_results = fetched.report.usage_results
            run.results_without_memory = fetched.report.results_without_memory
            run.batches_total = len(batches)
            run.stage = RATING
            run.heartbeat_at = now()
            add_units(session, run_id, RATE, [(str(n), b) for n, b in enumerate(batches)], now())
            finish_unit(session, run_id, FETCH, "all", now())
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
    with _Ledger(settings) as ledger:
        engine = ledger.engine
        with write_transaction(engine) as session:
            run = _run_row(session, run_id)
            task = begin_unit(session, run_id, RATE, unit, cap, now())
            if run.status != "running" or task is None:
                return Work(run_id)
            org_ids = tuple(json.loads(task.payload))
            period = BillingPeriod.parse(run.period)
            options, _scope = _options(run)
        pricing = load_pricing(settings, period)
        by_org: dict[str, list[UsageRecord]] = {}
        with Session(engine) as session:
            for record in iter_snapshot(session, run_id, org_ids=org_ids):
                by_org.setdefault(record.org_id, []).append(record)
        rated = list(
            rate_orgs(sorted(by_org.items()), pricing.account_for, pricing.card_for, RatingReport())
        )
        with write_transaction(engine) as session:
            stamp = now()
            outcomes = store_period(
                session,
                run_id=run_id,
                period=period,
                rated=rated,
                now=stamp,
                due_at=stamp + timedelta(days=settings.payment_terms_days),
                empty_invoice=pricing.empty_invoice,
                org_scope=set(org_ids),
                reissue=options.reissue,
            )
            result = {
                "outcomes": [dataclasses.asdict(outcome) for outcome in outcomes],
                "cards": cards_used(rated),
            }
            finish_unit(session, run_id, RATE, unit, stamp, result=result)
    return advance(settings, run_id, now=now)


def advance(settings: Settings, run_id: int, *, now: Clock = _now) -> Work:
    """Move the run on when its stage is complete, judged from the database: finalize once
    every batch is rated, report once every invoice is rendered and emailed."""
    with _Ledger(settings) as ledger, write_transaction(ledger.engine) as session:
        run = session.execute(
            select(BillingRun).where(col(BillingRun.id) == run_id).with_for_update()
        ).scalar_one()
        if run.status != "running":
            return Work(run_id)
        run.heartbeat_at = now()
        counts: dict[str, Counter[str]] = stage_counts(session, run_id)
        stuck = [
            f"{stage} {status}: {count}"
            for stage, states in counts.items()
            for status, count in states.items()
            if status in (PARKED, FAILED)
        ]
        if stuck:
            run.status, run.finished_at = "failed", now()
            run.error = run.error or (
                f"units that cannot finish ({', '.join(stuck)}): parked after too many "
                f"deliveries, or failed; billing runs show {run_id}"
            )
            return Work(run_id)
        if run.stage == RATING and counts.get(RATE, Counter())[DONE] >= run.batches_total:
            period = BillingPeriod.parse(run.period)
            options, org_ids = _options(run)
            if not options.draft:
                stamp = now()
                due = stamp + timedelta(days=settings.payment_terms_days)
                finalized = finalize_drafts(session, period, stamp, due, set(org_ids) or None)
                run.finalized_count = finalized.count
            invoices = _live_invoices(session, period, org_ids)
            run.invoice_count = len(invoices)
            run.stage = PUBLISHING
            add_units(session, run_id, RENDER, [(str(i), None) for i in invoices], now())
            add_units(session, run_id, EMAIL, [(str(i), None) for i in invoices], now())
            if not invoices:
                run.stage = REPORTING
                return Work(run_id, report=True)
            return Work(run_id, render=tuple(invoices))
        if run.stage == PUBLISHING:
            rendered = counts.get(RENDER, Counter())[DONE]
            emailed = counts.get(EMAIL, Counter())[DONE]
            if rendered >= run.invoice_count and emailed >= run.invoice_count:
                run.stage = REPORTING
                add_units(session, run_id, REPORT, [("all", None)], now())
                return Work(run_id, report=True)
        return Work(run_id)


def _live_invoices(session: Session, period: BillingPeriod, org_ids: tuple[str, ...]) -> list[int]:
    query = select(col(Invoice.id)).where(
        col(Invoice.period) == str(period), col(Invoice.status) != "void"
    )
    if org_ids:
        query = query.where(col(Invoice.org_id).in_(org_ids))
    return [int(i) for i in session.execute(query.order_by(col(Invoice.org_id))).scalars()]


def _statement(session: Session, invoice_id: int) -> Statement:
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        raise BillingError(f"no invoice {invoice_id}")
    period = BillingPeriod.parse(invoice.period)
    return next(
        s for s in load_statements(session, period, invoice.org_id) if s.invoice_id == invoice_id
    )


def _begin_invoice_unit(
    engine: Engine, run_id: int, stage: str, invoice_id: int, cap: int, now: Clock
) -> Statement | None:
    """Count a delivery of an invoice's unit; its statement when there is work to do."""
    with write_transaction(engine) as session:
        if begin_unit(session, run_id, stage, str(invoice_id), cap, now()) is None:
            return None
        return _statement(session, invoice_id)


def render_invoice(
    settings: Settings, run_id: int, invoice_id: int, *, cap: int = 5, now: Clock = _now
) -> Work:
    """Write one invoice's PDF and CSV (the same file names on every redelivery)."""
    unit = str(invoice_id)
    with _Ledger(settings) as ledger:
        engine = ledger.engine
        statement = _begin_invoice_unit(engine, run_id, RENDER, invoice_id, cap, now)
        if statement is None:
            return Work(run_id)
        folder = period_folder(settings.output_dir, statement.period)
        renderer = shared_renderer(settings)
        write_documents(folder, render_documents(renderer, statement))
        with write_transaction(engine) as session:
            finish_unit(session, run_id, RENDER, unit, now())
    return Work(run_id, email=(invoice_id,)) | advance(settings, run_id, now=now)


def email_invoice(
    settings: Settings, run_id: int, invoice_id: int, *, cap: int = 5, now: Clock = _now
) -> Work:
    """Send one invoice's pending statement deliveries through the outbox."""
    unit = str(invoice_id)
    with _Ledger(settings) as ledger:
        engine = ledger.engine
        statement = _begin_invoice_unit(engine, run_id, EMAIL, invoice_id, cap, now)
        if statement is None:
            return Work(run_id)
        with Session(engine) as session:
            pending = [
                int(i)
                for i in session.execute(
                    select(col(EmailDelivery.id)).where(
                        col(EmailDelivery.invoice_id) == invoice_id,
                        col(EmailDelivery.status).in_((PENDING, SENDING)),
                    )
                ).scalars()
            ]
        if pending and statement.status in ("finalized", "sent"):
            renderer = shared_renderer(settings)
            folder = period_folder(settings.output_dir, statement.period)
            with OutboxSender(
                settings,
                engine,
                BillingPeriod.parse(statement.period),
                renderer.environment,
                folder,
                delivery_ids=pending,
                now=now,
            ) as outbox:
                outbox.send_for(_written_documents(folder, statement, renderer))
        with write_transaction(engine) as session:
            finish_unit(session, run_id, EMAIL, unit, now())
    return advance(settings, run_id, now=now)


def _written_documents(
    folder: Path, statement: Statement, renderer: StatementRenderer
) -> StatementDocuments:
    """The statement files the render step wrote (a shared output folder), else render again."""
    stem = safe_stem(statement.org_id)
    pdf, csv = folder / f"{stem}.pdf", folder / f"{stem}.csv"
    if pdf.exists() and csv.exists():
        return StatementDocuments(statement, pdf.read_bytes(), csv.read_bytes(), stem)
    return render_documents(renderer, statement)


def report(settings: Settings, run_id: int, *, cap: int = 5, now: Clock = _now) -> Work:
    """Write the period's summary, run report and allocation; the run has succeeded."""
    with _Ledger(settings) as ledger:
        engine = ledger.engine
        with write_transaction(engine) as session:
            run = _begin_run_unit(session, run_id, REPORT, cap, now)
            if run is None:
                return Work(run_id)
            period = BillingPeriod.parse(run.period)
        with Session(engine) as session:
            previous = period_org_totals(session, period.previous())
            facts = run_facts(session, run_id, settings)
            rated = unit_results(session, run_id, RATE)
        folder = output_folder(settings, period, log.info)
        with report_writer(settings, folder, period, load_cost_centre_map(settings)) as writer:
            for statement in iter_statements(engine, period):
                writer.add(statement)
            writer.finish(previous, facts)
        with Session(engine) as session:
            invoices = invoice_summaries(session, period)
        outcome = RunOutcome(status="succeeded")
        with Session(engine) as session:
            run = _run_row(session, run_id)
            outcome.pages_fetched = run.pages_fetched
            outcome.usage_checksum = run.usage_checksum
            outcome.duplicate_results = run.duplicate_results
            outcome.completeness = run.completeness
            outcome.invoice_count = len(invoices)
            outcome.finalized_count = run.finalized_count
        outcome.totals = totals_by_currency(invoices)
        cards: dict[str, dict[str, str]] = {}
        for result in rated:
            assert isinstance(result, dict)
            outcome.org_outcomes += result["outcomes"]
            cards.update({card["content_hash"]: card for card in result["cards"]})
        outcome.rate_cards = sorted(cards.values(), key=lambda card: (card["id"], card["version"]))
        with Session(engine) as session:
            finish_run(session, run_id, outcome, now())
        with write_transaction(engine) as session:
            finish_unit(session, run_id, REPORT, "all", now())
    return Work(run_id)


def _fail(engine: Engine, run_id: int, stage: str, unit: str, error: str, now: Clock) -> None:
    with write_transaction(engine) as session:
        finish_unit(session, run_id, stage, unit, now(), error=error)
        run = _run_row(session, run_id)
        run.status, run.error, run.finished_at = "failed", f"{stage} {unit}: {error}", now()


def fail_unit(settings: Settings, run_id: int, stage: str, unit: str, error: str) -> None:
    """Record that a unit failed for good (not transient): the run fails with its reason."""
    with _Ledger(settings) as ledger:
        _fail(ledger.engine, run_id, stage, unit, error, _now)


def sweep(settings: Settings, *, stalled_after: timedelta, now: Clock = _now) -> list[Work]:
    """The undone work of every distributed run with no sign of life for `stalled_after`."""
    found = []
    with _Ledger(settings) as ledger:
        with Session(ledger.engine) as session:
            runs = stalled_runs(session, now() - stalled_after)
        for run_id in runs:
            with write_transaction(ledger.engine) as session:
                run = _run_row(session, run_id)
                run.heartbeat_at = now()
                stage = run.stage
                undone = {
                    name: [task.unit for task in undone_units(session, run_id, name)]
                    for name in (FETCH, RATE, RENDER, EMAIL, REPORT)
                }
            work = Work(
                run_id,
                fetch=stage == FETCHING and bool(undone[FETCH]),
                rate=tuple(undone[RATE]) if stage == RATING else (),
                render=tuple(int(u) for u in undone[RENDER]) if stage == PUBLISHING else (),
                email=tuple(int(u) for u in undone[EMAIL] if u not in undone[RENDER])
                if stage == PUBLISHING
                else (),
                report=stage == REPORTING,
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
    engine = ledger_engine(settings.database_url, migrate=False)
    try:
        with Session(engine) as session:
            run = _run_row(session, run_id)
            counts = stage_counts(session, run_id)
            return RunProgress(
                run_id=run_id,
                period=run.period,
                status=run.status,
                stage=run.stage,
                done={stage: c.get(DONE, 0) for stage, c in counts.items()},
                total={stage: sum(c.values()) for stage, c in counts.items()},
                problems=sum(c.get("failed", 0) + c.get("parked", 0) for c in counts.values()),
                error=run.error,
            )
    finally:
        engine.dispose()
