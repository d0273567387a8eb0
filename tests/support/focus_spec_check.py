"""The project's FOCUS 1.2 conformance check of a CSV file (tests/support/focus_spec.py's data):
header, allowed values, formats, nullability per column and per ChargeCategory."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from decimal import Decimal

from babel.numbers import list_currencies

from tests.support.focus_spec import (
    ALLOWED,
    BY_ID,
    CURRENCY,
    DATETIME_FORMAT,
    EQUAL_TO_BILLED_ON_CREDIT,
    NULL_ON_TAX_REQUIRED_ON_USAGE,
    NULL_WITH,
    NUMERIC,
    required_columns,
)

# numeric_format.md: an integer, a decimal or E notation; a minus sign only, no plus, no
# thousands separators, no symbols or units; the exponent signed only when negative.
_NUMBER = re.compile(r"-?\d+(\.\d+)?(E-?\d+)?")
# datetime_format.md: extended ISO 8601 in UTC, YYYY-MM-DDTHH:mm:ssZ
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
# currency_format.md: ISO 4217 alphabetic codes (national currencies only for BillingCurrency)
_CURRENCIES = frozenset(code for code in list_currencies() if re.fullmatch(r"[A-Z]{3}", code))


def read_rows(content: bytes) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV file as the project writes them."""
    reader = csv.reader(io.StringIO(content.decode("utf-8"), newline=""))
    header = next(reader)
    return header, [dict(zip(header, row, strict=True)) for row in reader]


def header_problems(header: list[str]) -> list[str]:
    """Every required column present, no unknown non-x_ column, FOCUS columns before x_ ones,
    no column twice."""
    problems = [f"missing column {name}" for name in required_columns() if name not in header]
    problems += [
        f"unknown column {name} (not FOCUS 1.2 and not x_-prefixed)"
        for name in header
        if name not in BY_ID and not name.startswith("x_")
    ]
    if len(set(header)) != len(header):
        problems.append("a column appears twice")
    custom = [index for index, name in enumerate(header) if name.startswith("x_")]
    if custom and any(name in BY_ID for name in header[custom[0] :]):
        problems.append("FOCUS columns and x_ columns are intermixed")
    return problems


def cell_problems(column: str, value: str) -> list[str]:
    """The value's format and allowed values (a non-null cell)."""
    spec = BY_ID[column]
    if value.strip() == "":
        return [f"{column}: empty or blank text stands for null"]
    if spec.value_format == NUMERIC and not _NUMBER.fullmatch(value):
        return [f"{column}: {value!r} is not in NumericFormat"]
    if spec.value_format == DATETIME_FORMAT and not _DATETIME.fullmatch(value):
        return [f"{column}: {value!r} is not YYYY-MM-DDTHH:mm:ssZ"]
    if spec.value_format == CURRENCY and value not in _CURRENCIES:
        return [f"{column}: {value!r} is not an ISO 4217 currency code"]
    if spec.value_format == ALLOWED and spec.allowed_values and value not in spec.allowed_values:
        return [f"{column}: {value!r} is not an allowed value"]
    return []


def row_problems(row: dict[str, str]) -> list[str]:
    """One row against the columns' nullability, formats and the per-ChargeCategory rules."""
    problems: list[str] = []
    for column, value in row.items():
        if column not in BY_ID:
            continue
        if value == "":
            if not BY_ID[column].nullable:
                problems.append(f"{column} is null")
            continue
        problems += cell_problems(column, value)
    category, correction = row.get("ChargeCategory", ""), row.get("ChargeClass") == "Correction"
    for column in NULL_ON_TAX_REQUIRED_ON_USAGE:
        if column not in row:
            continue
        if category == "Tax" and row[column]:
            problems.append(f"{column} must be null on a Tax row")
        if category in ("Usage", "Purchase") and not correction and not row[column]:
            problems.append(f"{column} must not be null on a {category} row")
    if "ConsumedQuantity" in row:
        if category != "Usage" and row["ConsumedQuantity"]:
            problems.append(f"ConsumedQuantity must be null on a {category} row")
        if category == "Usage" and not correction and not row["ConsumedQuantity"]:
            problems.append("ConsumedQuantity must not be null on a Usage row")
    for column, follows in NULL_WITH:
        if column in row and follows in row and bool(row[column]) != bool(row[follows]):
            problems.append(f"{column} must be null exactly when {follows} is")
    if category == "Purchase" and row.get("ChargeFrequency") == "Usage-Based":
        problems.append("ChargeFrequency must not be Usage-Based on a Purchase row")
    if category == "Credit":
        for column in EQUAL_TO_BILLED_ON_CREDIT:
            if column in row and _number(row[column]) != _number(row["BilledCost"]):
                problems.append(f"{column} must equal BilledCost on a Credit row")
    for start, end in (
        ("BillingPeriodStart", "BillingPeriodEnd"),
        ("ChargePeriodStart", "ChargePeriodEnd"),
    ):
        if row.get(start) and row.get(end) and not row[start] < row[end]:
            problems.append(f"{start} must be before {end} (inclusive start, exclusive end)")
    return problems


def _number(text: str) -> Decimal | None:
    return Decimal(text) if _NUMBER.fullmatch(text) else None


def focus_problems(content: bytes) -> list[str]:
    """Every way the CSV file breaks FOCUS 1.2 as encoded in focus_spec (empty: conforms),
    each row's problems prefixed with its line number."""
    header, rows = read_rows(content)
    problems = header_problems(header)
    for number, row in enumerate(rows, start=2):
        problems += [f"line {number}: {problem}" for problem in row_problems(row)]
    return problems


def billed_by(rows: Iterable[dict[str, str]], column: str) -> dict[str, Decimal]:
    """Sum of BilledCost per value of `column` (InvoiceId, BillingCurrency...)."""
    sums: dict[str, Decimal] = {}
    for row in rows:
        sums[row[column]] = sums.get(row[column], Decimal(0)) + Decimal(row["BilledCost"])
    return sums
