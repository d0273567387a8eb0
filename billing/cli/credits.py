"""`billing credits grant|show`: prepaid credit for an org, and its credit-balance ledger."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

import typer

# The ledger is imported inside the commands, so that `billing --help` answers at once.
from billing.cli.console import (
    FormatOption,
    OutputFormat,
    emit_records,
    literal,
    load_settings,
    money_column,
    out,
    print_json,
)
from billing.money import at_minor_units

credits_app = typer.Typer(
    help="Credit balances: prepaid credit, and the ledger of grants, uses and expiries.",
    no_args_is_help=True,
)

LINE_COLUMNS = (
    "id",
    "date",
    "kind",
    "currency",
    "amount",
    "grant",
    "invoice",
    "credit_note",
    "reason",
    "expires",
)


def _day(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a day such as 2027-01-31", param_hint="--expires"
        ) from None


def _utc_day(moment: datetime | None) -> str | None:
    return f"{moment:%Y-%m-%d}" if moment is not None else None


@credits_app.command("grant")
def grant_command(
    org: Annotated[str, typer.Argument(metavar="ORG", help="The org id.")],
    amount: Annotated[
        str, typer.Argument(metavar="AMOUNT", help="More than 0, e.g. 250.00 (no currency sign).")
    ],
    currency: Annotated[
        str, typer.Option("--currency", metavar="CUR", help="ISO 4217 code, e.g. USD.")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept on record).")],
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires",
            metavar="YYYY-MM-DD",
            help="The credit is not used by invoices finalized from 00:00 UTC on this day; "
            "what is left then expires.",
        ),
    ] = None,
) -> None:
    """Add prepaid credit to an org's balance.

    Later invoices in that currency use it, oldest grant first. AMOUNT has at most the
    currency's decimal places. The org must be in the org directory (BILLING_ORGS) or have an
    invoice or credit in the ledger: an unknown id is refused, so a typo never holds credit
    nobody can use.
    """
    from billing.finance.credits import grant
    from billing.statements import formatting

    settings = load_settings()
    granted = grant(settings, org, amount, currency, reason, expires=_day(expires))

    def money(value: Decimal) -> str:
        return formatting.money(value, granted.currency, settings.locale)

    until = f", expires {_utc_day(granted.expires_at)}" if granted.expires_at else ""
    out.print(
        f"granted {money(granted.amount)} to {literal(granted.org_id)} "
        f"(grant {granted.entry_id}{until}); {granted.currency} balance now "
        f"{money(granted.balance)}"
    )


@credits_app.command("show")
def show_command(
    org: Annotated[str, typer.Argument(metavar="ORG", help="The org id.")],
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """An org's credit ledger and its balance per currency.

    The lines are grants, uses by invoices, expiries and reversals by voids; the balance is
    their sum. An expiry that is due but not recorded yet (the next use of the balance records
    it) is shown as a line of its own, so the sum still holds.
    """
    from billing.finance.credits import show
    from billing.statements import formatting

    settings = load_settings()
    ledger = show(settings, org)
    records = [
        {
            "id": line.id,
            "date": line.created_at,
            "kind": line.kind,
            "currency": line.currency,
            "amount": at_minor_units(line.amount, line.currency),
            "grant": line.grant_id,
            "invoice": line.invoice_number,
            "credit_note": line.credit_note_number,
            "reason": line.reason,
            "expires": _utc_day(line.expires_at),
        }
        for line in ledger.lines
    ]
    balances = {
        currency: at_minor_units(amount, currency)
        for currency, amount in sorted(ledger.balances.items())
    }
    if output is OutputFormat.JSON:
        print_json({"org": ledger.org_id, "entries": records, "balances": balances})
        return
    if output is OutputFormat.CSV:
        emit_records(output, LINE_COLUMNS, records, title="")
        return
    if not records:
        out.print(f"{literal(org)} has no credit entries; balance 0")
        return
    emit_records(
        output,
        LINE_COLUMNS,
        records,
        title=f"credit ledger of {literal(org)}",
        shown_as={
            "id": lambda record: record["id"] if record["id"] is not None else "(due)",
            "date": lambda record: f"{record['date']:%Y-%m-%d %H:%M}",
            "amount": money_column(settings.locale, "amount"),
        },
        right=("id", "amount", "grant"),
    )
    for currency, amount in balances.items():
        out.print(f"balance {currency}: {formatting.money(amount, currency, settings.locale)}")
