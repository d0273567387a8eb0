"""`billing invoices adjust`: a signed adjustment of a draft, on a meter or as a free-text
line, or the withdrawal of one (`--cancel`); added to `billing invoices` by billing.cli.app."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated

import typer

from billing.cli.console import literal, load_settings, out, progress, wait_option
from billing.cli.ledger import invoices_app
from billing.money import format_minor

AMOUNT_HELP = (
    "Signed amount before the org's discount, at most the currency's places: 25.00 adds, "
    "-12.50 takes off (--amount -12.50 and --amount=-12.50 both work)."
)


def parse_amount(text: str) -> Decimal:
    """A signed decimal amount as typed (`-12.50`, `+3`, `25`); never a float."""
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise typer.BadParameter(
            f"{text!r} is not an amount: give a signed decimal such as -12.50",
            param_hint="--amount",
        ) from None
    if not amount.is_finite():
        raise typer.BadParameter(
            f"{text!r} is not an amount: give a signed decimal such as -12.50",
            param_hint="--amount",
        )
    return amount


@invoices_app.command("adjust")
def adjust_command(
    reason: Annotated[
        str,
        typer.Option("--reason", metavar="TEXT", help="Why (kept on record with who and when)."),
    ],
    draft: Annotated[
        str | None,
        typer.Argument(
            metavar="DRAFT",
            help="The draft's id (billing invoices list --status draft shows it).",
            show_default=False,
        ),
    ] = None,
    meter: Annotated[
        str | None,
        typer.Option(
            "--meter",
            metavar="METER",
            help="The meter to adjust; its chargeback lines share the adjustment.",
        ),
    ] = None,
    amount: Annotated[
        str | None, typer.Option("--amount", metavar="±AMOUNT", help=AMOUNT_HELP)
    ] = None,
    description: Annotated[
        str | None,
        typer.Option(
            "--description",
            metavar="TEXT",
            help="The statement line's text: a free-text line when given without --meter.",
        ),
    ] = None,
    cancel_id: Annotated[
        int | None,
        typer.Option(
            "--cancel",
            metavar="ADJUSTMENT_ID",
            min=1,
            help="Withdraw this adjustment instead (kept on record, with --reason).",
        ),
    ] = None,
    wait: Annotated[float, wait_option("Wait this long for a run holding the period.")] = 0.0,
) -> None:
    """Adjust a draft by a signed amount, on a meter (--meter) or as a free-text line
    (--description), or withdraw an adjustment (--cancel ID); the draft's statement is
    written again and its new total printed."""
    from billing.finance.adjustments import adjust, cancel

    if not reason.strip():
        raise typer.BadParameter("give why, kept on record: --reason TEXT", param_hint="--reason")
    settings = load_settings()
    if cancel_id is not None:
        if draft is not None or meter is not None or amount is not None or description:
            raise typer.BadParameter(
                "--cancel takes only --reason: no DRAFT, --meter, --amount or --description",
                param_hint="--cancel",
            )
        result = cancel(settings, cancel_id, reason, progress=progress, wait_seconds=wait)
        head = f"adjustment {result.adjustment_id} of {literal(result.org_id)} ({result.period})"
        if result.draft_id is None:
            out.print(f"{head} is cancelled; no draft of the period stands to re-price")
            return
        total = format_minor(result.total or Decimal(0), result.currency)
        out.print(
            f"{head} is cancelled; draft {result.draft_id} now totals {total} {result.currency}"
        )
        return
    if draft is None or amount is None:
        raise typer.BadParameter(
            "give the draft and the amount: billing invoices adjust DRAFT --amount ±X "
            "(--meter M or --description TEXT) --reason TEXT, or --cancel ID --reason TEXT",
            param_hint="DRAFT",
        )
    result = adjust(
        settings,
        draft,
        meter,
        parse_amount(amount),
        reason,
        description,
        progress=progress,
        wait_seconds=wait,
    )
    currency = result.currency
    target = f"on {literal(meter)}" if meter is not None else "as a free-text line"
    out.print(
        f"adjustment {result.adjustment_id}: {format_minor(result.amount, currency)} {currency} "
        f"{target} of draft {result.draft_id} ({literal(result.org_id)}, {result.period}); "
        f"the draft now totals {format_minor(result.total or Decimal(0), currency)} {currency}"
    )
