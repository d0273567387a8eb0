"""`billing credit-notes create|list|show`: credit notes against finalized or sent invoices."""

from __future__ import annotations

from typing import Annotated

import typer

# The ledger and the PDF library are imported inside the commands, so `billing --help` is fast.
from billing.cli.console import (
    FormatOption,
    OutputFormat,
    add_row,
    data_table,
    emit_document,
    emit_records,
    literal,
    load_settings,
    money_column,
    out,
    progress,
    wait_option,
)
from billing.cli.webhooks import deliver_after_command
from billing.money import at_minor_units
from billing.periods import BillingPeriod
from billing.wording import plural

credit_notes_app = typer.Typer(
    help="Credit notes: credit part or all of a finalized or sent invoice, as a document of its "
    "own (CN-YYYY-NNNNNN) with a PDF, a CSV and an email.",
    no_args_is_help=True,
)

LIST_COLUMNS = (
    "number",
    "invoice",
    "org",
    "period",
    "currency",
    "total",
    "settlement",
    "created",
    "by",
    "reason",
)
LINE_COLUMNS = ("api_key", "user", "meter", "charge", "class", "currency", "amount")


@credit_notes_app.command("create")
def create_command(
    invoice: Annotated[
        str, typer.Argument(metavar="INVOICE", help="The invoice's number, INV-YYYY-NNNNNN.")
    ],
    reason: Annotated[
        str, typer.Option("--reason", metavar="TEXT", help="Why (printed on the credit note).")
    ],
    line: Annotated[
        list[str] | None,
        typer.Option(
            "--line",
            metavar="METER[:KEY[:USER]]=AMOUNT",
            help="Credit AMOUNT of one line (meter, API key, user; an empty KEY or USER means "
            "none, '\\:' is a colon inside an id). Leave KEY or USER out to split the amount "
            "over the meter's (or key's) lines by largest remainder. Repeatable.",
        ),
    ] = None,
    amount: Annotated[
        str | None,
        typer.Option(
            "--amount",
            metavar="X",
            help="Credit X split over every line still creditable, by largest remainder.",
        ),
    ] = None,
    refund: Annotated[
        bool,
        typer.Option(
            "--refund/--credit",
            metavar="",
            help="--credit (the default): the amount goes to the org's credit balance, used by "
            "its next invoices. --refund: recorded only; the money is paid back outside the "
            "system.",
        ),
    ] = False,
    wait: Annotated[
        float,
        wait_option(
            "How long the emails wait for another run of the period to finish before they are "
            "left in the outbox for billing email send."
        ),
    ] = 30.0,
) -> None:
    """Credit part or all of a finalized or sent invoice: a credit note with its own number,
    PDF, CSV and email; its credit notes never add up to more than the invoice's total."""
    from billing.finance.credit_notes import CreditRequest, create_credit_note
    from billing.statements import formatting
    from billing.states import CreditSettlement

    settings = load_settings()
    settlement = CreditSettlement.REFUND if refund else CreditSettlement.CREDIT
    request = CreditRequest(
        reason=reason, lines=tuple(line or ()), amount=amount, settlement=settlement
    )
    created = create_credit_note(settings, invoice, request, progress=progress, wait_seconds=wait)
    note = created.document
    total = formatting.money(note.total, note.currency, settings.locale)
    out.print(
        f"{literal(note.number)} credits {total} of {literal(note.invoice_number)} "
        f"({literal(note.org_id)}, {note.period}): {note.settlement_wording}"
    )
    for path in created.files:
        out.print(f"wrote {literal(path)}")
    if created.emails is None:
        waits = "waits" if created.deliveries == 1 else "wait"
        out.print(
            f"{plural(created.deliveries, 'email')} {waits} in the outbox: "
            f"billing email send --period {note.period}"
        )
    elif created.deliveries:
        out.print(f"emails: {created.emails.describe()}")
    else:
        out.print("no email: the org has no billing contact")
    deliver_after_command(settings)  # credit_note.created, with BILLING_WEBHOOKS set


@credit_notes_app.command("list")
def list_command(
    invoice: Annotated[
        str | None, typer.Option("--invoice", metavar="INV", help="Only those of this invoice.")
    ] = None,
    org: Annotated[str | None, typer.Option("--org", metavar="ORG", help="Only this org.")] = None,
    period: Annotated[
        str | None,
        typer.Option("--period", metavar="PERIOD", help="Only those of invoices of YYYY-MM."),
    ] = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Credit notes by number: the invoice each credits, total, settlement, when, who, why."""
    from billing.finance.credit_notes import list_credit_notes

    settings = load_settings()
    rows = list_credit_notes(
        settings,
        invoice=invoice,
        org_id=org,
        period=str(BillingPeriod.parse(period)) if period else None,
    )
    records = [
        {
            "number": row.number,
            "invoice": row.invoice_number,
            "org": row.org_id,
            "period": row.period,
            "currency": row.currency,
            "total": at_minor_units(row.total, row.currency),
            "settlement": row.settlement,
            "created": row.created_at,
            "by": row.created_by,
            "reason": row.reason,
        }
        for row in rows
    ]
    emit_records(
        output,
        LIST_COLUMNS,
        records,
        title=plural(len(rows), "credit note"),
        table_columns=("number", "invoice", "org", "period", "total", "settlement", "created"),
        shown_as={
            "total": money_column(settings.locale),
            "created": lambda record: f"{record['created']:%Y-%m-%d %H:%M}",
        },
        right=("total",),
    )


@credit_notes_app.command("show")
def show_command(
    number: Annotated[str, typer.Argument(metavar="CN", help="The number, CN-YYYY-NNNNNN.")],
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """One credit note: the invoice it credits, why, its lines, settlement and emails."""
    from billing.finance.credit_notes import credit_note_detail
    from billing.statements import formatting

    settings = load_settings()
    detail = credit_note_detail(settings, number)
    note = detail.document
    lines = [
        {
            "api_key": line.api_key_id,
            "user": line.user_id,
            "meter": line.meter,
            "charge": line.description,
            "class": line.charge_class,
            "currency": note.currency,
            "amount": line.amount,
        }
        for line in note.lines
    ]
    emails = [
        {
            "recipient": email.recipient,
            "state": email.status,
            "tries": email.attempts,
            "sent_at": email.sent_at,
            "detail": email.detail,
        }
        for email in detail.emails
    ]
    document = {
        "number": note.number,
        "invoice": note.invoice_number,
        "org": note.org_id,
        "org_name": note.org_name,
        "period": note.period,
        "currency": note.currency,
        "total": note.total,
        "settlement": note.settlement,
        "credit_grant": detail.grant_id,
        "reason": note.reason,
        "created_at": note.created_at,
        "created_by": note.created_by,
        "lines": lines,
        "emails": emails,
    }
    if emit_document(output, document, LINE_COLUMNS, lines):
        return

    def money(value: object) -> str:
        return formatting.money(value, note.currency, settings.locale)  # type: ignore[arg-type]

    out.print(f"[bold]{literal(note.number)}[/bold]  credits {literal(note.invoice_number)}")
    out.print(
        f"org {literal(note.org_id)} ({literal(note.org_name)}), period {note.period}, "
        f"total {money(note.total)}"
    )
    out.print(f"created {note.created_at:%Y-%m-%d %H:%M:%S} UTC by {literal(note.created_by)}")
    out.print(f"reason: {literal(note.reason)}")
    settled = f"settlement: {note.settlement} ({note.settlement_wording})"
    if detail.grant_id is not None:
        settled += f", credit-balance entry {detail.grant_id}"
    out.print(literal(settled))
    table = data_table("lines", ("api key", "user", "charge", "class", "amount"), right=("amount",))
    for line in note.lines:
        add_row(
            table,
            line.api_key_id or "-",
            line.user_id or "(no user)",
            line.description,
            line.charge_class,
            money(line.amount),
        )
    out.print(table)
    if not detail.emails:
        out.print("emails: none (the org has no billing contact)")
    for email in detail.emails:
        detail_text = f": {email.detail}" if email.detail else ""
        out.print(
            f"email to {literal(email.recipient)}: {email.status}, "
            f"{plural(email.attempts, 'try', 'tries')}{literal(detail_text)}"
        )
