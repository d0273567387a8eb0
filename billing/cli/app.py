"""The `billing` command and its entry point `main`: close, re-rate and finalize a month, quote
an org, check rate cards, re-render statements, migrate the database, serve the usage emulator,
run the demo; the ledger commands (invoices, runs, email, void) come from billing.cli.ledger."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr
from rich.table import Table

from billing.catalog import check_catalog, load_rate_cards
from billing.cli.console import err, load_settings, out, progress
from billing.cli.ledger import email_app, invoices_app, runs_app, void_command
from billing.close.distributed import RunProgress
from billing.close.inline import close_period, finalize_period, quote_org, rerate_period
from billing.close.publish import CloseResult, render_statements
from billing.close.steps import CloseOptions, totals_by_currency
from billing.config import Settings
from billing.db.engine import open_ledger
from billing.errors import BillingError, ConfigError
from billing.money import minor_to_decimal, round_quantity
from billing.periods import BillingPeriod
from billing.rating import describe_pricing
from billing.statements import formatting
from billing.usage.faults import FAULT_SPEC_HELP, FaultPlan

app = typer.Typer(
    help="MKA1 billing: close a month of sandbox usage into invoices and statements.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
ratecards_app = typer.Typer(help="Check and inspect rate cards.", no_args_is_help=True)
app.add_typer(ratecards_app, name="ratecards")
statements_app = typer.Typer(
    help="Statements and reports from the stored invoices.", no_args_is_help=True
)
app.add_typer(statements_app, name="statements")
app.add_typer(invoices_app, name="invoices")
app.add_typer(runs_app, name="runs")
app.add_typer(email_app, name="email")
app.command("void")(void_command)


# Invoices a close lists on the terminal; summary.csv lists them all.
SHOWN_INVOICES = 50


def print_result(result: CloseResult, settings: Settings) -> None:
    drafts = f" ({result.drafts} drafts)" if result.drafts else ""
    table = Table(title=f"Closed {result.period}: {len(result.invoices)} invoices{drafts}")
    for column in ("org", "name", "invoice", "state", "total", "contact"):
        table.add_column(column, justify="right" if column == "total" else "left")
    for invoice in result.invoices[:SHOWN_INVOICES]:
        table.add_row(
            invoice.org_id,
            invoice.org_name,
            invoice.invoice_number,
            invoice.status,
            formatting.money(invoice.total, invoice.currency, settings.locale),
            ", ".join(invoice.emails) or "[yellow](no contact)[/yellow]",
        )
    out.print(table)
    if len(result.invoices) > SHOWN_INVOICES:
        hidden = len(result.invoices) - SHOWN_INVOICES
        out.print(f"... and {hidden} more invoices: every one is in {result.summary_path}")
    for currency, total in totals_by_currency(result.invoices).items():
        out.print(
            f"total {currency}: {formatting.money(Decimal(total), currency, settings.locale)}"
        )
    for item in result.org_outcomes:
        if item["action"] != "drafted":
            out.print(f"{item['org_id']}: {item['action']} {item['detail']}".rstrip())
    out.print(
        f"{result.pages_fetched} usage pages, {result.report.usage_results} usage results, "
        f"{result.emails_sent} emails handed to the '{settings.email_backend}' backend"
    )
    if result.report.results_without_memory:
        out.print(
            f"[yellow]{result.report.results_without_memory} usage results had no memory "
            "figure (billed as 0 GiB-hours)[/yellow]"
        )
    out.print(f"statements: {result.folder}\nsummary:    {result.summary_path}")


def _dispatch_close(
    settings: Settings,
    period: BillingPeriod,
    trigger: str,
    org_ids: tuple[str, ...] = (),
    options: CloseOptions | None = None,
) -> CloseResult | None:
    options = options or CloseOptions()
    if settings.broker_url:
        from rich.progress import Progress

        from workers.dispatch import close_on_workers

        with Progress(console=err, transient=True) as bar:
            task = bar.add_task(f"closing {period} on the workers", total=None)

            def show(progress: RunProgress) -> None:
                units = sum(progress.total.values())
                bar.update(
                    task,
                    total=units or None,
                    completed=sum(progress.done.values()),
                    description=progress.describe(),
                )

            finished = close_on_workers(
                settings,
                period,
                trigger,
                org_ids,
                draft=options.draft,
                reissue=options.reissue,
                on_progress=show,
            )
        out.print(f"closed {period} on the workers: {finished.describe()}")
        return None
    return close_period(
        settings,
        period,
        trigger=trigger,
        org_ids=org_ids,
        progress=progress,
        options=options,
    )


DraftOption = Annotated[
    bool,
    typer.Option(
        "--draft", help="Stop at drafts (statements marked DRAFT, no email); finalize later."
    ),
]
ReissueOption = Annotated[
    bool,
    typer.Option(
        "--reissue",
        help="Where a finalized invoice's total changed: void it and issue a replacement "
        "instead of a correction on the next period.",
    ),
]
WaitOption = Annotated[
    float,
    typer.Option(
        "--wait",
        min=0,
        metavar="SECONDS",
        help="Wait this long for another run of the period to finish (default: do not wait).",
    ),
]


@app.command()
def close(
    period: Annotated[str, typer.Option("--period", help="The UTC month to close, YYYY-MM.")],
    org: Annotated[
        list[str] | None,
        typer.Option("--org", help="Close only this org (repeatable): a partial close."),
    ] = None,
    draft: DraftOption = False,
    reissue: ReissueOption = False,
    wait: WaitOption = 0.0,
) -> None:
    """Close a month: fetch usage, rate it, store and finalize invoices, write statements,
    hand over emails. Finalized invoices never change: differences become corrections."""
    settings = load_settings()
    options = CloseOptions(draft=draft, reissue=reissue, wait_seconds=wait)
    result = _dispatch_close(
        settings, BillingPeriod.parse(period), "cli", tuple(org or ()), options
    )
    if result is not None:
        print_result(result, settings)


@app.command()
def rerate(
    period: Annotated[str, typer.Option("--period", help="The UTC month to re-rate, YYYY-MM.")],
    draft: DraftOption = False,
    reissue: ReissueOption = False,
    wait: WaitOption = 0.0,
) -> None:
    """Re-rate a closed month from its stored usage snapshot (no call to the MKA1 API)."""
    settings = load_settings()
    result = rerate_period(
        settings,
        BillingPeriod.parse(period),
        progress=progress,
        options=CloseOptions(draft=draft, reissue=reissue, wait_seconds=wait),
    )
    print_result(result, settings)


@app.command()
def finalize(
    period: Annotated[str, typer.Option("--period", help="The month whose drafts to finalize.")],
    wait: WaitOption = 0.0,
) -> None:
    """Finalize a month's drafts: number them, freeze them, write final statements, email."""
    settings = load_settings()
    result = finalize_period(
        settings, BillingPeriod.parse(period), progress=progress, wait_seconds=wait
    )
    print_result(result, settings)


@app.command()
def emulator(
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8765,
    orgs: Annotated[int, typer.Option(min=1, help="Number of synthetic orgs.")] = 12,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data.")] = 1,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    page_size: Annotated[int, typer.Option(min=1, help="Usage results per page.")] = 500,
    api_key: Annotated[str | None, typer.Option(help="Require this bearer token.")] = None,
    latency: Annotated[
        float, typer.Option(min=0, help="Seconds to wait before every response.")
    ] = 0.0,
    fault: Annotated[
        list[str] | None, typer.Option(help=f"Inject a fault; repeatable. {FAULT_SPEC_HELP}")
    ] = None,
    retry_after: Annotated[
        str, typer.Option(help="Retry-After of injected 429/503: seconds or an HTTP date.")
    ] = "1",
    late_from: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            help="Hold back usage from this UTC day on (serve again without it: late usage).",
        ),
    ] = None,
) -> None:
    """Serve a local emulator of the MKA1 usage API with deterministic synthetic usage.

    With --latency or --fault it misbehaves on purpose, e.g. --fault 503@2x3 --fault drop@2.
    """
    from billing.usage.emulator import SyntheticUsage, UsageEmulator, serve_emulator

    try:
        faults = FaultPlan.from_specs(fault or [], latency, retry_after)
    except ValueError as problem:
        raise typer.BadParameter(str(problem), param_hint="--fault") from None
    usage_emulator = UsageEmulator(
        SyntheticUsage(
            orgs, seed, int(late_from.replace(tzinfo=UTC).timestamp()) if late_from else None
        ),
        page_size=page_size,
        api_key=api_key,
        faults=faults,
    )
    server = serve_emulator(usage_emulator, host, port)
    bound_host, bound_port = server.server_address[:2]
    out.print(f"usage emulator for {orgs} orgs (seed {seed}) on http://{bound_host!s}:{bound_port}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
def demo(
    orgs: Annotated[int, typer.Option(min=1, help="Number of synthetic orgs.")] = 12,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data.")] = 1,
    period: Annotated[
        str | None, typer.Option(help="Month to close (default: the previous one).")
    ] = None,
) -> None:
    """Start the emulator on a free loopback port and close the previous month against it."""
    from billing.usage.emulator import running_emulator

    chosen = BillingPeriod.parse(period) if period else BillingPeriod.previous_to(datetime.now(UTC))
    with running_emulator(orgs=orgs, seed=seed, page_size=200) as base_url:
        settings = load_settings(
            mka1_base_url=base_url, mka1_api_key=SecretStr("demo-key"), broker_url=None
        )
        out.print(
            f"usage emulator for {orgs} orgs at {base_url}; "
            f"closing {chosen} into {settings.database_url}"
        )
        result = close_period(settings, chosen, trigger="demo", progress=progress)
    print_result(result, settings)


@ratecards_app.command("check")
def ratecards_check(
    path: Annotated[
        Path | None, typer.Argument(help="Rate-card folder (default: BILLING_RATE_CARDS).")
    ] = None,
    orgs: Annotated[
        Path | None, typer.Option(help="Org directory (default: BILLING_ORGS).")
    ] = None,
) -> None:
    """Validate every rate card and the org directory; list each problem with file and line."""
    settings = load_settings()
    cards_folder = path or settings.rate_cards
    problems = check_catalog(cards_folder, orgs or settings.orgs)
    for problem in problems:
        err.print(problem, highlight=False, soft_wrap=True, markup=False)
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the rate cards or the org directory")
    catalog = load_rate_cards(cards_folder)
    out.print(f"ok: {len(catalog.cards)} rate-card versions of {len(catalog.ids())} cards")


@ratecards_app.command("show")
def ratecards_show(
    card_id: Annotated[str, typer.Argument(metavar="ID", help="The rate card id.")],
    period: Annotated[str, typer.Option("--period", help="The month, YYYY-MM.")],
) -> None:
    """Print the version of a card that applies to a month, and its prices."""
    settings = load_settings()
    card = load_rate_cards(settings.rate_cards).card_for(
        card_id, BillingPeriod.parse(period), "(ratecards show)"
    )
    until = f" until {card.effective_until}" if card.effective_until else ""
    out.print(
        f"rate card {card.id} version {card.version}{until} ({card.currency}) from {card.source}"
    )
    table = Table()
    for column in ("charge", "meter", "session kind", "included", "price"):
        table.add_column(column)
    for price in card.meters:
        table.add_row(
            price.name,
            price.meter,
            price.session_kind or "any",
            str(price.included),
            describe_pricing(price),
        )
    out.print(table)
    if card.minimum_charge is not None:
        out.print(f"minimum charge per org and period: {card.minimum_charge} {card.currency}")


@app.command()
def quote(
    period: Annotated[str, typer.Option("--period", help="The month, YYYY-MM.")],
    org: Annotated[str, typer.Option("--org", help="The org id.")],
) -> None:
    """Price one org's usage for a month without storing anything (a dry run)."""
    settings = load_settings()
    invoice, report = quote_org(settings, BillingPeriod.parse(period), org)
    if invoice is None:
        out.print(f"org {org} has no usage in {period}: nothing to bill")
        return
    currency = invoice.currency
    table = Table(
        title=f"Quote for {org} ({invoice.org.name}), {period}: "
        f"rate card {invoice.rate_card.id}@{invoice.rate_card.version}"
    )
    for column in ("charge", "quantity", "billable", "price", "amount"):
        table.add_column(column, justify="left" if column in ("charge", "price") else "right")
    for charge in invoice.charges:
        table.add_row(
            charge.description,
            f"{round_quantity(charge.quantity, 4)} {charge.unit}",
            str(round_quantity(charge.billable, 4)),
            charge.pricing,
            formatting.money(
                minor_to_decimal(charge.amount_minor, currency), currency, settings.locale
            ),
        )
    total = minor_to_decimal(invoice.total_minor, currency)
    table.add_row("Total", "", "", "", formatting.money(total, currency, settings.locale))
    out.print(table)
    out.print(f"{report.usage_results} usage results; nothing was stored")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to BILLING_DATABASE_URL."""
    open_ledger(load_settings(), migrate=True).dispose()
    out.print("database is at the newest schema")


@statements_app.command("render")
def statements_render(
    period: Annotated[str, typer.Option("--period", help="The closed month, YYYY-MM.")],
    org: Annotated[
        str | None, typer.Option("--org", help="Only this org's PDF and CSV statement.")
    ] = None,
) -> None:
    """Re-render statements and reports from the stored invoices (no re-rating, no upstream
    call, no email)."""
    settings = load_settings()
    result = render_statements(
        settings,
        BillingPeriod.parse(period),
        org,
        progress=progress,
    )
    out.print(
        f"re-rendered {result.count} statements of {result.period} "
        f"({len(result.files)} files) in {result.folder}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: expected failures exit 1 with one line on stderr, never a traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=list(argv) if argv is not None else None, standalone_mode=True)
    except BillingError as error:
        err.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        sys.exit(1)
