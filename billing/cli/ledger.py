"""The ledger commands, added to `billing` by billing.cli.app: `billing invoices list|show`,
`billing runs list|show|sweep`, `billing email status|send|resend` and `billing void`."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Annotated

import typer
from rich.table import Table

from billing.cli.console import load_settings, out, progress
from billing.close.distributed import run_progress, sweep
from billing.finance.emails import email_status, resend, send_pending
from billing.finance.invoices import invoice_detail, list_invoices, list_runs, run_detail, void
from billing.periods import BillingPeriod
from billing.statements import formatting
from billing.states import DeliveryStatus, InvoiceStatus

invoices_app = typer.Typer(help="List and inspect invoices.", no_args_is_help=True)
runs_app = typer.Typer(
    help="List and inspect billing runs (the audit trail).", no_args_is_help=True
)

STATES = tuple(InvoiceStatus)


@invoices_app.command("list")
def invoices_list(
    period: Annotated[str | None, typer.Option("--period", help="Only this month.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help=f"Only this state: {', '.join(STATES)}.")
    ] = None,
    org: Annotated[str | None, typer.Option("--org", help="Only this org.")] = None,
) -> None:
    """Invoices with their state, number and total."""
    if status is not None and status not in STATES:
        raise typer.BadParameter(
            f"{status!r} is not one of {', '.join(STATES)}", param_hint="--status"
        )
    settings = load_settings()
    rows = list_invoices(
        settings,
        period=BillingPeriod.parse(period) if period else None,
        status=status,
        org_id=org,
    )
    table = Table(title=f"{len(rows)} invoices")
    for column in ("id", "number", "state", "org", "period", "total", "lines", "run"):
        table.add_column(column, justify="right" if column in ("total", "lines", "id") else "left")
    for row in rows:
        table.add_row(
            str(row.id),
            row.number or "(draft)",
            row.status,
            row.org_id,
            row.period,
            formatting.money(row.total, row.currency, settings.locale),
            str(row.line_items),
            str(row.run_id),
        )
    out.print(table)


@invoices_app.command("show")
def invoices_show(
    invoice: Annotated[str, typer.Argument(metavar="INVOICE", help="A number, or a draft's id.")],
) -> None:
    """One invoice: state and dates, charges (corrections apart), and corrections made to it."""
    settings = load_settings()
    detail = invoice_detail(settings, invoice)
    row = detail.invoice

    def money(amount: Decimal) -> str:
        return formatting.money(amount, row.currency, settings.locale)

    out.print(f"[bold]{row.number or '(draft, no number yet)'}[/bold]  id {row.id}  {row.status}")
    out.print(f"org {row.org_id} ({row.org_name}), period {row.period}, total {money(row.total)}")
    out.print(
        f"rate card {row.rate_card_id}@{row.rate_card_version} (sha256 {row.rate_card_hash[:12]}), "
        f"run {row.run_id}"
    )
    for label, moment in (
        ("issued", row.issued_at),
        ("finalized", row.finalized_at),
        ("sent", row.sent_at),
        ("voided", row.voided_at),
    ):
        if moment is not None:
            out.print(f"{label}: {moment:%Y-%m-%d %H:%M:%S} UTC")
    if row.void_reason:
        out.print(f"void reason: {row.void_reason}")
    if detail.replaces:
        out.print(f"replaces {detail.replaces}")
    if detail.replaced_by:
        out.print(f"replaced by {detail.replaced_by}")
    if detail.statement is not None:
        table = Table(title="charges")
        for column in ("class", "charge", "quantity", "pricing", "amount"):
            table.add_column(column, justify="right" if column == "amount" else "left")
        for charge in detail.statement.charges:
            table.add_row(
                charge.charge_class,
                charge.description,
                f"{charge.quantity} {charge.unit}",
                charge.pricing,
                money(charge.amount),
            )
        out.print(table)
    for correction in detail.corrections:
        where = correction.billed_on or f"pending, on the {correction.target_period} invoice"
        out.print(
            f"correction by run {correction.run_id}: {correction.meter} "
            f"{money(correction.amount)} ({where})"
        )


@runs_app.command("list")
def runs_list(
    period: Annotated[str | None, typer.Option("--period", help="Only this month.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 20,
) -> None:
    """The newest billing runs: what started them, how they ended."""
    settings = load_settings()
    runs = list_runs(settings, period=BillingPeriod.parse(period) if period else None, limit=limit)
    table = Table(title=f"{len(runs)} runs")
    for column in ("run", "period", "operation", "status", "started", "by", "invoices", "pages"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            str(run.id),
            run.period,
            run.operation,
            run.status,
            f"{run.started_at:%Y-%m-%d %H:%M:%S}",
            f"{run.started_by} via {run.trigger}",
            str(run.invoice_count),
            str(run.pages_fetched),
        )
    out.print(table)


@runs_app.command("show")
def runs_show(run_id: Annotated[int, typer.Argument(metavar="RUN")]) -> None:
    """One run: parameters, upstream request, usage checksum, rate cards, totals, outcome."""
    settings = load_settings()
    detail = run_detail(settings, run_id)
    run = detail.run
    finished = f"{run.finished_at:%Y-%m-%d %H:%M:%S} UTC" if run.finished_at else "(not finished)"
    for label, value in (
        ("run", f"{run.id} ({run.operation} of {run.period})"),
        ("status", run.status),
        (
            "started",
            f"{run.started_at:%Y-%m-%d %H:%M:%S} UTC by {run.started_by} via {run.trigger}",
        ),
        ("finished", finished),
        ("upstream", run.upstream_url),
        ("request", run.request_params or "-"),
        ("usage checksum", run.usage_checksum or "-"),
        ("completeness", run.completeness or "-"),
        ("pages / results", f"{run.pages_fetched} / {run.usage_results}"),
        ("duplicates dropped", str(run.duplicate_results)),
        ("invoices stored by it", str(detail.invoices)),
        ("finalized", str(run.finalized_count)),
        ("corrections", str(run.corrections_count)),
        ("error", run.error or "-"),
    ):
        out.print(f"{label:>22}: {value}", highlight=False, soft_wrap=True)
    if run.mode == "distributed":
        progress_now = run_progress(settings, run_id)
        out.print(f"{'stage':>22}: {run.stage or '-'}", highlight=False)
        for stage, units in progress_now.total.items():
            out.print(
                f"{stage:>22}: {progress_now.done.get(stage, 0)} of {units} done", highlight=False
            )
        if progress_now.problems:
            out.print(f"{'parked or failed':>22}: {progress_now.problems}", highlight=False)
    for card in detail.rate_cards:
        out.print(
            f"{'rate card':>22}: {card['id']}@{card['version']} sha256 {card['content_hash']}",
            highlight=False,
        )
    for currency, total in detail.totals.items():
        out.print(f"{'total ' + currency:>22}: {total}", highlight=False)
    for item in detail.org_outcomes:
        if item["action"] != "drafted" or item["detail"]:
            out.print(
                f"{item['org_id']:>22}: {item['action']} {item['detail']}".rstrip(),
                highlight=False,
            )


@runs_app.command("sweep")
def runs_sweep(
    stalled_after: Annotated[
        int, typer.Option(min=0, help="Minutes without a sign of life (default: the setting).")
    ]
    | None = None,
) -> None:
    """Re-enqueue the undone steps of distributed runs that stalled (lost messages, dead
    workers); beat does this every BILLING_SWEEP_MINUTES."""
    from workers.tasks import enqueue

    settings = load_settings()
    minutes = settings.stall_minutes if stalled_after is None else stalled_after
    found = sweep(settings, stalled_after=timedelta(minutes=minutes))
    for work in found:
        enqueue(work)
        out.print(f"run {work.run_id}: re-enqueued {work.describe()}")
    if not found:
        out.print("no stalled runs")


def void_command(
    invoice: Annotated[str, typer.Argument(metavar="INVOICE", help="The invoice number.")],
    reason: Annotated[str, typer.Option("--reason", help="Why it is void (kept on record).")],
    wait: Annotated[float, typer.Option("--wait", min=0, metavar="SECONDS")] = 0.0,
) -> None:
    """Void a finalized or sent invoice; re-run close for its period to issue a replacement."""
    settings = load_settings()
    voided = void(settings, invoice, reason, progress=progress, wait_seconds=wait)
    out.print(
        f"{voided.number} ({voided.org_id}, {voided.period}) is void; "
        f"billing close --period {voided.period} --org {voided.org_id} issues a replacement"
    )


email_app = typer.Typer(
    help="Statement emails: the outbox, sending, resends.", no_args_is_help=True
)


@email_app.command("status")
def email_status_command(
    period: Annotated[str, typer.Option("--period", help="The month, YYYY-MM.")],
) -> None:
    """Every statement delivery of a month: recipient, state, attempts, the server's words."""
    settings = load_settings()
    rows = email_status(settings, BillingPeriod.parse(period))
    counts = Counter(row.status for row in rows)
    table = Table(title=f"{len(rows)} deliveries of {period}")
    for column in ("org", "invoice", "recipient", "kind", "state", "tries", "detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.org_id,
            row.invoice_number or "-",
            row.recipient,
            row.kind,
            row.status,
            str(row.attempts),
            row.detail,
        )
    out.print(table)
    out.print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no deliveries")
    if counts[DeliveryStatus.UNKNOWN]:
        out.print(
            "[yellow]unknown: the server may have these; check its log for the Message-ID, "
            "then billing email resend INVOICE --to ADDR if it never arrived[/yellow]"
        )


@email_app.command("send")
def email_send_command(
    period: Annotated[str, typer.Option("--period", help="The month, YYYY-MM.")],
    wait: Annotated[float, typer.Option("--wait", min=0, metavar="SECONDS")] = 0.0,
) -> None:
    """Send the month's pending statement emails; nothing already sent goes out again."""
    settings = load_settings()
    report = send_pending(
        settings, BillingPeriod.parse(period), progress=progress, wait_seconds=wait
    )
    for cut_off in report.cut_off:
        out.print(f"[yellow]{cut_off}: cut off before the server replied, now unknown[/yellow]")
    out.print(f"sent {report.describe()}" if report.messages else "nothing pending to send")


@email_app.command("resend")
def email_resend_command(
    invoice: Annotated[str, typer.Argument(metavar="INVOICE", help="The invoice number.")],
    to: Annotated[str, typer.Option("--to", help="One of the org's billing contacts.")],
) -> None:
    """Send an invoice's statement again to one contact (an explicit, recorded resend)."""
    settings = load_settings()
    report = resend(settings, invoice, to, progress=progress)
    out.print(f"resent {invoice} to {to}: {report.describe()}")
