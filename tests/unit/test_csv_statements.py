"""CSV statements: FOCUS header, exact BilledCost, UTC timestamps, and safe text cells."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

import pytest

from billing.domain import Statement
from billing.periods import BillingPeriod
from billing.statements.csv_files import (
    STATEMENT_COLUMNS,
    clean_text,
    list_unit_price,
    neutralise,
    statement_csv,
)
from tests.support.factories import charge, line, statement

PERIOD = BillingPeriod.parse("2026-10")
ISSUER = "MKA1, Inc."
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
NUMERIC_COLUMNS = (
    "PricingQuantity",
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
)


def rows(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"), newline="")))


def sample() -> Statement:
    return statement(
        charges=(
            charge("duration", "7.38", "0.12 / hour"),
            charge("workspace_out", "2.00", "0.09 to 20; 0.05 above 20 / gib", "gib"),
            charge("minimum_charge", "0.62", "minimum charge 10.00", "period"),
        ),
        lines=(
            line("duration", "0.18", "k1", "u1"),
            line("duration", "1.20", "k1", None),
            line("duration", "6.00", "k2", "u2"),
            line("workspace_out", "0.77", "k1", "u1", "gib"),
            line("workspace_out", "1.23", "k2", "u2", "gib"),
            line("minimum_charge", "0.62", None, None, "period"),
        ),
    )


def test_header_is_focus_columns_in_order_then_custom_x_columns() -> None:
    header = next(
        csv.reader(io.StringIO(statement_csv(sample(), issuer_name=ISSUER).decode("utf-8")))
    )
    assert tuple(header) == STATEMENT_COLUMNS
    assert tuple(header[: len(FOCUS_COLUMNS)]) == FOCUS_COLUMNS
    custom = header[len(FOCUS_COLUMNS) :]
    assert custom[:2] == ["x_UserId", "x_Meter"]
    assert all(name.startswith("x_") for name in custom)
    assert "x_RateCard" in custom
    assert "x_ListUnitPrice" in custom


def test_billed_cost_sums_per_invoice_id_to_the_invoice_total() -> None:
    statements = [
        sample(),
        statement(
            invoice_number="INV-2026-000002",
            org_id="org-0002",
            currency="EUR",
            charges=(charge("duration", "0.03", "0.01 / hour"),),
            lines=(
                line("duration", "0.01", "k3", "u3"),
                line("duration", "0.01", "k3", "u4"),
                line("duration", "0.01", "k4", None),
            ),
        ),
    ]
    sums: dict[str, Decimal] = {}
    for item in statements:
        for row in rows(statement_csv(item, issuer_name=ISSUER)):
            sums[row["InvoiceId"]] = sums.get(row["InvoiceId"], Decimal(0)) + Decimal(
                row["BilledCost"]
            )
            assert row["BillingCurrency"] == item.currency
    assert sums == {item.invoice_number: item.total for item in statements}
    assert sums["INV-2026-000001"] == Decimal("10.00")


def test_one_row_per_line_item_with_categories_and_plain_numbers() -> None:
    written = rows(statement_csv(sample(), issuer_name=ISSUER))
    assert len(written) == 6
    assert [row["ChargeCategory"] for row in written] == ["Usage"] * 5 + ["Adjustment"]
    assert written[0]["SubAccountId"] == "k1"
    assert written[0]["x_UserId"] == "u1"
    assert written[1]["x_UserId"] == ""
    assert written[-1]["SubAccountId"] == ""
    assert written[0]["x_RateCard"] == "standard@2026-07-01"
    assert written[0]["SubAccountName"] == "k1"  # no key names in billing: the id
    assert written[0]["InvoiceIssuerName"] == written[0]["ProviderName"] == ISSUER
    assert written[0]["ChargeFrequency"] == "Usage-Based"
    assert written[-1]["ChargeFrequency"] == "Recurring"  # the minimum top-up
    assert written[-1]["ConsumedQuantity"] == ""  # an Adjustment consumes nothing
    assert written[-1]["PricingQuantity"] == "3.25"
    for row in written:
        for column in NUMERIC_COLUMNS:
            assert re.fullmatch(r"-?\d+(\.\d+)?", row[column]), (column, row[column])
        assert "$" not in "".join(row.values())


def test_list_unit_price_only_for_a_single_unit_price() -> None:
    written = rows(statement_csv(sample(), issuer_name=ISSUER))
    assert written[0]["x_ListUnitPrice"] == "0.12"
    assert written[3]["x_ListUnitPrice"] == ""  # graduated tiers have no single list price
    assert written[5]["x_ListUnitPrice"] == ""
    assert list_unit_price(charge("d", "1", "0.12 / hour, min 1.00"), "hour") == ""
    assert list_unit_price(charge("d", "1", "0.12 / hour, less 10%"), "hour") == ""
    assert list_unit_price(charge("d", "1", "0.50 per 1000 request"), "request") == ""
    assert list_unit_price(charge("d", "1", "0.12 / gib"), "hour") == ""
    assert list_unit_price(None, "hour") == ""


def test_timestamps_are_utc_seconds_with_z() -> None:
    row = rows(statement_csv(sample(), issuer_name=ISSUER))[0]
    stamp = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
    for column in (
        "BillingPeriodStart",
        "BillingPeriodEnd",
        "ChargePeriodStart",
        "ChargePeriodEnd",
    ):
        assert stamp.fullmatch(row[column]), row[column]
    assert row["BillingPeriodStart"] == "2026-10-01T00:00:00Z"
    assert row["BillingPeriodEnd"] == "2026-11-01T00:00:00Z"


HOSTILE = ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1+1", "\rx", "\nx", '=HYPERLINK("http://x")']


@pytest.mark.parametrize("text", HOSTILE)
def test_formula_cells_are_neutralised_in_every_text_column(text: str) -> None:
    hostile = statement(
        org_id=text,
        org_name=text,
        charges=(charge("duration", "-1.50", "0.12 / hour"),),
        lines=(line("duration", "-1.50", text, text),),
    )
    row = rows(statement_csv(hostile, issuer_name=ISSUER))[0]
    for column in ("BillingAccountId", "BillingAccountName", "SubAccountId", "x_UserId"):
        assert row[column].startswith("'"), (column, row[column])
        assert "\t" not in row[column]
        assert "\r" not in row[column]
        assert "\n" not in row[column]
    # numbers stay numbers, even negative ones
    assert row["BilledCost"] == "-1.50"
    assert row["ConsumedQuantity"] == "3.25"


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("Acme\x00Robotics", "Acme Robotics"),
        ("Acme\x1b[31mRed", "Acme [31mRed"),
        ("Acme\u0085Next", "Acme Next"),
        ("Acme\u2028Line", "Acme Line"),
        ("evil\u202eexe.pdf", "evilexe.pdf"),
        ("\u2066isolated\u2069", "isolated"),
        ("zero\u200bwidth\ufeff", "zerowidth"),
        ("\u200b=1+1", "'=1+1"),
        ("\u202e=1+1", "'=1+1"),
        (" =1+1", "' =1+1"),
        ("Ünïcödé 名前 👩\u200d💻", "Ünïcödé 名前 👩\u200d💻"),
        ("a-b=c", "a-b=c"),
    ],
)
def test_control_rtl_and_zero_width_characters(cell: str, expected: str) -> None:
    assert neutralise(cell) == expected


def test_clean_text_keeps_printable_text() -> None:
    assert clean_text("Globex Analytics, Inc.") == "Globex Analytics, Inc."
    row = rows(
        statement_csv(statement(org_name="A\u202eB\x07C", lines=sample().lines), issuer_name=ISSUER)
    )[0]
    assert row["BillingAccountName"] == "AB C"
