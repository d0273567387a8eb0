"""`billing invoices hold|release`: keep a draft back from finalization while it is reviewed
(added to `billing invoices` here; billing.cli.app imports this module)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from billing.cli.console import literal, load_settings, out, progress, wait_option
from billing.cli.ledger import invoices_app

InvoiceArgument = Annotated[
    str, typer.Argument(metavar="INVOICE", help="A draft's id (billing invoices list shows it).")
]
WaitOption = Annotated[
    float, wait_option("Wait this long for a run of the period to finish (default: do not wait).")
]


@invoices_app.command("hold")
def hold_command(
    invoice: InvoiceArgument,
    reason: Annotated[
        str, typer.Option("--reason", metavar="TEXT", help="Why it is held (kept on record).")
    ],
    wait: WaitOption = 0.0,
) -> None:
    """Hold a draft: neither the review window's end, nor finalize, nor a close numbers it
    until it is released (a re-close's new draft of the org stays held)."""
    from billing.finance.review import hold

    held = hold(load_settings(), invoice, reason, progress=progress, wait_seconds=wait)
    ends = (
        f"; the review window ends {held.window_ends:%Y-%m-%d %H:%M} UTC"
        if held.window_ends is not None
        else ""
    )
    out.print(
        f"draft {held.invoice_id} ({literal(held.org_id)}, {held.period}) is on hold: it stays "
        f"a draft until billing invoices release {held.invoice_id}{ends}"
    )


@invoices_app.command("release")
def release_command(
    invoice: InvoiceArgument,
    reason: Annotated[
        str | None,
        typer.Option("--reason", metavar="TEXT", help="Why it is released (kept on record)."),
    ] = None,
    wait: WaitOption = 0.0,
) -> None:
    """Release a held draft: the next finalize of its period numbers it."""
    from billing.finance.review import release

    released = release(load_settings(), invoice, reason, progress=progress, wait_seconds=wait)
    finalize_now = f"billing finalize --period {released.period}"
    if released.window_ends is None:
        then = f"{finalize_now} finalizes it"
    elif released.window_ends > datetime.now(UTC):
        then = (
            "beat finalizes it when the review window ends "
            f"({released.window_ends:%Y-%m-%d %H:%M} UTC)"
        )
    else:
        then = (
            "the review window has ended: beat finalizes it at its next round "
            f"({finalize_now} does it now)"
        )
    out.print(
        f"draft {released.invoice_id} ({literal(released.org_id)}, {released.period}) is "
        f"released: {then}"
    )
