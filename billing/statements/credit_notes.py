"""A credit note's files: its CSV (the statement's FOCUS columns, ChargeCategory Credit, costs
negative) and its PDF through the statement renderer, named `<org>-<CN number>`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from billing.credit_notes import CreditNoteDocument
from billing.money import format_minor
from billing.statements.csv_files import SERVICE_NAME, STATEMENT_COLUMNS, neutralise, to_csv
from billing.statements.files import safe_stem, write_atomically
from billing.statements.formatting import utc_timestamp
from billing.statements.pdf import StatementRenderer

CREDIT_NOTE_COLUMNS = (*STATEMENT_COLUMNS, "x_CreditNote", "x_Settlement")


def credit_note_csv(note: CreditNoteDocument) -> bytes:
    """One row per credited line: InvoiceId is the credited invoice, ChargeCategory `Credit`,
    BilledCost = EffectiveCost = ListCost = minus the credited amount (so the rows sum to minus
    the credit note's total); quantities are empty (a credit is money, not usage)."""
    period = note.billing_period
    start, end = utc_timestamp(period.start), utc_timestamp(period.end)
    pricing = neutralise(f"credits {note.invoice_number} ({note.period})")
    rows = []
    for line in note.lines:
        cost = format_minor(-line.amount, note.currency)
        rows.append(
            (
                neutralise(note.org_id),
                neutralise(note.org_name),
                neutralise(line.api_key_id),
                neutralise(note.invoice_number),
                start,
                end,
                start,
                end,
                "Tax" if line.charge_class == "tax" else "Credit",  # tax credited, per rate
                "",
                neutralise(line.description),
                "",
                "",
                "",
                "",
                "",
                cost,
                cost,
                cost,
                neutralise(note.currency),
                SERVICE_NAME,
                neutralise(line.user_id),
                neutralise(line.meter),
                neutralise(note.rate_card),
                pricing,
                neutralise(note.number),
                neutralise(note.settlement),
            )
        )
    return to_csv(CREDIT_NOTE_COLUMNS, rows)


def credit_note_stem(note: CreditNoteDocument) -> str:
    """`<org>-<CN-number>`: beside the org's statements, never one of their names."""
    return f"{safe_stem(note.org_id)}-{safe_stem(note.number)}"


@dataclass(frozen=True)
class CreditNoteFiles:
    """The rendered files of one credit note."""

    note: CreditNoteDocument
    pdf: bytes
    csv: bytes

    @property
    def stem(self) -> str:
        return credit_note_stem(self.note)


def render_credit_note(renderer: StatementRenderer, note: CreditNoteDocument) -> CreditNoteFiles:
    return CreditNoteFiles(note, renderer.credit_note_pdf(note), credit_note_csv(note))


def write_credit_note(folder: Path, files: CreditNoteFiles) -> list[Path]:
    """Write `<org>-<CN>.pdf` and `.csv` into the period's folder (atomically)."""
    return [
        write_atomically(folder, f"{files.stem}.pdf", files.pdf),
        write_atomically(folder, f"{files.stem}.csv", files.csv),
    ]
