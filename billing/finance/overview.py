"""A period, an org and a run at a glance, as the REST API and the console show them: states
and totals, the cost allocation, an org's invoices and balance, a run's audit and progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from billing.catalog import load_org_directory
from billing.close.publish import load_cost_centre_map
from billing.config import Settings
from billing.db.period_reads import iter_statements
from billing.db.review import held_drafts, latest_review_deadline, open_window
from billing.db.runtasks import stage_counts
from billing.db.tables import BillingRun, CreditEntry, EmailDelivery, Invoice
from billing.errors import NotFound
from billing.finance.credits import show as credit_ledger
from billing.finance.invoices import RunDetail, read_run_detail, read_runs
from billing.finance.lookup import InvoiceListRow, invoice_page
from billing.money import at_minor_units
from billing.periods import BillingPeriod
from billing.statements.allocation import AllocationRow, allocate
from billing.states import DeliveryStatus, InvoiceStatus, UnitStatus

# Runs a period summary lists, newest first.
SUMMARY_RUNS = 20
# Invoices an org's overview lists, newest period first.
ORG_INVOICES = 120


def _sum_by_currency(pairs: list[tuple[str, Decimal]]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for currency, amount in pairs:
        totals[currency] = totals.get(currency, Decimal(0)) + amount
    return {currency: at_minor_units(total, currency) for currency, total in sorted(totals.items())}


@dataclass(frozen=True)
class PeriodSummary:
    """A month's state: invoices per state (and drafts on hold), live totals per currency
    (summary.csv's), emails per state, its runs, its review deadline and whether it is open."""

    period: str
    counts: dict[str, int]
    totals: dict[str, Decimal]
    emails: dict[str, int]
    runs: list[BillingRun]
    review_deadline: datetime | None
    review_open: bool


def period_summary(engine: Engine, period: BillingPeriod, now: datetime) -> PeriodSummary:
    in_period = col(Invoice.period) == str(period)
    with Session(engine) as session:
        states = dict(
            session.execute(
                select(col(Invoice.status), func.count())
                .where(in_period)
                .group_by(col(Invoice.status))
            ).all()
        )
        counts = {state.value: int(states.get(state.value, 0)) for state in InvoiceStatus}
        counts["held"] = len(held_drafts(session, in_period))
        live = session.execute(
            select(col(Invoice.currency), col(Invoice.total)).where(
                in_period, col(Invoice.status) != InvoiceStatus.VOID
            )
        ).all()
        mails = dict(
            session.execute(
                select(col(EmailDelivery.status), func.count())
                .where(col(EmailDelivery.period) == str(period))
                .group_by(col(EmailDelivery.status))
            ).all()
        )
        deadline = latest_review_deadline(session, period)
        window = open_window(session, period, now)
    return PeriodSummary(
        period=str(period),
        counts=counts,
        totals=_sum_by_currency([(str(c), Decimal(t)) for c, t in live]),
        emails={state.value: int(mails.get(state.value, 0)) for state in DeliveryStatus},
        runs=read_runs(engine, period=period, limit=SUMMARY_RUNS),
        review_deadline=deadline,
        review_open=window is not None,
    )


def recent_periods(engine: Engine, now: datetime, limit: int = 24) -> list[PeriodSummary]:
    """The newest `limit` months that have invoices or runs, newest first, each summarised."""
    with Session(engine) as session:
        months = {
            str(period)
            for query in (
                select(col(Invoice.period)).distinct(),
                select(col(BillingRun.period)).distinct(),
            )
            for (period,) in session.execute(query)
        }
    chosen = sorted(months, reverse=True)[:limit]
    return [period_summary(engine, BillingPeriod.parse(month), now) for month in chosen]


@dataclass(frozen=True)
class PeriodAllocation:
    """The period's cost by cost centre, org, API key and user, with the shared rules applied
    (allocation.csv's rows), and its totals per currency: the live invoices' totals less tax,
    plus the fixed overheads of the shared rules (docs/CHARGEBACK.md)."""

    period: str
    rows: list[AllocationRow]
    totals: dict[str, Decimal]


def period_allocation(
    settings: Settings, engine: Engine, period: BillingPeriod
) -> PeriodAllocation:
    """Every live statement's lines regrouped by BILLING_COST_CENTRES, read 100 invoices at a
    time, by the same `allocate` as allocation.csv; in its order (currency, cost centre with
    `unallocated` last, org, then each centre's shares)."""
    centres = load_cost_centre_map(settings)
    rows = allocate(iter_statements(engine, period), centres)
    totals = _sum_by_currency([(row.currency, row.billed_cost) for row in rows])
    return PeriodAllocation(str(period), rows, totals)


@dataclass(frozen=True)
class OrgOverview:
    """An org: who it is (the directory's entry, else its latest invoice), its invoices over
    time (newest first), its credit balance per currency."""

    org_id: str
    name: str
    listed: bool
    contacts: tuple[str, ...]
    billing_address: str
    invoices: list[InvoiceListRow]
    balances: dict[str, Decimal]
    more_invoices: bool = False


def org_overview(settings: Settings, engine: Engine, org_id: str) -> OrgOverview:
    """NotFound when the org is neither in the directory nor in the ledger."""
    account = load_org_directory(settings.orgs).orgs.get(org_id)
    page = invoice_page(engine, org_id=org_id, limit=ORG_INVOICES)
    with Session(engine) as session:
        credited = session.execute(
            select(col(CreditEntry.id)).where(col(CreditEntry.org_id) == org_id).limit(1)
        ).first()
        latest = (
            session.execute(
                select(Invoice)
                .where(col(Invoice.org_id) == org_id)
                .order_by(col(Invoice.period).desc(), col(Invoice.id).desc())
                .limit(1)
            )
            .scalars()
            .first()
        )
    if account is None and latest is None and credited is None:
        raise NotFound(
            f"no org {org_id!r}: it is not in the org directory and has no invoice or credit "
            "in the ledger"
        )
    balances = {
        currency: at_minor_units(amount, currency)
        for currency, amount in credit_ledger(settings, org_id).balances.items()
    }
    if account is not None:
        name, contacts, address = account.name, account.emails, account.billing_address
    elif latest is not None:
        contacts = tuple(email for email in latest.contact_emails.split(", ") if email)
        name, address = latest.org_name, latest.billing_address
    else:
        name, contacts, address = org_id, (), ""
    return OrgOverview(
        org_id=org_id,
        name=name,
        listed=account is not None,
        contacts=tuple(contacts),
        billing_address=address,
        invoices=page.rows,
        balances=balances,
        more_invoices=page.next_key is not None,
    )


@dataclass(frozen=True)
class StepProgress:
    """One step of a distributed run: units done, to do, failed or parked."""

    done: int
    total: int
    problems: int


@dataclass(frozen=True)
class RunView:
    """A run's audit (the CLI's `runs show`), its per-step progress when it ran on the
    workers, and the warnings finance should read."""

    detail: RunDetail
    steps: dict[str, StepProgress] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def run_view(engine: Engine, run_id: int) -> RunView:
    detail = read_run_detail(engine, run_id)
    with Session(engine) as session:
        counts = stage_counts(session, run_id)
    steps = {
        step: StepProgress(
            done=counted.get(UnitStatus.DONE, 0),
            total=sum(counted.values()),
            problems=counted.get(UnitStatus.FAILED, 0) + counted.get(UnitStatus.PARKED, 0),
        )
        for step, counted in sorted(counts.items())
    }
    return RunView(detail, steps, run_warnings(detail.run))


def run_warnings(run: BillingRun) -> list[str]:
    """What summary.pdf's warnings say of a run: results without memory, duplicates dropped,
    a completeness check that did not pass, the error it ended with."""
    warnings = []
    if run.results_without_memory:
        warnings.append(
            f"{run.results_without_memory} usage results had no memory figure "
            "(billed as 0 GiB-hours)"
        )
    if run.duplicate_results:
        warnings.append(f"{run.duplicate_results} duplicate usage results were dropped")
    if run.completeness not in (None, "passed"):
        warnings.append(f"completeness check: {run.completeness}")
    if run.error:
        warnings.append(f"error: {run.error}")
    return warnings
