"""One text form for amounts (the currency's minor unit) and quantities, whatever the database."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from decimal import Decimal

import pytest

from billing.domain import Statement
from billing.money import format_minor, format_quantity
from billing.statements.allocation import CostCentreMap, allocation_cells, org_allocation
from billing.statements.csv_files import statement_csv, summary_row
from billing.statements.period_reports import change_cells
from billing.statements.reports import CURRENCY_CHANGED, OrgChange
from tests.support.factories import charge, line, statement

# How each database hands a stored amount back: SQLite the text that was bound, PostgreSQL a
# NUMERIC(38,12) with every place filled.
POSTGRES_PLACES = Decimal("1e-12")


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        ("108.37", "USD", "108.37"),
        ("108.370000000000", "USD", "108.37"),
        ("0", "USD", "0.00"),
        ("0E-12", "EUR", "0.00"),
        ("-1.5", "USD", "-1.50"),
        ("-0.000000000000", "USD", "0.00"),
        ("1E+3", "USD", "1000.00"),
        ("1234.000000000000", "JPY", "1234"),
        ("1.25", "BHD", "1.250"),
        ("1.250000000000", "BHD", "1.250"),
    ],
)
def test_amounts_have_exactly_the_currency_minor_unit(
    amount: str, currency: str, text: str
) -> None:
    assert format_minor(Decimal(amount), currency) == text


def test_an_amount_finer_than_the_minor_unit_is_refused_not_rounded() -> None:
    with pytest.raises(ValueError, match="more places than JPY allows"):
        format_minor(Decimal("12.5"), "JPY")


@pytest.mark.parametrize(
    ("quantity", "text"),
    [
        ("60.405717500000", "60.4057175"),
        ("100.000000000000", "100"),
        ("1E+5", "100000"),
        ("0E-12", "0"),
        ("-3.250000000000", "-3.25"),
        ("0.000000000001", "0.000000000001"),
        ("0.0100", "0.01"),
    ],
)
def test_quantities_have_no_trailing_zeros_and_no_exponent(quantity: str, text: str) -> None:
    assert format_quantity(Decimal(quantity)) == text


def as_postgres_returns_it(item: Statement) -> Statement:
    """The same statement with every stored number carrying 12 places."""
    return replace(
        item,
        total=item.total.quantize(POSTGRES_PLACES),
        lines=tuple(
            replace(
                each,
                quantity=each.quantity.quantize(POSTGRES_PLACES),
                amount=each.amount.quantize(POSTGRES_PLACES),
            )
            for each in item.lines
        ),
        charges=tuple(
            replace(each, amount=each.amount.quantize(POSTGRES_PLACES)) for each in item.charges
        ),
    )


@pytest.mark.parametrize(
    ("currency", "amount"), [("USD", "108.37"), ("JPY", "108"), ("BHD", "1.5")]
)
def test_every_csv_row_is_the_same_however_the_database_hands_numbers_back(
    currency: str, amount: str
) -> None:
    stored = statement(
        currency=currency,
        charges=(charge("duration", amount, "0.10 / hour"),),
        lines=(line("duration", amount, "key-1", "user-1"),),
    )
    from_postgres = as_postgres_returns_it(stored)
    assert statement_csv(from_postgres, issuer_name="MKA1, Inc.") == statement_csv(
        stored, issuer_name="MKA1, Inc."
    )
    assert summary_row(from_postgres) == summary_row(stored)
    centres = CostCentreMap()
    assert [allocation_cells(row) for row in org_allocation(from_postgres, centres)] == [
        allocation_cells(row) for row in org_allocation(stored, centres)
    ]
    written = next(
        csv.DictReader(io.StringIO(statement_csv(from_postgres, issuer_name="MKA1, Inc.").decode()))
    )
    assert written["BilledCost"] == format_minor(Decimal(amount), currency)
    assert written["ConsumedQuantity"] == "3.25"
    assert written["x_ListUnitPrice"] == "0.10"  # as the card writes it


def test_a_changed_currency_writes_each_total_at_its_own_minor_unit() -> None:
    change = OrgChange(
        "org-1",
        "Org",
        "JPY",
        Decimal("12.340000000000"),
        Decimal("1500.000000000000"),
        None,
        None,
        CURRENCY_CHANGED,
        previous_currency="USD",
    )
    assert change_cells(change)[3:7] == ("12.34", "1500", "", "")
