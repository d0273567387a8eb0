"""CSV statements (FOCUS 1.2 columns) and the period summary, safe against formula injection."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation

from billing.domain import MINIMUM_CHARGE_METER, Statement, StatementCharge
from billing.money import (
    allocate_largest_remainder,
    decimal_to_minor,
    format_minor,
    format_quantity,
    minor_to_decimal,
)
from billing.statements.formatting import utc_timestamp
from billing.states import ChargeClass, InvoiceStatus

SERVICE_NAME = "MKA1 Sandbox"
# FOCUS 1.2 ServiceCategory (an allowed value): the sandbox sells compute sessions.
SERVICE_CATEGORY = "Compute"

# FOCUS 1.2 columns first, in this order (docs/FOCUS.md maps each one); custom columns carry the
# `x_` prefix and come after them.
FOCUS_COLUMNS = (
    "BillingAccountId",
    "BillingAccountName",
    "SubAccountId",
    "SubAccountName",
    "InvoiceId",
    "InvoiceIssuerName",
    "ProviderName",
    "PublisherName",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
    "BillingCurrency",
    "ServiceCategory",
    "ServiceName",
)
CUSTOM_COLUMNS = (
    "x_UserId",
    "x_Meter",
    "x_RateCard",
    "x_Pricing",
    "x_ListUnitPrice",
    "x_ChargeClass",
)
STATEMENT_COLUMNS = (*FOCUS_COLUMNS, *CUSTOM_COLUMNS)

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


# x_ListUnitPrice is filled only when the charge is priced at one unit price and nothing else:
# the pricing text is exactly "<price> / <unit>" with the line's unit (as rating's
# describe_pricing writes it). Tiers, packages, minimums, maximums and discounts ("..., min 1.00",
# "less 10%") have no single list unit price, so the cell stays empty there rather than show a
# misleading one. It is a custom column: FOCUS 1.2's ListUnitPrice may not be null on Usage rows
# and times PricingQuantity must give ListCost, which included quantities and tiers break.
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


# FOCUS ChargeCategory and ChargeFrequency per stored charge class (LEDGER.md's "Order of
# operations" says what each class is). FOCUS 1.2 ChargeClass is "Correction" for a correction
# of an earlier invoice's period and null otherwise; our own class is in x_ChargeClass.
_CATEGORY_AND_FREQUENCY = {
    ChargeClass.USAGE: ("Usage", "Usage-Based"),
    ChargeClass.CORRECTION: ("Usage", "Usage-Based"),
    ChargeClass.ADJUSTMENT: ("Adjustment", "One-Time"),
    ChargeClass.CREDIT: ("Credit", "One-Time"),
    ChargeClass.TAX: ("Tax", "Recurring"),  # levied on every invoice's net, corrections too
}


def charge_category_and_class(meter: str, charge_class: str) -> tuple[str, str]:
    """The CSV's FOCUS ChargeCategory and ChargeClass of a line: the minimum top-up is an
    Adjustment, a correction of an earlier invoice a Usage "Correction"."""
    if meter == MINIMUM_CHARGE_METER and charge_class == ChargeClass.USAGE:
        return ("Adjustment", "")
    category, _ = _CATEGORY_AND_FREQUENCY[ChargeClass(charge_class)]
    return (category, "Correction" if charge_class == ChargeClass.CORRECTION else "")


def charge_frequency(meter: str, charge_class: str) -> str:
    """FOCUS ChargeFrequency: usage and its corrections are Usage-Based, the minimum top-up
    Recurring (due every period whatever the usage), adjustments and credits One-Time."""
    if meter == MINIMUM_CHARGE_METER and charge_class == ChargeClass.USAGE:
        return "Recurring"
    return _CATEGORY_AND_FREQUENCY[ChargeClass(charge_class)][1]


def to_csv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    """UTF-8 CSV with CRLF line ends; every cell is already a plain string."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def cells_in_order(cells: Mapping[str, str], columns: Sequence[str]) -> tuple[str, ...]:
    """A row of `columns` from cells by column name (a column it lacks is empty: null)."""
    unknown = set(cells) - set(columns)
    if unknown:
        raise ValueError(f"cells for columns not in the header: {sorted(unknown)}")
    return tuple(cells.get(column, "") for column in columns)


def list_costs(statement: Statement) -> dict[int, Decimal]:
    """Each line's ListCost where its charge has a list amount (the org's discount applied):
    the charge's list amount split over its lines in proportion to their amounts, by largest
    remainder in minor units, so a charge's lines sum to its list amount exactly. Lines of
    charges without a discount are absent (their ListCost is their BilledCost)."""
    charges = {c.charge_key: c for c in statement.charges if c.list_amount is not None}
    by_charge: dict[tuple[str, str, int | None], list[int]] = {}
    for index, line in enumerate(statement.lines):
        if line.charge_key in charges:
            by_charge.setdefault(line.charge_key, []).append(index)
    costs: dict[int, Decimal] = {}
    currency = statement.currency
    for key, indexes in by_charge.items():
        amounts = [decimal_to_minor(statement.lines[i].amount, currency) for i in indexes]
        if any(amount < 0 for amount in amounts):
            continue  # no proportion to split by: those lines keep their billed amount
        list_amount = charges[key].list_amount
        assert list_amount is not None
        shares = allocate_largest_remainder(decimal_to_minor(list_amount, currency), amounts)
        for index, share in zip(indexes, shares, strict=True):
            costs[index] = minor_to_decimal(share, currency)
    return costs


def statement_rows(statement: Statement, *, issuer_name: str) -> Iterator[tuple[str, ...]]:
    """The statement's rows of STATEMENT_COLUMNS, one per line item: what the statement CSV
    and the period's focus.csv both write. Null cells are empty, per FOCUS 1.2 and ChargeCategory
    (docs/FOCUS.md): no consumed quantity but on Usage, no pricing quantity on Tax or Credit."""
    period_start = utc_timestamp(statement.period_start)
    period_end = utc_timestamp(statement.period_end)
    charges = {charge.charge_key: charge for charge in statement.charges}
    rate_card = neutralise(f"{statement.rate_card_id}@{statement.rate_card_version}")
    issuer = neutralise(issuer_name)
    listed = list_costs(statement)
    for index, line in enumerate(statement.lines):
        charge = charges.get(line.charge_key)
        category, focus_class = charge_category_and_class(line.meter, line.charge_class)
        amount = format_minor(line.amount, statement.currency)
        # A tax line's quantity is the net it taxes: money, not a quantity; a credit is money.
        priced = category not in ("Tax", "Credit") and bool(line.unit)
        quantity = format_quantity(line.quantity) if priced else ""
        unit = neutralise(line.unit) if priced else ""
        consumed = category == "Usage"
        shared = listed.get(index)
        list_cost = amount if shared is None else format_minor(shared, statement.currency)
        cells = {
            "BillingAccountId": neutralise(statement.org_id),
            "BillingAccountName": neutralise(statement.org_name),
            "SubAccountId": neutralise(line.api_key_id),
            # billing knows no display names of API keys: the key's id is its name
            "SubAccountName": neutralise(line.api_key_id),
            "InvoiceId": neutralise(statement.invoice_number),
            "InvoiceIssuerName": issuer,
            "ProviderName": issuer,
            "PublisherName": issuer,
            "BillingPeriodStart": period_start,
            "BillingPeriodEnd": period_end,
            "ChargePeriodStart": period_start,
            "ChargePeriodEnd": period_end,
            "ChargeCategory": category,
            "ChargeClass": focus_class,
            "ChargeDescription": neutralise(charge.description if charge else line.meter),
            "ChargeFrequency": charge_frequency(line.meter, line.charge_class),
            "ConsumedQuantity": quantity if consumed else "",
            "ConsumedUnit": unit if consumed else "",
            "PricingCategory": "Standard" if priced else "",
            "PricingQuantity": quantity,
            "PricingUnit": unit,
            "BilledCost": amount,
            "EffectiveCost": amount,  # nothing prepaid is amortised
            "ListCost": list_cost,  # before the org's discount, when it has one
            "ContractedCost": amount,  # the org's discount is its negotiated price
            "BillingCurrency": neutralise(statement.currency),
            "ServiceCategory": SERVICE_CATEGORY,
            "ServiceName": SERVICE_NAME,
            "x_UserId": neutralise(line.user_id),
            "x_Meter": neutralise(line.meter),
            "x_RateCard": rate_card,
            "x_Pricing": neutralise(charge.pricing if charge else ""),
            "x_ListUnitPrice": "" if category == "Tax" else list_unit_price(charge, line.unit),
            "x_ChargeClass": neutralise(line.charge_class),
        }
        yield cells_in_order(cells, STATEMENT_COLUMNS)


def statement_csv(statement: Statement, *, issuer_name: str) -> bytes:
    """One row per line item; BilledCost sums to the invoice total. Amounts have exactly the
    currency's minor-unit digits and quantities no trailing zeros, whatever the database.
    `issuer_name` (BILLING_ISSUER_NAME) is the InvoiceIssuerName, ProviderName and
    PublisherName."""
    extra = lifecycle_columns(statement)
    header = (*STATEMENT_COLUMNS, *(name for name, _ in extra))
    rows = statement_rows(statement, issuer_name=issuer_name)
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
