"""The ledger's reads and writes: runs, invoices replaced per period in one transaction, numbers."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import or_, select, update
from sqlmodel import Session, SQLModel, col

from billing.db.tables import (
    BillingRun,
    Invoice,
    InvoiceCharge,
    InvoiceDailyUsage,
    InvoiceLine,
)
from billing.db.webhooks import record_run_end
from billing.domain import (
    DailyUsage,
    RatingReport,
    Statement,
    StatementCharge,
    StatementLine,
)
from billing.periods import BillingPeriod
from billing.states import InvoiceStatus, RunStatus


def start_run(
    session: Session,
    period: BillingPeriod,
    trigger: str,
    upstream_url: str,
    now: datetime,
    *,
    request_params: str | None = None,
    rerated_from_run_id: int | None = None,
    operation: str = "close",
    started_by: str = "",
    mode: str = "local",
    stage: str | None = None,
) -> int:
    """Record that a run has begun; committed at once so a failure is still on record."""
    run = BillingRun(
        period=str(period),
        status=RunStatus.RUNNING,
        trigger=trigger,
        operation=operation,
        started_by=started_by,
        mode=mode,
        stage=stage,
        heartbeat_at=now if mode == "distributed" else None,
        started_at=now,
        upstream_url=upstream_url,
        request_params=request_params,
        rerated_from_run_id=rerated_from_run_id,
    )
    session.add(run)
    session.commit()
    assert run.id is not None
    return run.id


@dataclass
class RunOutcome:
    """How far a run got; filled in stage by stage and written when the run ends."""

    status: str = RunStatus.RUNNING
    pages_fetched: int = 0
    report: RatingReport | None = None
    invoice_count: int = 0
    error: str | None = None
    usage_checksum: str | None = None
    duplicate_results: int = 0
    completeness: str | None = None
    rate_cards: list[dict[str, str]] = field(default_factory=list)
    totals: dict[str, str] = field(default_factory=dict)
    finalized_count: int = 0
    org_outcomes: list[dict[str, str]] = field(default_factory=list)

    @property
    def corrections_count(self) -> int:
        return sum(1 for outcome in self.org_outcomes if outcome["action"] == "corrected")


DISTRIBUTED_RUN_ABANDONED = timedelta(hours=6)


def running_runs(session: Session, period: str) -> list[BillingRun]:
    return list(
        session.execute(
            select(BillingRun)
            .where(col(BillingRun.period) == period, col(BillingRun.status) == RunStatus.RUNNING)
            .order_by(col(BillingRun.id))
        )
        .scalars()
        .all()
    )


def describe_running_run(session: Session, period: str) -> str:
    """' (run 14, a close started 06:59:01 UTC by ops@host via cli)', or '' when none is."""
    runs = running_runs(session, period)
    if not runs:
        return ""
    run = runs[-1]
    return (
        f" (run {run.id}, a {run.operation} started {run.started_at:%Y-%m-%d %H:%M:%S} UTC"
        f" by {run.started_by or 'unknown'} via {run.trigger})"
    )


def interrupt_running_runs(session: Session, period: str, now: datetime) -> list[int]:
    """Mark the period's dead `running` runs as interrupted: called by the lock holder, so the
    processes of local runs are gone. A distributed run lives on its workers: it counts as dead
    only after DISTRIBUTED_RUN_ABANDONED without a sign of life. Returns their ids."""
    ids = [
        run.id
        for run in running_runs(session, period)
        if run.id is not None
        and (
            run.mode != "distributed"
            or run.heartbeat_at is None
            or run.heartbeat_at < now - DISTRIBUTED_RUN_ABANDONED
        )
    ]
    if ids:
        session.execute(
            update(BillingRun)
            .where(col(BillingRun.id).in_(ids))
            .values(
                status=RunStatus.INTERRUPTED,
                finished_at=now,
                error="the process stopped before the run finished; a later run took over",
            )
        )
    return ids


def finish_run(session: Session, run_id: int, outcome: RunOutcome, now: datetime) -> None:
    """Record how a run ended."""
    values: dict[str, object] = {
        "status": outcome.status,
        "finished_at": now,
        "pages_fetched": outcome.pages_fetched,
        "invoice_count": outcome.invoice_count,
        "error": outcome.error,
        "usage_checksum": outcome.usage_checksum,
        "duplicate_results": outcome.duplicate_results,
        "completeness": outcome.completeness,
        "rate_cards": json.dumps(outcome.rate_cards) if outcome.rate_cards else None,
        "totals": json.dumps(outcome.totals) if outcome.totals else None,
        "finalized_count": outcome.finalized_count,
        "corrections_count": outcome.corrections_count,
        "org_outcomes": json.dumps(outcome.org_outcomes) if outcome.org_outcomes else None,
    }
    if outcome.report is not None:
        values["usage_results"] = outcome.report.usage_results
        values["results_without_memory"] = outcome.report.results_without_memory
    session.execute(update(BillingRun).where(col(BillingRun.id) == run_id).values(**values))
    ended = session.get(BillingRun, run_id)
    if ended is not None:
        record_run_end(session, ended, now)  # webhook event: run.succeeded / run.failed
    session.commit()


# Linear whatever the planner knows (inside the store transaction it has no statistics for the
# rows just loaded): the run's snapshot is summed per org and day in one pass, and each sum finds
# its org's draft by index (a join of drafts to the snapshot became a nested loop rescanning the
# whole snapshot once per invoice). MATERIALIZED looks each draft up once per sum; the days a
# draft has already are skipped by the unique index, which no plan can turn into a rescan.
RowT = TypeVar("RowT")


def _rows_by_invoice(
    session: Session, table: type[SQLModel], row: type[RowT], ids: list[int], order: str
) -> dict[int, list[RowT]]:
    """One query: the `row` dataclass's fields of every row of `table` for these invoices."""
    columns = table.__table__.c  # type: ignore[attr-defined]
    wanted = [columns[field.name] for field in fields(row)]  # type: ignore[arg-type]
    query = (
        select(columns.invoice_id, *wanted)
        .where(columns.invoice_id.in_(ids))
        .order_by(columns.invoice_id, columns[order])
    )
    grouped: dict[int, list[RowT]] = defaultdict(list)
    for owner, *values in session.execute(query):
        grouped[owner].append(row(*values))
    return grouped


def _daily_usage(session: Session, ids: list[int]) -> dict[int, list[DailyUsage]]:
    columns = InvoiceDailyUsage.__table__.c  # type: ignore[attr-defined]
    query = (
        select(columns.invoice_id, columns.day_start, columns.duration_ms)
        .where(columns.invoice_id.in_(ids))
        .order_by(columns.invoice_id, columns.day_start)
    )
    daily: dict[int, list[DailyUsage]] = defaultdict(list)
    for invoice_id, day_start, duration_ms in session.execute(query):
        day = datetime.fromtimestamp(day_start, UTC).date()
        daily[invoice_id].append(DailyUsage(day, int(duration_ms)))
    return daily


def invoice_by_reference(session: Session, reference: str, *, lock: bool = False) -> Invoice | None:
    """The invoice a reference names: a number (INV-2026-000123) or, all digits, a draft's id
    (drafts have no number); with `lock` its row is locked until the transaction ends. None
    when there is none: the caller says what to give instead."""
    conditions = [col(Invoice.number) == reference]
    if reference.isdigit():
        conditions.append(col(Invoice.id) == int(reference))
    query = select(Invoice).where(or_(*conditions))
    found: Invoice | None = (
        session.execute(query.with_for_update() if lock else query).scalars().first()
    )
    return found


def load_statements(
    session: Session, period: BillingPeriod, org_id: str | None = None
) -> list[Statement]:
    """Read a period's live (not void) invoices back as statements: four queries whatever the
    count, no N+1."""
    query = select(Invoice).where(
        col(Invoice.period) == str(period), col(Invoice.status) != InvoiceStatus.VOID
    )
    if org_id is not None:
        query = query.where(col(Invoice.org_id) == org_id)
    invoices = session.execute(query.order_by(col(Invoice.org_id))).scalars().all()
    return statements_for(session, period, invoices)


def statements_for(
    session: Session, period: BillingPeriod, invoices: Sequence[Invoice]
) -> list[Statement]:
    """These invoices of a period as statements, in the order given: three more queries."""
    if not invoices:
        return []
    ids = [invoice.id for invoice in invoices if invoice.id is not None]
    charges = _rows_by_invoice(session, InvoiceCharge, StatementCharge, ids, "position")
    lines = _rows_by_invoice(session, InvoiceLine, StatementLine, ids, "id")
    daily = _daily_usage(session, ids)
    replaced = _numbers_of(session, [i.replaces_invoice_id for i in invoices])
    return [
        Statement(
            invoice_id=invoice.id or 0,
            invoice_number=invoice.number or "DRAFT",
            org_id=invoice.org_id,
            org_name=invoice.org_name,
            emails=tuple(email for email in invoice.contact_emails.split(", ") if email),
            period=invoice.period,
            period_start=period.start,
            period_end=period.end,
            currency=invoice.currency,
            issued_at=invoice.issued_at,
            rate_card_id=invoice.rate_card_id,
            rate_card_version=invoice.rate_card_version,
            charges=tuple(charges[invoice.id or 0]),
            lines=tuple(lines[invoice.id or 0]),
            total=invoice.total,
            billing_address=invoice.billing_address,
            due_at=invoice.due_at,
            daily_usage=tuple(daily[invoice.id or 0]),
            draft=invoice.status == InvoiceStatus.DRAFT,
            status=invoice.status,
            replaces=replaced.get(invoice.replaces_invoice_id or 0, ""),
            purchase_order=invoice.purchase_order,
            customer_tax_id=invoice.customer_tax_id,
            customer_country=invoice.customer_country,
        )
        for invoice in invoices
    ]


def _numbers_of(session: Session, invoice_ids: Sequence[int | None]) -> dict[int, str]:
    """The numbers of these invoices (the ones replaced by a batch of statements), one query."""
    wanted = sorted({invoice_id for invoice_id in invoice_ids if invoice_id is not None})
    if not wanted:
        return {}
    query = select(col(Invoice.id), col(Invoice.number)).where(col(Invoice.id).in_(wanted))
    return {invoice_id: number or "" for invoice_id, number in session.execute(query)}
