"""CSV statements (FOCUS column names) and the period summary, safe against formula injection."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation

from billing.domain import MINIMUM_CHARGE_METER, Statement, StatementCharge
from billing.money import format_minor, format_quantity
from billing.statements.formatting import utc_timestamp
from billing.states import ChargeClass, InvoiceStatus

SERVICE_NAME = "MKA1 Sandbox"

# FOCUS columns first, in this order; custom columns carry the `x_` prefix and come after them.
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
    "x_RateCard",
    "x_Pricing",
)

SUMMARY_COLUMNS = (
    "org_id",
    "org_name",
    "invoice_number",
    "currency",
    "net",
    "tax",
    "total",
    "line_items",
    "contact",
    "rate_card",
)

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")

# Invisible format characters that can hide or reorder what a cell shows: bidi embeddings,
# overrides and isolates, marks, zero-width space, word joiner, BOM. ZWJ/ZWNJ are kept because
# scripts and emoji sequences need them; they cannot reorder text or hide a formula prefix.
_INVISIBLE = frozenset(
    "\u061c\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff\u00ad"
)


def clean_text(text: str) -> str:
    """Control characters (C0, C1, line and paragraph separators) become spaces; invisible
    bidi and zero-width characters are dropped, so a cell shows what it holds."""
    kept = []
    for char in text:
        if char in _INVISIBLE:
            continue
        category = unicodedata.category(char)
        kept.append(" " if category in ("Cc", "Zl", "Zp") else char)
    return "".join(kept)


def neutralise(text: str | None) -> str:
    """A safe text cell: controls cleaned, and a leading apostrophe when a spreadsheet would run
    the cell (or its cleaned, left-trimmed form) as a formula."""
    if not text:
        return ""
    cleaned = clean_text(text)
    if text.startswith(_FORMULA_PREFIXES) or cleaned.lstrip().startswith(_FORMULA_PREFIXES):
        return "'" + cleaned
    return cleaned


# ListUnitPrice is filled only when the charge is priced at one unit price and nothing else: the
# pricing text is exactly "<price> / <unit>" with the line's unit (as rating's describe_pricing
# writes it). Tiers, packages, minimums, maximums and discounts ("..., min 1.00", "less 10%")
# have no single list unit price, so the cell stays empty there rather than show a misleading one.
# ListCost is the billed amount, as before: included quantities make price x quantity differ.
_SINGLE_UNIT_PRICE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z_]+)\s*$")


def list_unit_price(charge: StatementCharge | None, unit: str) -> str:
    """The charge's single unit price as the card writes it (stored text, so the same on every
    database), or "" when it has no single one."""
    if charge is None:
        return ""
    match = _SINGLE_UNIT_PRICE.match(charge.pricing)
    if match is None or match.group(2) != unit:
        return ""
    try:
        return format(Decimal(match.group(1)), "f")
    except InvalidOperation:  # pragma: no cover - the pattern only admits decimals
        return ""


# FOCUS ChargeCategory and our ChargeClass per stored charge class (the minimum top-up is an
# Adjustment of the usage): LEDGER.md's "Order of operations" says what each class is.
_CATEGORY_AND_CLASS = {
    ChargeClass.USAGE: ("Usage", ""),
    ChargeClass.CORRECTION: ("Usage", "Correction"),
    ChargeClass.ADJUSTMENT: ("Adjustment", "Adjustment"),
    ChargeClass.CREDIT: ("Credit", ""),
    ChargeClass.TAX: ("Tax", ""),  # a tax line is just Tax, on a correction's net too
}


def charge_category_and_class(meter: str, charge_class: str) -> tuple[str, str]:
    """The CSV's ChargeCategory and ChargeClass of a line."""
    if meter == MINIMUM_CHARGE_METER and charge_class == ChargeClass.USAGE:
        return ("Adjustment", "")
    return _CATEGORY_AND_CLASS[ChargeClass(charge_class)]


def to_csv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    """UTF-8 CSV with CRLF line ends; every cell is already a plain string."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def statement_csv(statement: Statement) -> bytes:
    """One row per line item; BilledCost sums to the invoice total. Amounts have exactly the
    currency's minor-unit digits and quantities no trailing zeros, whatever the database."""
    period_start = utc_timestamp(statement.period_start)
    period_end = utc_timestamp(statement.period_end)
    charges = {charge.charge_key: charge for charge in statement.charges}
    rate_card = neutralise(f"{statement.rate_card_id}@{statement.rate_card_version}")
    rows = []
    for line in statement.lines:
        charge = charges.get(line.charge_key)
        category, charge_class = charge_category_and_class(line.meter, line.charge_class)
        amount = format_minor(line.amount, statement.currency)
        # A tax line's quantity is the net it taxes: money, not a consumed quantity.
        taxed = line.charge_class == ChargeClass.TAX
        quantity = "" if taxed else format_quantity(line.quantity)
        rows.append(
            (
                neutralise(statement.org_id),
                neutralise(statement.org_name),
                neutralise(line.api_key_id),
                neutralise(statement.invoice_number),
                period_start,
                period_end,
                period_start,
                period_end,
                category,
                charge_class,
                neutralise(charge.description if charge else line.meter),
                quantity,
                neutralise(line.unit),
                quantity,
                neutralise(line.unit),
                "" if taxed else list_unit_price(charge, line.unit),
                amount,
                amount,
                amount,
                neutralise(statement.currency),
                SERVICE_NAME,
                neutralise(line.user_id),
                neutralise(line.meter),
                rate_card,
                neutralise(charge.pricing if charge else ""),
            )
        )
    extra = lifecycle_columns(statement)
    header = (*STATEMENT_COLUMNS, *(name for name, _ in extra))
    return to_csv(header, (row + tuple(value for _, value in extra) for row in rows))


def lifecycle_columns(statement: Statement) -> tuple[tuple[str, str], ...]:
    """Columns only a void invoice or a replacement has, after the others (an ordinary
    statement's bytes stay as they were): `x_InvoiceStatus` VOID, `x_Replaces` INV-…."""
    extra: list[tuple[str, str]] = []
    if statement.status == InvoiceStatus.VOID:
        extra.append(("x_InvoiceStatus", "VOID"))
    if statement.replaces:
        extra.append(("x_Replaces", neutralise(statement.replaces)))
    return tuple(extra)


def summary_row(statement: Statement) -> tuple[str, ...]:
    """One org's row of summary.csv (SUMMARY_COLUMNS): net (every charge but tax and credit)
    + tax - credit balance applied (+ a negative total carried) = total, the amount due."""
    return (
        neutralise(statement.org_id),
        neutralise(statement.org_name),
        neutralise(statement.invoice_number),
        neutralise(statement.currency),
        format_minor(statement.net_total, statement.currency),
        format_minor(statement.tax_total, statement.currency),
        format_minor(statement.total, statement.currency),
        str(len(statement.lines)),
        neutralise("; ".join(statement.emails)) or "(no contact)",
        neutralise(f"{statement.rate_card_id}@{statement.rate_card_version}"),
    )


def summary_csv(statements: Sequence[Statement]) -> bytes:
    """One row per org: the period at a glance for finance."""
    return to_csv(SUMMARY_COLUMNS, (summary_row(statement) for statement in statements))
