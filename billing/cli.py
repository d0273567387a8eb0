"""The `billing` command: close a month, serve the usage emulator, run the demo, migrate."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

import typer
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.table import Table

from billing.config import Settings
from billing.errors import BillingError, ConfigError
from billing.periods import BillingPeriod
from billing.services import CloseResult, close_period, open_database
from billing.statements import formatting

app = typer.Typer(
    help="MKA1 billing: close a month of sandbox usage into invoices and statements.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = Console()
err = Console(stderr=True)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; a bad value becomes a one-line ConfigError."""
    try:
        settings = Settings()
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigError(f"setting {name}: {first['msg']}") from None
    return settings.model_copy(update=overrides) if overrides else settings


def print_result(result: CloseResult, settings: Settings) -> None:
    table = Table(title=f"Closed {result.period}: {len(result.statements)} invoices")
    for column in ("org", "name", "invoice", "total", "contact"):
        table.add_column(column, justify="right" if column == "total" else "left")
    for statement in result.statements:
        table.add_row(
            statement.org_id,
            statement.org_name,
            statement.invoice_number,
            formatting.money(statement.total, statement.currency, settings.locale),
            ", ".join(statement.emails) or "[yellow](no contact)[/yellow]",
        )
    out.print(table)
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


def _dispatch_close(settings: Settings, period: BillingPeriod, trigger: str) -> CloseResult | None:
    if settings.broker_url:
        from workers.dispatch import close_on_workers

        message = close_on_workers(settings, period, trigger)
        out.print(message)
        return None
    return close_period(
        settings, period, trigger=trigger, progress=lambda text: err.print(f"[dim]{text}[/dim]")
    )


@app.command()
def close(
    period: Annotated[str, typer.Option("--period", help="The UTC month to close, YYYY-MM.")],
) -> None:
    """Close a month: fetch usage, rate it, store invoices, write statements, hand over emails."""
    settings = load_settings()
    result = _dispatch_close(settings, BillingPeriod.parse(period), "cli")
    if result is not None:
        print_result(result, settings)


@app.command()
def emulator(
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8765,
    orgs: Annotated[int, typer.Option(min=1, help="Number of synthetic orgs.")] = 12,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data.")] = 1,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    page_size: Annotated[int, typer.Option(min=1, help="Usage results per page.")] = 500,
    api_key: Annotated[str | None, typer.Option(help="Require this bearer token.")] = None,
) -> None:
    """Serve a local emulator of the MKA1 usage API with deterministic synthetic usage."""
    from billing.usage.emulator import SyntheticUsage, UsageEmulator, serve_emulator

    server = serve_emulator(
        UsageEmulator(SyntheticUsage(orgs, seed), page_size=page_size, api_key=api_key), host, port
    )
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
        result = close_period(
            settings, chosen, trigger="demo", progress=lambda text: err.print(f"[dim]{text}[/dim]")
        )
    print_result(result, settings)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to BILLING_DATABASE_URL."""
    settings = load_settings(auto_migrate=True)
    open_database(settings).dispose()
    out.print("database is at the newest schema")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: expected failures exit 1 with one line on stderr, never a traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=list(argv) if argv is not None else None, standalone_mode=True)
    except BillingError as error:
        err.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        sys.exit(1)
