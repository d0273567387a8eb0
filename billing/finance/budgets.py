"""Budgets: the daily month-to-date check (one fetch for all orgs, priced like the close,
nothing stored as an invoice), its alerts by email and webhook, and spend against budget."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from billing.budgets import (
    Budget,
    CentreOf,
    SpendLine,
    crossed,
    invoiced_spend,
    linear_forecast,
    rated_spend,
    scope_spend,
    spend_of,
    used_percent,
)
from billing.catalog.budgets import Budgets, load_budgets
from billing.close.fetch import http_client, usage_client
from billing.close.inline import fetch_usage
from billing.close.preflight import (
    check_api_key,
    check_email_settings,
    check_locale,
    check_output_folder,
    check_templates,
    check_webhook_endpoints,
)
from billing.close.pricing import Pricing, load_pricing
from billing.close.publish import load_cost_centre_map
from billing.config import Settings
from billing.db.budgets import (
    Measured,
    Reached,
    alert_rows,
    fired,
    pending_emails,
    record_alert,
    settle_email,
    spend_rows,
    store_spend,
)
from billing.db.engine import ledger
from billing.db.locks import write_transaction
from billing.db.period_reads import iter_statements
from billing.email.messages import BudgetAlertNotice, build_budget_alert
from billing.email.outbox import letterhead_of
from billing.email.transports import open_transport
from billing.errors import ConfigError
from billing.periods import BillingPeriod
from billing.rating import rate_org
from billing.statements.files import period_folder
from billing.statements.pdf import template_environment
from billing.states import AlertEmailStatus, BudgetScope

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
SCOPE_WORDS = {
    BudgetScope.ORG: "org",
    BudgetScope.COST_CENTRE: "cost centre",
    BudgetScope.API_KEY: "API key",
}


def _utc_now() -> datetime:
    return datetime.now(UTC)


def threshold_text(percent: Decimal) -> str:
    """A threshold as stored and shown: "80", "12.5"."""
    return format(percent.normalize(), "f")


def budgets_of(settings: Settings) -> Budgets:
    """The budgets file; a clear error when BILLING_BUDGETS is unset."""
    if settings.budgets is None:
        raise ConfigError(
            "BILLING_BUDGETS is unset: there are no budgets to check; set it to a budgets "
            "file (see examples/budgets.yaml)"
        )
    return load_budgets(settings.budgets)


def cost_centre_of(settings: Settings) -> CentreOf | None:
    """Each line's direct cost centre by BILLING_COST_CENTRES (None when unset)."""
    if settings.cost_centres is None:
        return None
    centres = load_cost_centre_map(settings)
    return lambda org_id, api_key_id, user_id: centres.centre_for(org_id, api_key_id, user_id)[0]


@dataclass
class BudgetCheck:
    """What one month-to-date check found and did."""

    period: str
    measured_at: datetime
    usage_results: int = 0
    measured: list[Measured] = field(default_factory=list)
    fired: list[Reached] = field(default_factory=list)
    emails_sent: int = 0
    emails_failed: int = 0


def month_to_date_spend(
    settings: Settings, pricing: Pricing, http: httpx.Client | None = None
) -> tuple[list[SpendLine], int]:
    """Every org's usage so far in the pricing's period, fetched once and priced with the
    close's rate cards, directory and rating (no minimum top-up: a commitment, not spend); the
    caller has checked the API key."""
    query = pricing.usage_query((), settings.mka1_bucket_width, settings.mka1_group_by_extra)
    own = http is None
    client_http = http_client(settings) if http is None else http
    try:
        aggregate, _pages = fetch_usage(usage_client(settings, client_http), query, log.debug)
    finally:
        if own:
            client_http.close()
    lines: list[SpendLine] = []
    for org_id in sorted(aggregate.by_org):
        account = pricing.account_for(org_id)
        invoice = rate_org(account, pricing.card_for(account), aggregate.by_org[org_id])
        lines.extend(rated_spend(invoice))
    return lines, aggregate.report.usage_results


def _contacts(
    budget: Budget, directory_contacts: Callable[[str], tuple[str, ...]]
) -> tuple[str, ...]:
    if budget.contacts or budget.scope != BudgetScope.ORG:
        return budget.contacts
    return directory_contacts(budget.scope_id)


def check_budgets(
    settings: Settings,
    *,
    period: BillingPeriod | None = None,
    now: Clock = _utc_now,
    http: httpx.Client | None = None,
) -> BudgetCheck:
    """Price the period's usage so far (the running month by default), store each budget's
    spend and forecast, and fire each threshold reached once per period and scope: an alert
    row and a `budget.threshold_reached` event in one transaction, then the alert emails."""
    budgets = budgets_of(settings)
    started = now()
    chosen = period or BillingPeriod.containing(started)
    pricing = load_pricing(settings, chosen)
    centre_of = cost_centre_of(settings)
    # What an alert needs before one is written (it is emailed once written): nothing is
    # fetched while a setting, template or folder is wrong.
    check_api_key(settings)
    check_locale(settings.locale, pricing)
    check_templates(settings.templates_dir)
    check_email_settings(settings)
    check_webhook_endpoints(settings)
    if settings.email_backend == "file":
        check_output_folder(settings.output_dir, chosen)
    lines, results = month_to_date_spend(settings, pricing, http)
    spend = scope_spend(lines, centre_of)
    check = BudgetCheck(str(chosen), started, results)
    for budget in budgets:
        spent = spend_of(budget, spend)
        forecast = linear_forecast(spent, budget.currency, chosen.start, chosen.end, started)
        measured = Measured(
            budget.scope, budget.scope_id, budget.currency, budget.amount, spent, forecast
        )
        check.measured.append(measured)
    with ledger(settings) as engine:
        with write_transaction(engine) as session:
            store_spend(session, str(chosen), check.measured, started, results)
            done = fired(session, str(chosen))
            for budget, measured in zip(budgets, check.measured, strict=True):
                already = [Decimal(t) for t in done.get((str(budget.scope), budget.scope_id), ())]
                for threshold in crossed(budget, measured.spend, already):
                    text = threshold_text(threshold)
                    contacts = _contacts(budget, lambda org_id: pricing.account_for(org_id).emails)
                    reached = Reached(measured, text, contacts)
                    if record_alert(session, str(chosen), reached, started):
                        check.fired.append(reached)
        sent, failed = send_alert_emails(settings, engine)
    check.emails_sent, check.emails_failed = sent, failed
    return check


# Sends of one alert email before it is marked failed.
MAX_ALERT_SENDS = 5


def send_alert_emails(settings: Settings, engine: Engine) -> tuple[int, int]:
    """Email every alert still pending (from this check or an earlier one that could not
    send), each to its scope's contacts; returns (sent, failed for now)."""
    with Session(engine) as session:
        pending = pending_emails(session)
    if not pending:
        return 0, 0
    environment = template_environment(settings.templates_dir, settings.locale)
    letterhead = letterhead_of(settings)
    sent = failed = 0
    transport = open_transport(settings, period_folder(settings.output_dir, pending[0].period))
    try:
        for alert in pending:
            notice = BudgetAlertNotice(
                period=alert.period,
                scope=SCOPE_WORDS[BudgetScope(alert.scope)],
                scope_id=alert.scope_id,
                threshold=alert.threshold,
                currency=alert.currency,
                budget=alert.budget_amount,
                spend=alert.spend,
                forecast=alert.forecast,
                fired_at=alert.fired_at,
                recipients=tuple(alert.email_to.split("; ")),
            )
            message = build_budget_alert(notice, environment, letterhead)
            name = f"budget-{alert.period}-{alert.scope}-{alert.scope_id}-{alert.threshold}"
            result = transport.deliver(message, name)
            if result.status == "sent":
                status, sent = AlertEmailStatus.SENT, sent + 1
            else:
                failed += 1
                last_try = alert.email_attempts + 1 >= MAX_ALERT_SENDS
                status = AlertEmailStatus.FAILED if last_try else AlertEmailStatus.PENDING
            assert alert.id is not None
            with write_transaction(engine) as session:
                settle_email(session, alert.id, status, result.reply or "")
    finally:
        transport.close()
    return sent, failed


@dataclass(frozen=True)
class BudgetStatus:
    """One budget of a period: the last month-to-date spend measured (None: not yet), its
    linear forecast, the thresholds that fired, and, once the period has live invoices, the
    same spend on them and the difference (late usage the check did not see)."""

    budget: Budget
    spend: Decimal | None
    forecast: Decimal | None
    measured_at: datetime | None
    fired: tuple[str, ...]
    invoiced: Decimal | None = None

    @property
    def used_percent(self) -> Decimal | None:
        return None if self.spend is None else used_percent(self.spend, self.budget.amount)

    @property
    def difference(self) -> Decimal | None:
        """Invoiced less the last month-to-date spend (late usage when positive)."""
        if self.invoiced is None or self.spend is None:
            return None
        return self.invoiced - self.spend


def budget_status(settings: Settings, engine: Engine, period: BillingPeriod) -> list[BudgetStatus]:
    """Every budget of BILLING_BUDGETS for a period, in file order, with what the ledger holds:
    the latest check's spend and forecast, the alerts, and the invoiced spend of a closed
    period (its live invoices' usage lines, counted as the check counts them)."""
    budgets = budgets_of(settings)
    centre_of = cost_centre_of(settings)
    with Session(engine) as session:
        measured = {
            (row.scope, row.scope_id, row.currency): row for row in spend_rows(session, str(period))
        }
        alerts: dict[tuple[str, str], list[str]] = {}
        for alert in alert_rows(session, str(period)):
            alerts.setdefault((alert.scope, alert.scope_id), []).append(alert.threshold)
    lines = [
        line for statement in iter_statements(engine, period) for line in invoiced_spend(statement)
    ]
    invoiced = scope_spend(lines, centre_of) if lines else None
    statuses = []
    for budget in budgets:
        row = measured.get((str(budget.scope), budget.scope_id, budget.currency))
        statuses.append(
            BudgetStatus(
                budget,
                None if row is None else row.spend,
                None if row is None else row.forecast,
                None if row is None else row.measured_at,
                tuple(alerts.get((str(budget.scope), budget.scope_id), [])),
                None if invoiced is None else spend_of(budget, invoiced),
            )
        )
    return statuses
