"""The `billing` command and its entry point `main`: close, re-rate and finalize a month, quote
an org, check rate cards, re-render statements, migrate the database, serve the usage emulator,
run the demo; the ledger commands (invoices, runs, email, void) come from billing.cli.ledger."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

# The close, the database and the PDF library are imported inside the commands that use them,
# so that `billing --help` and `billing --version` answer at once.
from billing.cli.access import tokens_app, users_app
from billing.cli.adjust import adjust_command  # noqa: F401 (registers `billing invoices adjust`)
from billing.cli.budgets import budgets_app
from billing.cli.console import (
    FormatOption,
    OutputFormat,
    WaitOption,
    add_row,
    configure_logging,
    data_table,
    emit_records,
    err,
    error_line,
    literal,
    load_settings,
    out,
    print_json,
    progress,
)
from billing.cli.credit_notes import credit_notes_app
from billing.cli.credits import credits_app
from billing.cli.ledger import email_app, invoices_app, runs_app, void_command
from billing.cli.review import hold_command  # noqa: F401  (adds `billing invoices hold|release`)
from billing.cli.serve import serve_command
from billing.cli.webhooks import deliver_after_command, webhooks_app
from billing.config import PROJECT_ROOT
from billing.errors import BillingError, ConfigError
from billing.money import at_minor_units
from billing.periods import BillingPeriod
from billing.usage.faults import FAULT_SPEC_HELP
from billing.wording import plural

if TYPE_CHECKING:
    from billing.close.distributed import RunProgress
    from billing.close.publish import CloseResult
    from billing.close.steps import CloseOptions
    from billing.config import Settings

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
app.command("serve")(serve_command)
app.add_typer(credit_notes_app, name="credit-notes")
app.add_typer(credits_app, name="credits")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(budgets_app, name="budgets")


def _print_version(wanted: bool) -> None:
    if wanted:
        try:
            number = installed_version("mka1-billing")
        except PackageNotFoundError:  # pragma: no cover - run from a tree that is not installed
            number = "unknown"
        out.print(f"billing {number}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            metavar="",
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """MKA1 billing: close a month of sandbox usage into invoices and statements."""


MAX_PORT = 65535

# Invoices a close lists on the terminal; summary.csv lists them all.
SHOWN_INVOICES = 50


CLOSE_COLUMNS = ("org", "name", "invoice", "state", "currency", "total", "contact")


def print_result(
    result: CloseResult, settings: Settings, output: OutputFormat = OutputFormat.TABLE
) -> None:
    """What a close, re-rate or finalize did: its invoices, totals and the orgs' outcomes."""
    from rich.text import Text

    from billing.close.steps import totals_by_currency
    from billing.statements import formatting

    records = [
        {
            "org": invoice.org_id,
            "name": invoice.org_name,
            "invoice": invoice.invoice_number,
            "state": invoice.status,
            "currency": invoice.currency,
            "total": at_minor_units(invoice.total, invoice.currency),
            "contact": ", ".join(invoice.emails),
        }
        for invoice in result.invoices
    ]
    totals = totals_by_currency(result.invoices)
    outcomes = [item for item in result.org_outcomes if item["action"] != "drafted"]
    if output is OutputFormat.JSON:
        print_json(
            {
                "period": str(result.period),
                "run": result.run_id,
                "invoices": records,
                "totals": {currency: Decimal(total) for currency, total in totals.items()},
                "outcomes": outcomes,
                "usage_pages": result.pages_fetched,
                "usage_results": result.report.usage_results,
                "results_without_memory": result.report.results_without_memory,
                "emails_sent": result.emails_sent,
                "statements": str(result.folder),
                "summary": str(result.summary_path),
            }
        )
        return
    if output is OutputFormat.CSV:
        emit_records(output, CLOSE_COLUMNS, records, title="")
        return
    drafts = f" ({plural(result.drafts, 'draft')})" if result.drafts else ""
    shown = records[:SHOWN_INVOICES]
    emit_records(
        output,
        CLOSE_COLUMNS,
        shown,
        title=f"Closed {result.period}: {plural(len(records), 'invoice')}{drafts}",
        table_columns=("org", "name", "invoice", "state", "total", "contact"),
        shown_as={
            "total": lambda row: formatting.money(
                row["total"],  # type: ignore[arg-type]
                str(row["currency"]),
                settings.locale,
            ),
            "contact": lambda row: row["contact"] or Text("(no contact)", style="yellow"),
        },
        right=("total",),
    )
    if len(records) > SHOWN_INVOICES:
        hidden = len(records) - SHOWN_INVOICES
        out.print(
            f"... and {plural(hidden, 'more invoice')}: every one is in "
            f"{literal(result.summary_path)} (or use --format csv)"
        )
    for currency, total in totals.items():
        out.print(
            f"total {currency}: {formatting.money(Decimal(total), currency, settings.locale)}"
        )
    held = [item for item in outcomes if item["action"] == "held"]
    for item in outcomes:
        if item["action"] != "held":
            line = f"{literal(item['org_id'])}: {item['action']} {literal(item['detail'])}"
            out.print(line.rstrip())
    if held:
        kept = ", ".join(f"{literal(item['org_id'])} ({literal(item['detail'])})" for item in held)
        out.print(f"{len(held)} held: {kept}")
    out.print(
        f"{plural(result.pages_fetched, 'usage page')}, "
        f"{plural(result.report.usage_results, 'usage result')}, "
        f"{plural(result.emails_sent, 'email')} handed to the '{settings.email_backend}' backend"
    )
    if result.report.results_without_memory:
        out.print(
            f"[yellow]{plural(result.report.results_without_memory, 'usage result')} had no "
            "memory figure (billed as 0 GiB-hours)[/yellow]"
        )
    out.print(f"statements: {literal(result.folder)}\nsummary:    {literal(result.summary_path)}")


def _dispatch_close(
    settings: Settings,
    period: BillingPeriod,
    trigger: str,
    org_ids: tuple[str, ...] = (),
    options: CloseOptions | None = None,
) -> CloseResult | None:
    from billing.close.inline import close_period
    from billing.close.steps import CloseOptions

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
                review=options.review,
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
        "--draft",
        metavar="",
        help="Stop at drafts (statements marked DRAFT, no email); finalize later.",
    ),
]
ReissueOption = Annotated[
    bool,
    typer.Option(
        "--reissue",
        metavar="",
        help="Where a finalized invoice's total changed: void it and issue a replacement "
        "instead of a correction on the next period.",
    ),
]
ReviewOption = Annotated[
    bool,
    typer.Option(
        "--review",
        metavar="",
        help="Open a review window of BILLING_REVIEW_DAYS: store drafts only (DRAFT, no "
        "email); beat finalizes those not on hold when it ends.",
    ),
]


@app.command()
def close(
    period: Annotated[
        str, typer.Option("--period", metavar="PERIOD", help="The UTC month to close, YYYY-MM.")
    ],
    org: Annotated[
        list[str] | None,
        typer.Option(
            "--org", metavar="ORG", help="Close only this org (repeatable): a partial close."
        ),
    ] = None,
    draft: DraftOption = False,
    reissue: ReissueOption = False,
    review: ReviewOption = False,
    wait: WaitOption = 0.0,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Close a month: fetch usage, rate it, store and finalize invoices, write statements,
    hand over emails. Finalized invoices never change: differences become corrections.
    While the period's review window is open, a close only replaces its drafts."""
    from billing.close.steps import CloseOptions
    from billing.close.window import check_review_setting

    settings = load_settings()
    options = CloseOptions(draft=draft, reissue=reissue, review=review, wait_seconds=wait)
    check_review_setting(settings, options)  # here too: before a close is sent to workers
    try:
        result = _dispatch_close(
            settings, BillingPeriod.parse(period), "cli", tuple(org or ()), options
        )
    finally:
        deliver_after_command(settings)  # the events it wrote, with BILLING_WEBHOOKS set
    if result is not None:
        print_result(result, settings, output)


@app.command()
def rerate(
    period: Annotated[
        str, typer.Option("--period", metavar="PERIOD", help="The UTC month to re-rate, YYYY-MM.")
    ],
    draft: DraftOption = False,
    reissue: ReissueOption = False,
    wait: WaitOption = 0.0,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Re-rate a closed month from its stored usage snapshot (no call to the MKA1 API)."""
    from billing.close.inline import rerate_period
    from billing.close.steps import CloseOptions

    settings = load_settings()
    result = rerate_period(
        settings,
        BillingPeriod.parse(period),
        progress=progress,
        options=CloseOptions(draft=draft, reissue=reissue, wait_seconds=wait),
    )
    print_result(result, settings, output)


@app.command()
def finalize(
    period: Annotated[
        str,
        typer.Option("--period", metavar="PERIOD", help="The month whose drafts to finalize."),
    ],
    wait: WaitOption = 0.0,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Finalize a month's drafts: number them, freeze them, write final statements, email."""
    from billing.close.inline import finalize_period

    settings = load_settings()
    try:
        result = finalize_period(
            settings, BillingPeriod.parse(period), progress=progress, wait_seconds=wait
        )
    finally:
        deliver_after_command(settings)  # the events it wrote, with BILLING_WEBHOOKS set
    print_result(result, settings, output)


@app.command()
def emulator(
    port: Annotated[
        int, typer.Option(metavar="PORT", help="TCP port (0 picks a free one).")
    ] = 8765,
    orgs: Annotated[int, typer.Option(min=1, metavar="N", help="Number of synthetic orgs.")] = 12,
    seed: Annotated[int, typer.Option(metavar="SEED", help="Seed of the synthetic data.")] = 1,
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    page_size: Annotated[
        int, typer.Option(min=1, metavar="N", help="Usage results per page.")
    ] = 500,
    api_key: Annotated[
        str | None, typer.Option(metavar="KEY", help="Require this bearer token.")
    ] = None,
    latency: Annotated[
        float,
        typer.Option(min=0, metavar="SECONDS", help="Seconds to wait before every response."),
    ] = 0.0,
    fault: Annotated[
        list[str] | None,
        typer.Option(metavar="FAULT", help=f"Inject a fault; repeatable. {FAULT_SPEC_HELP}"),
    ] = None,
    retry_after: Annotated[
        str,
        typer.Option(
            metavar="WHEN", help="Retry-After of injected 429/503: seconds or an HTTP date."
        ),
    ] = "1",
    late_from: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            metavar="YYYY-MM-DD",
            help="Hold back usage from this UTC day on (serve again without it: late usage).",
        ),
    ] = None,
) -> None:
    """Serve a local emulator of the MKA1 usage API with deterministic synthetic usage.

    With --latency or --fault it misbehaves on purpose, e.g. --fault 503@2x3 --fault drop@2.
    """
    from billing.usage.emulator import SyntheticUsage, UsageEmulator, serve_emulator
    from billing.usage.faults import FaultPlan

    if not 0 <= port <= MAX_PORT:
        raise ConfigError(
            f"--port {port} is out of range: give a port from 1 to {MAX_PORT}, or 0 for a free one"
        )
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
    try:
        server = serve_emulator(usage_emulator, host, port)
    except OSError as error:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {error.strerror or error}; "
            "pick another --port (0 picks a free one) or --host"
        ) from None
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
    orgs: Annotated[int, typer.Option(min=1, metavar="N", help="Number of synthetic orgs.")] = 12,
    seed: Annotated[int, typer.Option(metavar="SEED", help="Seed of the synthetic data.")] = 1,
    period: Annotated[
        str | None,
        typer.Option(metavar="PERIOD", help="Month to close, YYYY-MM (default: the previous one)."),
    ] = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Start the emulator on a free loopback port and close the previous month against it."""
    from pydantic import SecretStr

    from billing.close.inline import close_period
    from billing.usage.emulator import running_emulator

    chosen = BillingPeriod.parse(period) if period else BillingPeriod.previous_to(datetime.now(UTC))
    with running_emulator(orgs=orgs, seed=seed, page_size=200) as base_url:
        settings = load_settings(
            mka1_base_url=base_url,
            mka1_api_key=SecretStr("demo-key"),
            broker_url=None,
            **demo_invoice_settings(),
        )
        (out if output is OutputFormat.TABLE else err).print(  # json/csv: stdout stays data
            f"usage emulator for {orgs} orgs at {base_url}; "
            f"closing {chosen} into {settings.database_url}"
        )
        result = close_period(settings, chosen, trigger="demo", progress=progress)
    print_result(result, settings, output)
    said = demo_console_user(settings)
    (out if output is OutputFormat.TABLE else err).print(said, soft_wrap=True, markup=False)


DEMO_USER = "finance"
# What the demo's invoices show when the environment does not say otherwise: the example tax
# rates (Acme Robotics is a German business billed under reverse charge, Umbrella Research a
# French one billed TVA) and made-up payment details.
DEMO_INVOICE_SETTINGS = {
    "BILLING_TAX_RATES": PROJECT_ROOT / "examples" / "tax_rates.yaml",
    "BILLING_ISSUER_TAX_ID": "US 94-1234567",
    "BILLING_PAYMENT_BANK_DETAILS": (
        "Bank: Example National Bank; Account name: MKA1, Inc.; Account: 000123456789; "
        "ABA routing: 121000248; SWIFT: EXNBUS33"
    ),
    "BILLING_PAYMENT_LINK": "https://pay.mka1.example/invoices/{invoice_number}",
}


def demo_invoice_settings() -> dict[str, object]:
    """The demo's tax and payment settings, each only where the environment gives none."""
    return {
        name.removeprefix("BILLING_").lower(): value
        for name, value in DEMO_INVOICE_SETTINGS.items()
        if not os.environ.get(name)
    }


def demo_console_user(settings: Settings) -> str:
    """The demo's way into the console: an admin `finance` with a random password when the
    ledger has no console user yet (the users there are kept); the line that says how."""
    import secrets

    from sqlmodel import Session

    from billing.db.access import count_users
    from billing.db.engine import ledger
    from billing.finance.access import add_user
    from billing.states import Role

    with ledger(settings) as engine, Session(engine) as session:
        users = count_users(session)
    if users:
        return (
            "console: billing serve, then sign in at http://127.0.0.1:8000/ as one of the "
            f"ledger's {plural(users, 'console user')}, kept as they are "
            "(billing users add NAME --role ROLE adds one)"
        )
    password = secrets.token_urlsafe(12)
    add_user(settings, DEMO_USER, Role.ADMIN, password, actor="billing demo")
    return (
        "console: billing serve, then sign in at http://127.0.0.1:8000/ "
        f"as {DEMO_USER} with password {password}"
    )


@ratecards_app.command("check")
def ratecards_check(
    path: Annotated[
        Path | None,
        typer.Argument(metavar="FOLDER", help="Rate-card folder (default: BILLING_RATE_CARDS)."),
    ] = None,
    orgs: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Org directory (default: BILLING_ORGS)."),
    ] = None,
) -> None:
    """Validate every rate card, the org directory, the tax rates and the budgets; list each
    problem with file and line, then the months each card (and so each org) can be billed for."""
    from billing.catalog import check_catalog, load_org_directory, load_rate_cards
    from billing.catalog.budgets import check_budgets
    from billing.catalog.coverage import (
        card_uses,
        describe_months,
        months_every_org_can_be_billed,
    )
    from billing.catalog.taxes import check_taxes

    settings = load_settings()
    cards_folder = path or settings.rate_cards
    orgs_file = orgs or settings.orgs
    problems = check_catalog(cards_folder, orgs_file)
    tax_problems, tax_warning = check_taxes(settings, orgs_file)
    problems += tax_problems
    if settings.budgets is not None:
        problems += check_budgets(settings.budgets)
    if tax_warning:
        err.print(tax_warning, highlight=False, soft_wrap=True, markup=False)
    for problem in problems:
        err.print(problem, highlight=False, soft_wrap=True, markup=False)
    if problems:
        raise ConfigError(
            f"{len(problems)} problem(s) in the rate cards, the org directory, the tax rates "
            "or the budgets"
        )
    catalog = load_rate_cards(cards_folder)
    out.print(f"ok: {len(catalog.cards)} rate-card versions of {len(catalog.ids())} cards")
    uses = card_uses(catalog, load_org_directory(orgs_file))
    for use in uses:
        out.print(
            f"{literal(use.card_id)} bills {describe_months(use.months)}: "
            f"{literal(use.orgs_text())}",
            soft_wrap=True,
        )
    every = describe_months(months_every_org_can_be_billed(uses))
    out.print(f"every org can be billed for {every}", soft_wrap=True)


@ratecards_app.command("show")
def ratecards_show(
    card_id: Annotated[str, typer.Argument(metavar="ID", help="The rate card id.")],
    period: Annotated[str, typer.Option("--period", metavar="PERIOD", help="The month, YYYY-MM.")],
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Print the version of a card that applies to a month, and its prices."""
    from billing.catalog import load_rate_cards
    from billing.rating import describe_pricing

    settings = load_settings()
    card = load_rate_cards(settings.rate_cards).card_for(
        card_id, BillingPeriod.parse(period), "(ratecards show)"
    )
    columns = ("charge", "meter", "session kind", "included", "price")
    prices = [
        dict(
            zip(
                columns,
                (
                    price.name,
                    price.meter,
                    price.session_kind or "any",
                    price.included,
                    describe_pricing(price),
                ),
                strict=True,
            )
        )
        for price in card.meters
    ]
    if output is OutputFormat.JSON:
        print_json(
            {
                "id": card.id,
                "version": card.version,
                "effective_until": card.effective_until,
                "currency": card.currency,
                "source": str(card.source),
                "minimum_charge": card.minimum_charge,
                "prices": prices,
            }
        )
        return
    if output is OutputFormat.TABLE:
        until = f" until {card.effective_until}" if card.effective_until else ""
        out.print(
            f"rate card {literal(card.id)} version {literal(card.version)}{until} "
            f"({card.currency}) from {literal(card.source)}"
        )
    emit_records(output, columns, prices, title="")
    if output is OutputFormat.TABLE and card.minimum_charge is not None:
        out.print(f"minimum charge per org and period: {card.minimum_charge} {card.currency}")


@app.command()
def quote(
    period: Annotated[str, typer.Option("--period", metavar="PERIOD", help="The month, YYYY-MM.")],
    org: Annotated[str, typer.Option("--org", metavar="ORG", help="The org id.")],
) -> None:
    """Price one org's usage for a month without storing anything (a dry run)."""
    from billing.close.inline import quote_org
    from billing.money import minor_to_decimal, round_quantity
    from billing.statements import formatting
    from billing.taxes import tax_charge

    settings = load_settings()
    invoice, report = quote_org(settings, BillingPeriod.parse(period), org)
    if invoice is None:
        out.print(f"org {literal(org)} has no usage in {period}: nothing to bill")
        return
    currency = invoice.currency
    table = data_table(
        f"Quote for {literal(org)} ({literal(invoice.org.name)}), {period}: "
        f"rate card {literal(invoice.rate_card.id)}@{literal(invoice.rate_card.version)}",
        ("charge", "quantity", "billable", "price", "amount"),
        right=("quantity", "billable", "amount"),
    )
    for charge in invoice.charges:
        add_row(
            table,
            charge.description,
            f"{round_quantity(charge.quantity, 4)} {charge.unit}",
            str(round_quantity(charge.billable, 4)),
            charge.pricing,
            formatting.money(
                minor_to_decimal(charge.amount_minor, currency), currency, settings.locale
            ),
        )
    total_minor = invoice.total_minor
    if invoice.tax_rule is not None:  # before a minimum top-up or corrections, which the close adds
        net = minor_to_decimal(total_minor, currency)
        add_row(table, "Net total", "", "", "", formatting.money(net, currency, settings.locale))
        tax = tax_charge(invoice.tax_rule, total_minor, currency)
        amount = minor_to_decimal(tax.amount_minor, currency)
        add_row(
            table,
            tax.description,
            "",
            "",
            tax.pricing,
            formatting.money(amount, currency, settings.locale),
        )
        total_minor += tax.amount_minor
    total = minor_to_decimal(total_minor, currency)
    add_row(table, "Total", "", "", "", formatting.money(total, currency, settings.locale))
    out.print(table)
    out.print(f"{plural(report.usage_results, 'usage result')}; nothing was stored")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to BILLING_DATABASE_URL."""
    from billing.db.engine import open_ledger

    open_ledger(load_settings(), migrate=True).dispose()
    out.print("database is at the newest schema")


@statements_app.command("render")
def statements_render(
    period: Annotated[
        str, typer.Option("--period", metavar="PERIOD", help="The closed month, YYYY-MM.")
    ],
    org: Annotated[
        str | None,
        typer.Option("--org", metavar="ORG", help="Only this org's PDF and CSV statement."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Print every PDF again, even those whose key matches (e.g. after a font change).",
        ),
    ] = False,
) -> None:
    """Write statements and reports again from the stored invoices (no re-rating, no upstream
    call, no email); a PDF whose inputs have not changed is kept as it is."""
    from billing.close.publish import render_statements

    settings = load_settings()
    result = render_statements(
        settings,
        BillingPeriod.parse(period),
        org,
        progress=progress,
        force=force,
    )
    out.print(
        f"wrote {plural(result.count, 'statement')} of {result.period} "
        f"({result.rendered} rendered, {result.reused} unchanged; "
        f"{plural(len(result.files), 'file')}) in {literal(result.folder)}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: expected failures exit 1 with one line on stderr, never a traceback."""
    configure_logging()
    try:
        app(args=list(argv) if argv is not None else None, standalone_mode=True)
    except BillingError as error:
        error_line(str(error))
        sys.exit(1)
