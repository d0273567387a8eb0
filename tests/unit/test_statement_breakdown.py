"""BILLING_STATEMENT_DETAIL: a long statement prints exact subtotals per API key (every line
stays in the CSV), a short one or `lines` prints every line, and the split note stays true."""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from decimal import Decimal

import pytest
from pydantic import ValidationError
from pypdf import PdfReader

from billing.config import Settings
from billing.domain import Statement, StatementCharge, StatementLine
from billing.statements.breakdown import BreakdownRule, key_subtotals
from billing.statements.csv_files import statement_csv
from billing.statements.formatting import money
from billing.statements.pdf import StatementRenderer
from billing.states import ChargeClass
from tests.support.factories import statement

METERS = (("duration", "hour", "Session time"), ("memory", "gib_hour", "Reserved memory"))


def long_statement(line_count: int = 200) -> Statement:
    """`line_count` usage lines over 40 API keys, 3 users and two meters, with cents that do
    not round evenly, plus a minimum top-up and credit applied (lines without an API key);
    each charge is the exact sum of its lines, the total the sum of the charges."""
    lines = [
        StatementLine(
            meter=METERS[index % 2][0],
            api_key_id=f"key_{index % 40:03d}",
            user_id=None if index % 7 == 0 else f"user-{index % 3}",
            quantity=Decimal(index + 1) / 7,
            unit=METERS[index % 2][1],
            amount=(Decimal(index * 37 % 1000 + 1) / 100).quantize(Decimal("0.01")),
        )
        for index in range(line_count - 2)
    ]
    lines.append(StatementLine("minimum_charge", None, None, Decimal(1), "period", Decimal("9.99")))
    lines.append(
        StatementLine(
            "credit_balance", None, None, Decimal(1), "credit", Decimal("-25.00"), "credit"
        )
    )
    charges = []
    for meter, unit, description in METERS:
        amount = sum((item.amount for item in lines if item.meter == meter), Decimal(0))
        charges.append(
            StatementCharge(
                meter, description, unit, Decimal(1), Decimal(0), Decimal(1), "0.12", amount
            )
        )
    charges.append(
        StatementCharge(
            "minimum_charge", "Minimum charge", "period", *(Decimal(1),) * 3, "min", Decimal("9.99")
        )
    )
    charges.append(
        StatementCharge(
            "credit_balance",
            "Credit applied",
            "credit",
            *(Decimal(1),) * 3,
            "credit",
            Decimal("-25.00"),
            ChargeClass.CREDIT,
        )
    )
    return statement(charges=tuple(charges), lines=tuple(lines), org_id="org-big")


def renderer(detail: str, max_lines: int = 50) -> StatementRenderer:
    return StatementRenderer.from_settings(
        Settings(_env_file=None, statement_detail=detail, statement_detail_max_lines=max_lines)  # type: ignore[call-arg]
    )


def text_of(pdf: bytes) -> str:
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return text.replace("\xa0", " ").replace("\u202f", " ")


def test_keys_mode_prints_exact_per_key_subtotals_that_add_up_to_the_charges() -> None:
    big = long_statement()
    assert len(big.lines) == 200
    by_key: dict[str | None, Decimal] = defaultdict(Decimal)
    for item in big.lines:
        by_key[item.api_key_id] += item.amount

    rows = key_subtotals(big.lines, big.charges)

    keyed = {row.api_key_id: row.amount for row in rows if row.api_key_id is not None}
    assert keyed == {key: amount for key, amount in by_key.items() if key is not None}
    assert [(row.charge, row.amount) for row in rows if row.api_key_id is None] == [
        ("Minimum charge", Decimal("9.99")),
        ("Credit applied", Decimal("-25.00")),
    ]
    assert sum(row.lines for row in rows) == 200
    total = sum((row.amount for row in rows), Decimal(0))
    assert total == sum((c.amount for c in big.charges), Decimal(0)) == big.total
    assert all(row.amount.as_tuple().exponent == -2 for row in rows)  # nothing re-rounded

    text = text_of(renderer("keys").pdf(big))
    flat = re.sub(r"\s+", "", text)
    assert "Subtotals by API key" in text
    assert "Breakdown by API key and user" not in text
    for key, amount in keyed.items():
        assert text.count(key) == 1, key
        row = re.search(rf"{key}\s+\d+\s+\d+\s+(\S+)", text)
        assert row is not None, key
        assert row.group(1) == money(amount, "USD", "en_US"), key
    assert re.sub(r"\s+", "", f"Total of subtotals{money(big.total, 'USD', 'en_US')}") in flat
    assert "user-1" not in text  # users are counted, not listed
    # The split note says where the lines are now, not that they follow.
    assert re.sub(r"\s+", "", "the CSV statement attached has all 200 lines") in flat
    assert "largest remainder" not in text  # internal notes stay off the customer's copy


def test_lines_mode_prints_every_line_as_before() -> None:
    big = long_statement()
    text = text_of(renderer("lines").pdf(big))
    assert "Breakdown by API key and user" in text
    assert "Subtotals by API key" not in text
    assert len(re.findall(r"key_\d{3}", text)) == 198
    assert "Total of lines" in text
    assert "the CSV statement attached has the exact quantities" in re.sub(r"\s+", " ", text)
    assert "largest-remainder" not in text


def test_every_line_stays_in_the_csv_whatever_the_pdf_shows() -> None:
    big = long_statement()
    rows = list(
        csv.DictReader(io.StringIO(statement_csv(big, issuer_name="MKA1, Inc.").decode("utf-8")))
    )
    assert len(rows) == 200
    assert sum((Decimal(row["BilledCost"]) for row in rows), Decimal(0)) == big.total


@pytest.mark.parametrize(
    ("detail", "max_lines", "line_count", "mode"),
    [
        ("auto", 50, 50, "lines"),
        ("auto", 50, 51, "keys"),
        ("auto", 0, 1, "keys"),
        ("lines", 50, 2000, "lines"),
        ("keys", 50, 1, "keys"),
    ],
)
def test_auto_prints_lines_up_to_the_threshold_then_subtotals(
    detail: str, max_lines: int, line_count: int, mode: str
) -> None:
    rule = BreakdownRule(detail, max_lines)  # type: ignore[arg-type]
    assert rule.mode_for(line_count) == mode
    html = renderer(detail, max_lines).html(long_statement(line_count + 2))
    assert ("Subtotals by API key" in html) == (rule.mode_for(line_count + 2) == "keys")


def test_the_setting_is_read_from_the_environment_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings(_env_file=None).statement_detail == "auto"  # type: ignore[call-arg]
    monkeypatch.setenv("BILLING_STATEMENT_DETAIL", "keys")
    monkeypatch.setenv("BILLING_STATEMENT_DETAIL_MAX_LINES", "80")
    read = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (read.statement_detail, read.statement_detail_max_lines) == ("keys", 80)
    monkeypatch.setenv("BILLING_STATEMENT_DETAIL", "everything")
    with pytest.raises(ValidationError, match="BILLING_STATEMENT_DETAIL"):
        Settings(_env_file=None)  # type: ignore[call-arg]
