"""`billing budgets check|status`: the month-to-date check and spend against budget."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from billing.cli.console import (
    FormatOption,
    OutputFormat,
    emit_records,
    literal,
    load_settings,
    out,
)
from billing.cli.webhooks import deliver_after_command
from billing.periods import BillingPeriod
from billing.wording import plural

budgets_app = typer.Typer(
    help="Budgets: price month-to-date spend and alert on thresholds; spend against budget.",
    no_args_is_help=True,
)

PeriodOption = Annotated[
    str | None,
    typer.Option(
        "--period", metavar="PERIOD", help="The month, YYYY-MM (default: the running month)."
    ),
]
COLUMNS = (
    "scope",
    "scope_id",
    "currency",
    "budget",
    "spend",
    "used_percent",
    "forecast",
    "alerts",
    "measured_at",
    "invoiced",
    "difference",
)


def _period(text: str | None) -> BillingPeriod:
    return BillingPeriod.parse(text) if text else BillingPeriod.containing(datetime.now(UTC))


@budgets_app.command("check")
def check_command(period: PeriodOption = None) -> None:
    """Fetch the month's usage so far for every org, price it like the close (nothing is
    stored as an invoice), record each budget's spend and alert on thresholds reached (once
    per period, scope and threshold). Celery beat runs it daily."""
    from billing.finance.budgets import check_budgets

    settings = load_settings()
    check = check_budgets(settings, period=_period(period) if period else None)
    out.print(
        f"{check.period}: {plural(check.usage_results, 'usage result')} priced, "
        f"{plural(len(check.measured), 'budget')} measured at "
        f"{check.measured_at:%Y-%m-%d %H:%M} UTC"
    )
    for reached in check.fired:
        measured = reached.measured
        out.print(
            f"alert: {measured.scope} {literal(measured.scope_id)} reached "
            f"{reached.threshold}% ({measured.spend} of {measured.budget_amount} "
            f"{measured.currency})"
        )
    if check.emails_sent or check.emails_failed:
        out.print(f"alert emails: {check.emails_sent} sent, {check.emails_failed} to retry")
    deliver_after_command(settings)


@budgets_app.command("status")
def status_command(period: PeriodOption = None, output: FormatOption = OutputFormat.TABLE) -> None:
    """Every budget's last month-to-date spend, the percent used, a linear forecast to the
    month's end (spend so far x days in the month / days elapsed), the alerts that fired, and
    for a closed month the invoiced spend and the difference (late usage)."""
    from billing.db.engine import existing_ledger
    from billing.finance.budgets import budget_status

    settings = load_settings()
    chosen = _period(period)
    with existing_ledger(settings) as engine:
        rows = budget_status(settings, engine, chosen)
    records = [
        {
            "scope": str(row.budget.scope),
            "scope_id": row.budget.scope_id,
            "currency": row.budget.currency,
            "budget": format(row.budget.amount, "f"),
            "spend": None if row.spend is None else format(row.spend, "f"),
            "used_percent": None if row.used_percent is None else format(row.used_percent, "f"),
            "forecast": None if row.forecast is None else format(row.forecast, "f"),
            "alerts": ", ".join(f"{threshold}%" for threshold in row.fired),
            "measured_at": None
            if row.measured_at is None
            else row.measured_at.strftime("%Y-%m-%d %H:%M"),
            "invoiced": None if row.invoiced is None else format(row.invoiced, "f"),
            "difference": None if row.difference is None else format(row.difference, "f"),
        }
        for row in rows
    ]
    emit_records(
        output,
        COLUMNS,
        records,
        title=f"Budgets of {chosen}: {plural(len(rows), 'budget')}",
        shown_as={
            column: (lambda name: lambda record: record[name] or "-")(column) for column in COLUMNS
        },
        right=("budget", "spend", "used_percent", "forecast", "invoiced", "difference"),
    )
    if output is OutputFormat.TABLE:
        late = [row for row in rows if row.difference]
        if late:
            out.print(
                f"{plural(len(late), 'budget')} invoiced differently from the last month-to-date "
                "check (usage that arrived late, or a check before the month's last day)"
            )
        out.print("forecast: linear, the spend so far carried on at the same rate to month end")
