"""The ledger commands, added to `billing` by billing.cli.app: `billing invoices list|show`,
`billing runs list|show|sweep`, `billing email status|send|resend` and `billing void`."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Annotated

import typer

# The ledger, the close and the PDF library are imported inside the commands, so that
# `billing --help` answers at once.
from billing.cli.console import (
    FormatOption,
    OutputFormat,
    WaitOption,
    add_row,
    data_table,
    emit_document,
    emit_records,
    literal,
    load_settings,
    money_column,
    out,
    print_csv,
    print_json,
    progress,
)
from billing.cli.webhooks import deliver_after_command
from billing.money import at_minor_units, format_quantity
from billing.periods import BillingPeriod
from billing.states import DeliveryStatus, InvoiceStatus

invoices_app = typer.Typer(help="List and inspect invoices.", no_args_is_help=True)
runs_app = typer.Typer(
    help="List and inspect billing runs (the audit trail).", no_args_is_help=True
)

STATES = tuple(InvoiceStatus)
CHARGE_COLUMNS = (
    "invoice",
    "state",
    "class",
    "charge",
    "quantity",
    "unit",
    "pricing",
    "currency",
    "amount",
)


@invoices_app.command("list")
def invoices_list(
    period: Annotated[
        str | None, typer.Option("--period", metavar="PERIOD", help="Only this month, YYYY-MM.")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", metavar="STATE", help=f"Only this state: {', '.join(STATES)}."),
    ] = None,
    org: Annotated[str | None, typer.Option("--org", metavar="ORG", help="Only this org.")] = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Invoices with their state, number and total (a draft on hold reads "draft, held")."""
    from billing.finance.invoices import list_invoices
    from billing.finance.review import open_holds

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
    records = [
        {
            "id": row.id,
            "number": row.number,
            "state": row.status,
            "org": row.org_id,
            "period": row.period,
            "currency": row.currency,
            "total": at_minor_units(row.total, row.currency),
            "lines": row.line_items,
            "run": row.run_id,
        }
        for row in rows
    ]
    held = open_holds(settings) if any(row.status == InvoiceStatus.DRAFT for row in rows) else set()
    emit_records(
        output,
        ("id", "number", "state", "org", "period", "currency", "total", "lines", "run"),
        records,
        title=f"{len(rows)} invoice{'' if len(rows) == 1 else 's'}",
        table_columns=("id", "number", "state", "org", "period", "total", "lines", "run"),
        shown_as={
            "number": lambda record: record["number"] or "(draft)",
            "state": lambda record: (
                "draft, held"
                if record["state"] == InvoiceStatus.DRAFT
                and (record["org"], record["period"]) in held
                else record["state"]
            ),
            "total": money_column(settings.locale),
        },
        right=("total", "lines", "id"),
    )


@invoices_app.command("show")
def invoices_show(
    invoice: Annotated[str, typer.Argument(metavar="INVOICE", help="A number, or a draft's id.")],
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """One invoice: state and dates, charges (corrections apart), corrections made to it, and
    its credit notes."""
    from billing.finance.invoices import invoice_detail
    from billing.statements import formatting

    settings = load_settings()
    detail = invoice_detail(settings, invoice)
    row = detail.invoice
    charges = [
        {
            "invoice": row.number,
            "state": row.status,
            "class": charge.charge_class,
            "charge": charge.description,
            "quantity": Decimal(format_quantity(charge.quantity)),
            "unit": charge.unit,
            "pricing": charge.pricing,
            "currency": row.currency,
            "amount": at_minor_units(charge.amount, row.currency),
        }
        for charge in (detail.statement.charges if detail.statement is not None else ())
    ]
    corrections = [
        {
            "run": correction.run_id,
            "meter": correction.meter,
            "amount": at_minor_units(correction.amount, row.currency),
            "target_period": correction.target_period,
            "billed_on": correction.billed_on,
        }
        for correction in detail.corrections
    ]
    adjustments = [
        {
            "id": adjustment.id,
            "state": adjustment.state,
            "meter": adjustment.meter,
            "description": adjustment.description,
            "amount": adjustment.amount,
            "reason": adjustment.reason,
            "created_by": adjustment.created_by,
            "created_at": adjustment.created_at,
            "cancelled_by": adjustment.cancelled_by,
            "cancel_reason": adjustment.cancel_reason,
        }
        for adjustment in detail.adjustments
    ]
    credit_notes = [
        {
            "number": note.number,
            "created_at": note.created_at,
            "total": at_minor_units(note.total, row.currency),
            "settlement": note.settlement,
            "reason": note.reason,
        }
        for note in detail.credit_notes
    ]
    document = {
        "id": row.id,
        "number": row.number,
        "state": row.status,
        "org": row.org_id,
        "org_name": row.org_name,
        "period": row.period,
        "currency": row.currency,
        "total": at_minor_units(row.total, row.currency),
        "rate_card": f"{row.rate_card_id}@{row.rate_card_version}",
        "rate_card_sha256": row.rate_card_hash,
        "run": row.run_id,
        "issued_at": row.issued_at,
        "finalized_at": row.finalized_at,
        "sent_at": row.sent_at,
        "voided_at": row.voided_at,
        "void_reason": row.void_reason,
        "replaces": detail.replaces,
        "replaced_by": detail.replaced_by,
        "charges": charges,
        "corrections": corrections,
        "adjustments": adjustments,
        "held": (
            None
            if detail.hold is None
            else {
                "reason": detail.hold.reason,
                "held_by": detail.hold.held_by,
                "held_at": detail.hold.held_at,
            }
        ),
        "credit_notes": credit_notes,
    }
    if emit_document(output, document, CHARGE_COLUMNS, charges):
        return

    def money(amount: Decimal) -> str:
        return formatting.money(amount, row.currency, settings.locale)

    number = literal(row.number) if row.number else "(draft, no number yet)"
    out.print(f"[bold]{number}[/bold]  id {row.id}  {row.status}")
    out.print(
        f"org {literal(row.org_id)} ({literal(row.org_name)}), period {row.period}, "
        f"total {money(row.total)}"
    )
    out.print(
        f"rate card {literal(row.rate_card_id)}@{literal(row.rate_card_version)} "
        f"(sha256 {literal(row.rate_card_hash[:12])}), run {row.run_id}"
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
        out.print(f"void reason: {literal(row.void_reason)}")
    if detail.hold is not None:
        out.print(
            f"held by {literal(detail.hold.held_by)} since {detail.hold.held_at:%Y-%m-%d %H:%M} "
            f"UTC: {literal(detail.hold.reason)} (billing invoices release {row.id})"
        )
    if detail.replaces:
        out.print(f"replaces {literal(detail.replaces)}")
    if detail.replaced_by:
        out.print(f"replaced by {literal(detail.replaced_by)}")
    if detail.statement is not None:
        table = data_table(
            "charges", ("class", "charge", "quantity", "pricing", "amount"), right=("amount",)
        )
        for charge in detail.statement.charges:
            add_row(
                table,
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
            f"correction by run {correction.run_id}: {literal(correction.meter)} "
            f"{money(correction.amount)} ({literal(where)})"
        )
    for adjustment in detail.adjustments:
        what = literal(adjustment.meter or adjustment.description)
        state = adjustment.state
        if adjustment.cancelled_at is not None:
            state += (
                f" by {literal(adjustment.cancelled_by or '')}: "
                f"{literal(adjustment.cancel_reason or '')}"
            )
        out.print(
            f"adjustment {adjustment.id} ({state}): {what} {money(adjustment.amount)} before "
            f"discount, by {literal(adjustment.created_by)} on "
            f"{adjustment.created_at:%Y-%m-%d %H:%M} UTC: {literal(adjustment.reason)}"
        )
    for note in detail.credit_notes:
        out.print(
            f"credit note {literal(note.number)} of {note.created_at:%Y-%m-%d}: "
            f"{money(note.total)} credited, {note.settlement}: {literal(note.reason)}"
        )


@runs_app.command("list")
def runs_list(
    period: Annotated[
        str | None, typer.Option("--period", metavar="PERIOD", help="Only this month, YYYY-MM.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="How many, newest first.")] = 20,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """The newest billing runs: what started them, how they ended."""
    from billing.finance.invoices import list_runs

    settings = load_settings()
    runs = list_runs(settings, period=BillingPeriod.parse(period) if period else None, limit=limit)
    columns = ("run", "period", "operation", "status", "started", "by", "invoices", "pages")
    records = [
        dict(
            zip(
                columns,
                (
                    run.id,
                    run.period,
                    run.operation,
                    run.status,
                    run.started_at,
                    f"{run.started_by} via {run.trigger}",
                    run.invoice_count,
                    run.pages_fetched,
                ),
                strict=True,
            )
        )
        for run in runs
    ]
    emit_records(
        output,
        columns,
        records,
        title=f"{len(runs)} run{'' if len(runs) == 1 else 's'}",
        shown_as={"started": lambda record: f"{record['started']:%Y-%m-%d %H:%M:%S}"},
    )


@runs_app.command("show")
def runs_show(
    run_id: Annotated[int, typer.Argument(metavar="RUN", help="The run's number.")],
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """One run: parameters, upstream request, usage checksum, rate cards, totals, outcome."""
    from billing.close.distributed import run_progress
    from billing.finance.invoices import run_detail

    settings = load_settings()
    detail = run_detail(settings, run_id)
    run = detail.run
    if output is not OutputFormat.TABLE:
        fields = {
            "run": run.id,
            "period": run.period,
            "operation": run.operation,
            "status": run.status,
            "mode": run.mode,
            "stage": run.stage,
            "started_at": run.started_at,
            "started_by": run.started_by,
            "trigger": run.trigger,
            "finished_at": run.finished_at,
            "upstream": run.upstream_url,
            "request": run.request_params,
            "usage_checksum": run.usage_checksum,
            "completeness": run.completeness,
            "pages": run.pages_fetched,
            "usage_results": run.usage_results,
            "duplicates_dropped": run.duplicate_results,
            "invoices_stored": detail.invoices,
            "finalized": run.finalized_count,
            "corrections": run.corrections_count,
            "review_deadline": run.review_deadline,
            "error": run.error,
        }
        if output is OutputFormat.JSON:
            print_json(
                {
                    **fields,
                    "rate_cards": detail.rate_cards,
                    "totals": detail.totals,
                    "org_outcomes": detail.org_outcomes,
                }
            )
        else:
            print_csv(("field", "value"), ({"field": k, "value": v} for k, v in fields.items()))
        return
    finished = f"{run.finished_at:%Y-%m-%d %H:%M:%S} UTC" if run.finished_at else "(not finished)"
    for label, value in (
        ("run", f"{run.id} ({run.operation} of {run.period})"),
        ("status", run.status),
        (
            "started",
            f"{run.started_at:%Y-%m-%d %H:%M:%S} UTC by {literal(run.started_by)} "
            f"via {literal(run.trigger)}",
        ),
        ("finished", finished),
        ("upstream", literal(run.upstream_url)),
        ("request", literal(run.request_params or "-")),
        ("usage checksum", run.usage_checksum or "-"),
        ("completeness", literal(run.completeness or "-")),
        ("pages / results", f"{run.pages_fetched} / {run.usage_results}"),
        ("duplicates dropped", str(run.duplicate_results)),
        ("invoices stored by it", str(detail.invoices)),
        ("finalized", str(run.finalized_count)),
        ("corrections", str(run.corrections_count)),
        (
            "review deadline",
            f"{run.review_deadline:%Y-%m-%d %H:%M:%S} UTC" if run.review_deadline else "-",
        ),
        ("error", literal(run.error or "-")),
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
            out.print(f"{'parked or failed':>22}: {literal(progress_now.problems)}")
    for card in detail.rate_cards:
        out.print(
            f"{'rate card':>22}: {literal(card['id'])}@{literal(card['version'])} "
            f"sha256 {literal(card['content_hash'])}"
        )
    for currency, total in detail.totals.items():
        out.print(f"{'total ' + currency:>22}: {total}", highlight=False)
    for item in detail.org_outcomes:
        if item["action"] != "drafted" or item["detail"]:
            line = f"{literal(item['org_id']):>22}: {item['action']} {literal(item['detail'])}"
            out.print(line.rstrip())


@runs_app.command("sweep")
def runs_sweep(
    stalled_after: Annotated[
        int, typer.Option(min=0, help="Minutes without a sign of life (default: the setting).")
    ]
    | None = None,
) -> None:
    """Re-enqueue the undone steps of distributed runs that stalled (lost messages, dead
    workers); beat does this every BILLING_SWEEP_MINUTES."""
    from billing.close.distributed import sweep
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
    from billing.finance.invoices import void

    settings = load_settings()
    voided = void(settings, invoice, reason, progress=progress, wait_seconds=wait)
    out.print(
        f"{literal(voided.number)} ({literal(voided.org_id)}, {voided.period}) is void; "
        f"billing close --period {voided.period} --org {literal(voided.org_id)} "
        "issues a replacement"
    )
    deliver_after_command(settings)  # invoice.voided, with BILLING_WEBHOOKS set


email_app = typer.Typer(
    help="Statement emails: the outbox, sending, resends.", no_args_is_help=True
)


@email_app.command("status")
def email_status_command(
    period: Annotated[str, typer.Option("--period", metavar="PERIOD", help="The month, YYYY-MM.")],
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Every statement delivery of a month: recipient, state, attempts, the server's words."""
    from billing.finance.emails import email_status

    settings = load_settings()
    rows = email_status(settings, BillingPeriod.parse(period))
    counts = Counter(row.status for row in rows)
    columns = ("org", "invoice", "recipient", "kind", "state", "tries", "detail")
    records = [
        dict(
            zip(
                columns,
                (
                    row.org_id,
                    # a credit note's email names the note and the invoice it credits
                    row.invoice_number
                    if row.credit_note is None
                    else f"{row.credit_note} ({row.invoice_number})",
                    row.recipient,
                    row.kind,
                    row.status,
                    row.attempts,
                    row.detail,
                ),
                strict=True,
            )
        )
        for row in rows
    ]
    title = f"{len(rows)} deliver{'y' if len(rows) == 1 else 'ies'} of {period}"
    emit_records(output, columns, records, title=title)
    if output is not OutputFormat.TABLE:
        return
    out.print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no deliveries")
    if counts[DeliveryStatus.UNKNOWN]:
        out.print(
            "[yellow]unknown: the server may have these; check its log for the Message-ID, "
            "then billing email resend INVOICE --to ADDR if it never arrived[/yellow]"
        )


@email_app.command("send")
def email_send_command(
    period: Annotated[str, typer.Option("--period", metavar="PERIOD", help="The month, YYYY-MM.")],
    wait: WaitOption = 0.0,
) -> None:
    """Send the month's pending statement emails; nothing already sent goes out again."""
    from billing.finance.emails import send_pending

    settings = load_settings()
    report = send_pending(
        settings, BillingPeriod.parse(period), progress=progress, wait_seconds=wait
    )
    for cut_off in report.cut_off:
        out.print(
            f"[yellow]{literal(cut_off)}: cut off before the server replied, now unknown[/yellow]"
        )
    out.print(f"sent {report.describe()}" if report.messages else "nothing pending to send")
    deliver_after_command(settings)  # invoice.sent, with BILLING_WEBHOOKS set


@email_app.command("resend")
def email_resend_command(
    invoice: Annotated[str, typer.Argument(metavar="INVOICE", help="The invoice number.")],
    to: Annotated[
        str, typer.Option("--to", metavar="ADDR", help="One of the org's billing contacts.")
    ],
) -> None:
    """Send an invoice's statement again to one contact (an explicit, recorded resend)."""
    from billing.finance.emails import resend

    settings = load_settings()
    report = resend(settings, invoice, to, progress=progress)
    out.print(f"resent {literal(invoice)} to {literal(to)}: {literal(report.describe())}")
