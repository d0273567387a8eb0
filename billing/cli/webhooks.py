"""`billing webhooks send|status`, and the delivery the event-writing commands make at their end."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Annotated

import typer

from billing.cli.console import (
    FormatOption,
    OutputFormat,
    emit_records,
    err,
    literal,
    load_settings,
    out,
    progress,
)
from billing.errors import ConfigError
from billing.periods import BillingPeriod

if TYPE_CHECKING:
    from billing.config import Settings

webhooks_app = typer.Typer(
    help="Webhooks: deliver the events due now, list every delivery.", no_args_is_help=True
)

COLUMNS = (
    "event",
    "type",
    "period",
    "endpoint",
    "status",
    "attempts",
    "code",
    "next_attempt",
    "detail",
)


def deliver_after_command(settings: Settings) -> None:
    """At the end of a command that wrote events: with BILLING_WEBHOOKS set, deliver what is due
    (on the workers when a broker is set, else here, once). A failure is one warning line on
    stderr and leaves the deliveries pending: it never fails the command."""
    if settings.webhooks is None:
        return
    try:
        if settings.broker_url:
            from workers.tasks import deliver_webhooks

            deliver_webhooks.delay()
            return
        from billing.finance.webhooks import deliver_due

        counts = deliver_due(settings)
    except Exception as error:  # never fails the command that wrote the events
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        err.print(
            f"[yellow]warning: webhooks not delivered now ({literal(first)}); they stay "
            "pending for billing webhooks send or the next beat[/yellow]"
        )
        return
    if counts.tried or counts.deferred:
        progress(f"webhooks: {counts.describe()}")


@webhooks_app.command("send")
def send_command() -> None:
    """Deliver every webhook due now to the endpoints of BILLING_WEBHOOKS (failed tries wait
    for their backoff; nothing delivered goes out again)."""
    from billing.finance.webhooks import deliver_due

    settings = load_settings()
    if settings.webhooks is None:
        raise ConfigError(
            "setting BILLING_WEBHOOKS is not set: point it at a webhook endpoints file "
            "(see examples/webhooks.yaml)"
        )
    counts = deliver_due(settings)
    if counts.tried or counts.deferred:
        out.print(f"webhooks: {counts.describe()}")
    else:
        out.print("no webhook due")


@webhooks_app.command("status")
def status_command(
    period: Annotated[
        str | None,
        typer.Option("--period", metavar="PERIOD", help="Only events about this month, YYYY-MM."),
    ] = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Every webhook delivery: event id and type, endpoint, state, attempts, the last HTTP
    status and error, when the next attempt is due."""
    from billing.finance.webhooks import webhook_status

    settings = load_settings()
    rows = webhook_status(settings, BillingPeriod.parse(period) if period else None)
    records = [
        dict(
            zip(
                COLUMNS,
                (
                    row.event_id,
                    row.type,
                    row.period,
                    row.endpoint,
                    row.status,
                    row.attempts,
                    row.last_status_code,
                    row.next_attempt_at,
                    row.last_error,
                ),
                strict=True,
            )
        )
        for row in rows
    ]
    title = f"{len(rows)} webhook deliver{'y' if len(rows) == 1 else 'ies'}" + (
        f" of {period}" if period else ""
    )
    emit_records(
        output,
        COLUMNS,
        records,
        title=title,
        shown_as={
            "next_attempt": lambda record: (
                "-"
                if record["next_attempt"] is None
                else f"{record['next_attempt']:%Y-%m-%d %H:%M:%S}"
            )
        },
    )
    if output is OutputFormat.TABLE:
        counts = Counter(row.status for row in rows)
        out.print(
            ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no deliveries"
        )
