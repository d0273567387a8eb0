"""The statement CSV and focus.csv against FOCUS 1.2 as tests/support/focus_spec.py encodes it."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from billing.domain import Statement, StatementLine
from billing.money import (
    allocate_largest_remainder,
    decimal_to_minor,
    format_quantity,
    minor_to_decimal,
)
from billing.statements.csv_files import STATEMENT_COLUMNS, statement_csv, to_csv
from billing.statements.focus import FOCUS_EXPORT_COLUMNS, FocusExportWriter
from billing.states import InvoiceStatus
from tests.support.focus_spec import BY_ID, COLUMNS, MANDATORY, required_columns
from tests.support.focus_spec_check import billed_by, focus_problems, read_rows
from tests.support.sample_statements import REVERSE_CHARGE, SampleTax, make_statement

ISSUER = "MKA1, Inc."
VARIANTS = {
    "plain": {},
    "taxed": {"taxes": (SampleTax(),)},
    "reverse charge": {"taxes": (REVERSE_CHARGE,)},
    "corrections and tax": {"corrections": True, "taxes": (SampleTax(),)},
    "credit": {"credit": Decimal("125.00"), "taxes": (SampleTax(),)},
    "discount": {"discount_percent": Decimal(10)},
    "yen": {"currency": "JPY", "corrections": True},
    "hostile names": {"org_name": '=HYPERLINK("x")', "api_key_prefix": "+key_"},
}


def variant(name: str) -> Statement:
    """A sample statement whose lines split each charge (make_statement's lines are for
    rendering and do not add up to its charges)."""
    return reconciled(make_statement(line_count=0, **VARIANTS[name]))  # type: ignore[arg-type]


def reconciled(statement: Statement) -> Statement:
    """Each usage-like charge over three API keys (one line without a user), tax and credit
    as one line without key or user, amounts split by largest remainder."""
    lines: list[StatementLine] = []
    for charge in statement.charges:
        money = charge.charge_class in ("tax", "credit")
        keys: list[tuple[str | None, str | None]] = (
            [(None, None)] if money else [("key_a", "user-1"), ("key_b", None), ("key_c", "u-2")]
        )
        minor = decimal_to_minor(charge.amount, statement.currency)
        shares = allocate_largest_remainder(minor, [1] * len(keys))
        for (key, user), share in zip(keys, shares, strict=True):
            lines.append(
                StatementLine(
                    charge.meter,
                    key,
                    user,
                    charge.quantity / len(keys),
                    charge.unit,
                    minor_to_decimal(share, statement.currency),
                    charge.charge_class,
                    charge.corrects_invoice_id,
                )
            )
    return replace(statement, lines=tuple(lines))


@pytest.mark.parametrize("name", VARIANTS)
def test_statement_csv_conforms(name: str) -> None:
    assert focus_problems(statement_csv(variant(name), issuer_name=ISSUER)) == []


def test_every_mandatory_column_is_in_the_statement_csv_before_the_x_columns() -> None:
    header, _ = read_rows(statement_csv(variant("plain"), issuer_name=ISSUER))
    assert header == list(STATEMENT_COLUMNS)
    mandatory = [column.column_id for column in COLUMNS if column.feature_level == MANDATORY]
    assert len(mandatory) == 21
    assert set(mandatory) <= set(header)
    assert set(required_columns()) <= set(header)
    focus = [name for name in header if not name.startswith("x_")]
    assert header[: len(focus)] == focus  # FOCUS columns first
    assert {"ChargeFrequency", "InvoiceId"} <= set(focus)  # recommended ones we can fill


def test_values_per_charge_category() -> None:
    statement = variant("credit")
    _, rows = read_rows(statement_csv(statement, issuer_name=ISSUER))
    by_category: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_category.setdefault(row["ChargeCategory"], []).append(row)
    assert set(by_category) == {"Usage", "Adjustment", "Tax", "Credit"}
    (tax,) = by_category["Tax"]
    assert tax["PricingQuantity"] == tax["PricingUnit"] == tax["PricingCategory"] == ""
    assert tax["ConsumedQuantity"] == tax["ChargeClass"] == ""
    assert tax["ChargeFrequency"] == "Recurring"
    (credit,) = by_category["Credit"]
    assert credit["BilledCost"] == credit["ListCost"] == credit["ContractedCost"] == "-125.00"
    assert credit["PricingQuantity"] == credit["ConsumedQuantity"] == ""
    assert credit["ChargeFrequency"] == "One-Time"
    for minimum in by_category["Adjustment"]:  # the minimum top-up, over three keys
        assert minimum["ConsumedQuantity"] == ""
        assert minimum["PricingQuantity"] == format_quantity(Decimal(1) / 3)
        assert minimum["ChargeFrequency"] == "Recurring"
    for row in by_category["Usage"]:
        assert row["ChargeFrequency"] == "Usage-Based"
        assert row["PricingCategory"] == "Standard"
        assert row["ConsumedQuantity"] == row["PricingQuantity"] != ""
        assert row["ServiceCategory"] == "Compute"
    for row in rows:
        assert row["InvoiceIssuerName"] == row["ProviderName"] == row["PublisherName"] == ISSUER
        assert row["EffectiveCost"] == row["ContractedCost"] == row["BilledCost"]


def test_a_correction_of_an_earlier_invoice_is_charge_class_correction() -> None:
    _, rows = read_rows(statement_csv(variant("corrections and tax"), issuer_name=ISSUER))
    corrections = [row for row in rows if row["x_ChargeClass"] == "correction"]
    assert len(corrections) == 6  # two charges over three keys
    assert {row["ChargeClass"] for row in corrections} == {"Correction"}
    assert {row["ChargeCategory"] for row in corrections} == {"Usage"}
    assert {row["ChargeClass"] for row in rows if row not in corrections} == {""}


def test_list_cost_is_before_the_discount_and_sums_to_each_charges_list_amount() -> None:
    statement = variant("discount")
    assert any(charge.list_amount for charge in statement.charges)
    _, rows = read_rows(statement_csv(statement, issuer_name=ISSUER))
    for charge in statement.charges:
        mine = [row for row in rows if row["x_Meter"] == charge.meter]
        listed = sum((Decimal(row["ListCost"]) for row in mine), Decimal(0))
        billed = sum((Decimal(row["BilledCost"]) for row in mine), Decimal(0))
        assert billed == charge.amount
        assert listed == (charge.list_amount if charge.list_amount is not None else charge.amount)


def _org(statement: Statement, number: int, currency: str | None = None) -> Statement:
    return replace(
        statement,
        org_id=f"org-{number:04d}",
        invoice_number=f"INV-2026-{number:06d}",
        currency=currency or statement.currency,
    )


def period_statements() -> list[Statement]:
    return [
        _org(variant("plain"), 1),
        _org(variant("taxed"), 2),
        _org(variant("credit"), 3),
        _org(variant("yen"), 4),
        _org(variant("corrections and tax"), 5, "EUR"),
        replace(_org(variant("discount"), 6), replaces="INV-2026-000099"),
    ]


def test_focus_csv_conforms_and_reconciles_per_currency(tmp_path: Path) -> None:
    statements = period_statements()
    target = tmp_path / "focus.csv"
    with FocusExportWriter(tmp_path / "focus.csv.work", issuer_name=ISSUER) as writer:
        for statement in statements:
            writer.add(statement)
        assert writer.finish(target) == target
    content = target.read_bytes()
    assert focus_problems(content) == []
    header, rows = read_rows(content)
    assert header == list(FOCUS_EXPORT_COLUMNS)
    assert content.count(b"BillingAccountId") == 1  # one header
    assert len(rows) == sum(len(statement.lines) for statement in statements)
    totals: dict[str, Decimal] = {}
    for statement in statements:
        totals[statement.currency] = totals.get(statement.currency, Decimal(0)) + statement.total
    assert billed_by(rows, "BillingCurrency") == totals
    assert billed_by(rows, "InvoiceId") == {s.invoice_number: s.total for s in statements}
    assert {row["x_Replaces"] for row in rows if row["BillingAccountId"] == "org-0006"} == {
        "INV-2026-000099"
    }
    assert not (tmp_path / "focus.csv.work").exists()


def test_focus_csv_rows_are_the_statement_csv_rows(tmp_path: Path) -> None:
    statement = variant("corrections and tax")
    with FocusExportWriter(tmp_path / "focus.work", issuer_name=ISSUER) as writer:
        writer.add(statement)
        path = writer.finish()
    _, exported = read_rows(path.read_bytes())
    _, own = read_rows(statement_csv(statement, issuer_name=ISSUER))
    assert [{k: row[k] for k in STATEMENT_COLUMNS} for row in exported] == own
    assert {(row["x_InvoiceStatus"], row["x_Replaces"]) for row in exported} == {("", "")}


def test_a_void_statement_is_marked_void(tmp_path: Path) -> None:
    void = replace(variant("plain"), status=InvoiceStatus.VOID)
    with FocusExportWriter(tmp_path / "focus.work", issuer_name=ISSUER) as writer:
        writer.add(void)
        path = writer.finish()
    _, rows = read_rows(path.read_bytes())
    assert {row["x_InvoiceStatus"] for row in rows} == {"VOID"}


def test_an_unfinished_export_leaves_nothing_and_a_finished_one_takes_no_more(
    tmp_path: Path,
) -> None:
    work = tmp_path / "focus.work"
    with FocusExportWriter(work, issuer_name=ISSUER) as writer:
        writer.add(variant("plain"))
    assert not work.exists()
    writer = FocusExportWriter(work, issuer_name=ISSUER)
    writer.finish(tmp_path / "focus.csv")
    with pytest.raises(RuntimeError):
        writer.add(variant("plain"))
    assert read_rows((tmp_path / "focus.csv").read_bytes()) == (list(FOCUS_EXPORT_COLUMNS), [])


def _with(content: bytes, column: str, value: str, row_index: int = 0) -> bytes:
    header, rows = read_rows(content)
    rows[row_index][column] = value
    return to_csv(header, ([row[name] for name in header] for row in rows))


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("ChargeClass", "Adjustment", "ChargeClass: 'Adjustment' is not an allowed value"),
        ("ChargeCategory", "Fee", "ChargeCategory: 'Fee' is not an allowed value"),
        ("ServiceCategory", "Sandboxes", "ServiceCategory: 'Sandboxes' is not an allowed value"),
        ("ChargeFrequency", "Monthly", "ChargeFrequency: 'Monthly' is not an allowed value"),
        ("BilledCost", "1,5", "BilledCost: '1,5' is not in NumericFormat"),
        ("BilledCost", "+1.50", "BilledCost: '+1.50' is not in NumericFormat"),
        ("ListCost", "$1.50", "ListCost: '$1.50' is not in NumericFormat"),
        ("BillingPeriodStart", "2026-10-01", "BillingPeriodStart: '2026-10-01' is not"),
        ("ChargePeriodEnd", "2026-11-01T00:00:00+00:00", "ChargePeriodEnd: '2026-11-01T"),
        ("BillingCurrency", "usd", "BillingCurrency: 'usd' is not an ISO 4217"),
        ("BillingCurrency", "XYZ", "BillingCurrency: 'XYZ' is not an ISO 4217"),
        ("InvoiceIssuerName", "", "InvoiceIssuerName is null"),
        ("ProviderName", "  ", "ProviderName: empty or blank"),
        ("ContractedCost", "", "ContractedCost is null"),
        ("PricingQuantity", "", "PricingQuantity must not be null on a Usage row"),
        ("ConsumedQuantity", "", "ConsumedQuantity must not be null on a Usage row"),
        ("ConsumedUnit", "", "ConsumedUnit must be null exactly when ConsumedQuantity is"),
        ("SubAccountName", "", "SubAccountName must be null exactly when SubAccountId is"),
    ],
)
def test_the_check_catches(column: str, value: str, expected: str) -> None:
    content = statement_csv(variant("plain"), issuer_name=ISSUER)
    problems = focus_problems(_with(content, column, value))
    assert any(expected in problem for problem in problems), problems


def test_the_check_catches_category_rules_and_header_faults() -> None:
    content = statement_csv(variant("credit"), issuer_name=ISSUER)
    _, rows = read_rows(content)
    tax = next(i for i, row in enumerate(rows) if row["ChargeCategory"] == "Tax")
    credit = next(i for i, row in enumerate(rows) if row["ChargeCategory"] == "Credit")
    assert "line 2: ConsumedQuantity must be null on a Tax row" in focus_problems(
        _with(content, "ChargeCategory", "Tax")
    )
    problems = focus_problems(
        _with(_with(content, "PricingQuantity", "1", tax), "PricingUnit", "x", tax)
    )
    assert any("PricingQuantity must be null on a Tax row" in p for p in problems)
    problems = focus_problems(_with(content, "ListCost", "0.00", credit))
    assert any("ListCost must equal BilledCost on a Credit row" in p for p in problems)
    problems = focus_problems(_with(content, "ChargeFrequency", "Usage-Based", credit))
    assert problems == []  # Usage-Based is allowed; only a Purchase may not be
    header_only = b"BilledCost,Region,x_Meter,ServiceName\r\n"
    problems = focus_problems(header_only)
    assert "missing column InvoiceIssuerName" in problems
    assert "unknown column Region (not FOCUS 1.2 and not x_-prefixed)" in problems
    assert "FOCUS columns and x_ columns are intermixed" in problems


def test_the_encoded_spec_has_the_57_columns_of_focus_1_2() -> None:
    assert len(COLUMNS) == len(BY_ID) == 57
    levels = [column.feature_level for column in COLUMNS]
    assert (levels.count("Mandatory"), levels.count("Recommended")) == (21, 4)
    assert BY_ID["InvoiceIssuerName"].path == "specification/columns/invoiceissuer.md"
