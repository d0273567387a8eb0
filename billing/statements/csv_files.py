"""CSV statements (FOCUS column names) and the period summary, safe against formula injection."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from decimal import Decimal

from billing.domain import Statement
from billing.statements.formatting import utc_timestamp

SERVICE_NAME = "MKA1 Sandbox"

STATEMENT_COLUMNS = (
    "BillingAccountId",
    "BillingAccountName",
    "SubAccountId",
    "InvoiceId",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingQuantity",
    "PricingUnit",
    "ListUnitPrice",
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "BillingCurrency",
    "ServiceName",
    "x_UserId",
    "x_Meter",
)

SUMMARY_COLUMNS = (
    "org_id",
    "org_name",
    "invoice_number",
    "currency",
    "total",
    "line_items",
    "contact",
    "rate_card",
)

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralise(text: str | None) -> str:
    """Text cells that a spreadsheet would run as a formula get a leading apostrophe."""
    if not text:
        return ""
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def _plain(number: Decimal) -> str:
    return format(number, "f")


def _to_csv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def statement_csv(statement: Statement) -> bytes:
    """One row per line item; BilledCost sums to the invoice total."""
    period_start = utc_timestamp(statement.period_start)
    period_end = utc_timestamp(statement.period_end)
    descriptions = {charge.meter: charge.description for charge in statement.charges}
    rows = (
        (
            neutralise(statement.org_id),
            neutralise(statement.org_name),
            neutralise(line.api_key_id),
            neutralise(statement.invoice_number),
            period_start,
            period_end,
            period_start,
            period_end,
            "Usage" if line.meter != "minimum_charge" else "Adjustment",
            "",
            neutralise(descriptions.get(line.meter, line.meter)),
            _plain(line.quantity),
            line.unit,
            _plain(line.quantity),
            line.unit,
            "",
            _plain(line.amount),
            _plain(line.amount),
            _plain(line.amount),
            statement.currency,
            SERVICE_NAME,
            neutralise(line.user_id),
            line.meter,
        )
        for line in statement.lines
    )
    return _to_csv(STATEMENT_COLUMNS, rows)


def summary_csv(statements: Sequence[Statement]) -> bytes:
    """One row per org: the period at a glance for finance."""
    rows = (
        (
            neutralise(statement.org_id),
            neutralise(statement.org_name),
            statement.invoice_number,
            statement.currency,
            _plain(statement.total),
            str(len(statement.lines)),
            neutralise("; ".join(statement.emails)) or "(no contact)",
            f"{statement.rate_card_id}@{statement.rate_card_version}",
        )
        for statement in statements
    )
    return _to_csv(SUMMARY_COLUMNS, rows)
