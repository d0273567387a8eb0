"""A credit note's files: its CSV (the statement's FOCUS columns, ChargeCategory Credit, costs
negative) and its PDF through the statement renderer, named `<org>-<CN number>`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from billing.credit_notes import CreditNoteDocument
from billing.money import format_minor
from billing.statements.csv_files import (
    SERVICE_CATEGORY,
    SERVICE_NAME,
    STATEMENT_COLUMNS,
    cells_in_order,
    neutralise,
    to_csv,
)
from billing.statements.files import safe_stem, write_atomically
from billing.statements.formatting import utc_timestamp
from billing.statements.pdf import StatementRenderer

CREDIT_NOTE_COLUMNS = (*STATEMENT_COLUMNS, "x_CreditNote", "x_Settlement")


def credit_note_csv(note: CreditNoteDocument, *, issuer_name: str) -> bytes:
    """One row per credited line: InvoiceId is the credited invoice, ChargeCategory `Credit`
    (`Tax` for tax credited, per rate), BilledCost = EffectiveCost = ListCost = ContractedCost
    = minus the credited amount (so the rows sum to minus the credit note's total); quantities
    are null (a credit is money, not usage)."""
    period = note.billing_period
    start, end = utc_timestamp(period.start), utc_timestamp(period.end)
    pricing = neutralise(f"credits {note.invoice_number} ({note.period})")
    issuer = neutralise(issuer_name)
    rows = []
    for line in note.lines:
        cost = format_minor(-line.amount, note.currency)
        cells = {
            "BillingAccountId": neutralise(note.org_id),
            "BillingAccountName": neutralise(note.org_name),
            "SubAccountId": neutralise(line.api_key_id),
            "SubAccountName": neutralise(line.api_key_id),
            "InvoiceId": neutralise(note.invoice_number),
            "InvoiceIssuerName": issuer,
            "ProviderName": issuer,
            "PublisherName": issuer,
            "BillingPeriodStart": start,
            "BillingPeriodEnd": end,
            "ChargePeriodStart": start,
            "ChargePeriodEnd": end,
            "ChargeCategory": "Tax" if line.charge_class == "tax" else "Credit",
            "ChargeDescription": neutralise(line.description),
            "ChargeFrequency": "One-Time",
            "BilledCost": cost,
            "EffectiveCost": cost,
            "ListCost": cost,
            "ContractedCost": cost,
            "BillingCurrency": neutralise(note.currency),
            "ServiceCategory": SERVICE_CATEGORY,
            "ServiceName": SERVICE_NAME,
            "x_UserId": neutralise(line.user_id),
            "x_Meter": neutralise(line.meter),
            "x_RateCard": neutralise(note.rate_card),
            "x_Pricing": pricing,
            "x_ChargeClass": neutralise(line.charge_class),
            "x_CreditNote": neutralise(note.number),
            "x_Settlement": neutralise(note.settlement),
        }
        rows.append(cells_in_order(cells, CREDIT_NOTE_COLUMNS))
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
    csv = credit_note_csv(note, issuer_name=renderer.issuer_name)
    return CreditNoteFiles(note, renderer.credit_note_pdf(note), csv)


def write_credit_note(folder: Path, files: CreditNoteFiles) -> list[Path]:
    """Write `<org>-<CN>.pdf` and `.csv` into the period's folder (atomically)."""
    return [
        write_atomically(folder, f"{files.stem}.pdf", files.pdf),
        write_atomically(folder, f"{files.stem}.csv", files.csv),
    ]
