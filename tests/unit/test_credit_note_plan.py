"""Credit notes without a database: `--line` specs, exact splits by largest remainder, the
limits' messages, and the CSV's columns and signs."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from billing.credit_notes import (
    CreditableLine,
    CreditPlan,
    check_within_invoice,
    credit_note_number,
    line_label,
    parse_amount,
    parse_line_spec,
)
from billing.errors import BillingError
from billing.statements.credit_notes import CREDIT_NOTE_COLUMNS, credit_note_csv
from billing.statements.csv_files import STATEMENT_COLUMNS
from tests.support.sample_statements import sample_credit_note


def line(
    meter: str, key: str | None, user: str | None, billed: int, credited: int = 0
) -> CreditableLine:
    return CreditableLine(meter, key, user, meter.title(), "hour", "usage", billed, credited)


HAND = (
    line("duration", "key-b", None, 500),
    line("memory", "key-a", "alice", 300),
    line("duration", "key-a", "bob", 500),
    line("duration", "key-a", "alice", 900),
)


def planned(plan: CreditPlan) -> list[tuple[str, str | None, str | None, int]]:
    return [(p.line.meter, p.line.api_key_id, p.line.user_id, p.amount) for p in plan.lines()]


def test_numbers_are_per_year_with_six_digits() -> None:
    assert credit_note_number(2026, 7) == "CN-2026-000007"


@pytest.mark.parametrize(
    ("text", "meter", "key", "user", "pinned", "amount"),
    [
        ("duration=7", "duration", None, None, 1, "7"),
        ("duration:key-a=1.50", "duration", "key-a", None, 2, "1.50"),
        ("duration::=1", "duration", None, None, 3, "1"),
        ("duration:key-a:=1", "duration", "key-a", None, 3, "1"),
        ("duration:k\\:1:u:x=2", "duration", "k:1", "u:x", 3, "2"),
        ("duration:k=v:u=3", "duration", "k=v", "u", 3, "3"),
    ],
)
def test_line_specs_pin_what_they_name(
    text: str, meter: str, key: str | None, user: str | None, pinned: int, amount: str
) -> None:
    spec = parse_line_spec(text)
    assert (spec.meter, spec.api_key_id, spec.user_id, spec.pinned, spec.amount) == (
        meter,
        key,
        user,
        pinned,
        amount,
    )


@pytest.mark.parametrize("text", ["duration", "=5", "duration=", ":k:u=1"])
def test_a_malformed_line_spec_says_how_to_write_one(text: str) -> None:
    with pytest.raises(BillingError, match=r"write METER\[:KEY\[:USER\]\]=AMOUNT"):
        parse_line_spec(text)


def test_a_label_names_its_line_whatever_the_ids_hold() -> None:
    key = ("duration", "k:1\\x", "=user: a")
    spec = parse_line_spec(line_label(key) + "=1")
    assert spec.matches(key)
    assert not spec.matches(("duration", "k:1\\x", None))


@pytest.mark.parametrize(
    ("text", "currency", "message"),
    [
        ("abc", "USD", "'abc' is not an amount like 12.50"),
        ("0", "USD", "the amount must be more than 0, not 0"),
        ("-1", "USD", "the amount must be more than 0, not -1"),
        ("1.001", "USD", "1.001 has more than 2 decimal places, the most USD has"),
        ("1.5", "JPY", "1.5 has more than 0 decimal places, the most JPY has"),
    ],
)
def test_amounts_are_positive_and_at_the_currency_places(
    text: str, currency: str, message: str
) -> None:
    with pytest.raises(BillingError) as refused:
        parse_amount(text, currency, "--amount")
    assert str(refused.value) == f"--amount: {message}"
    assert parse_amount("12.5", "USD", "--amount") == 1250


def test_lines_and_a_meter_split_by_largest_remainder_to_the_cent() -> None:
    plan = CreditPlan("INV-2026-000001", "USD", HAND)
    plan.add_line(parse_line_spec("duration:key-a:alice=4.50"))
    plan.add_line(parse_line_spec("duration=7.00"))
    # alice has 4.50 left, bob 5.00, key-b 5.00: 700 x 450/1450 = 217.24, x 500/1450 =
    # 241.38 twice; the cent left goes to the earlier of the two largest remainders (bob).
    assert planned(plan) == [
        ("duration", "key-a", "alice", 450 + 217),
        ("duration", "key-a", "bob", 242),
        ("duration", "key-b", None, 241),
    ]
    assert plan.total() == 1150


def test_an_amount_splits_over_every_line_with_something_left() -> None:
    lines = (*HAND[:3], line("duration", "key-a", "alice", 900, credited=900))
    plan = CreditPlan("INV-2026-000001", "USD", lines)
    plan.add_amount("3.00")
    # 500, 500, 300 of 1300: 115.38, 115.38, 69.23; the cent left goes to bob (earlier).
    assert planned(plan) == [
        ("duration", "key-a", "bob", 116),
        ("duration", "key-b", None, 115),
        ("memory", "key-a", "alice", 69),
    ]


def test_more_than_a_line_has_left_is_refused_naming_it() -> None:
    plan = CreditPlan("INV-2026-000001", "USD", (line("memory", "key-a", "alice", 300, 163),))
    with pytest.raises(BillingError) as refused:
        plan.add_line(parse_line_spec("memory:key-a:alice=1.38"))
    assert str(refused.value) == (
        "INV-2026-000001: line 'memory:key-a:alice' has 1.37 USD still creditable (charged "
        "3.00 USD, credited 1.63 USD), less than the 1.38 USD asked"
    )
    with pytest.raises(BillingError, match=r"has no line 'storage' to credit; its lines are "):
        plan.add_line(parse_line_spec("storage=1"))


def test_credit_notes_never_exceed_the_invoice_total() -> None:
    check_within_invoice("INV-2026-000001", "USD", 2000, [("CN-2026-000001", 1500)], 500)
    with pytest.raises(BillingError) as first:
        check_within_invoice("INV-2026-000001", "USD", 2000, [], 2001)
    assert str(first.value) == (
        "INV-2026-000001 totals 20.00 USD: at most 20.00 USD can still be credited, not 20.01 USD"
    )
    with pytest.raises(BillingError) as later:
        check_within_invoice(
            "INV-2026-000001", "USD", 2000, [("CN-2026-000001", 1500), ("CN-2026-000004", 50)], 451
        )
    assert str(later.value) == (
        "INV-2026-000001 totals 20.00 USD and its credit notes CN-2026-000001, CN-2026-000004 "
        "already credit 15.50 USD: at most 4.50 USD can still be credited, not 4.51 USD"
    )


def test_the_csv_credits_the_original_invoice_with_negative_costs() -> None:
    note = sample_credit_note(org_id="=org", org_name="Acme", billing_address="")
    header, *body = list(
        csv.reader(io.StringIO(credit_note_csv(note, issuer_name="MKA1, Inc.").decode()))
    )
    assert (
        tuple(header) == CREDIT_NOTE_COLUMNS == (*STATEMENT_COLUMNS, "x_CreditNote", "x_Settlement")
    )
    rows = [dict(zip(header, row, strict=True)) for row in body]
    assert [r["BilledCost"] for r in rows] == ["-2.25", "-0.75"]
    assert sum(Decimal(r["BilledCost"]) for r in rows) == -note.total
    assert {r["InvoiceId"] for r in rows} == {"INV-2026-000001"}
    assert {(r["ChargeCategory"], r["x_CreditNote"], r["x_Settlement"]) for r in rows} == {
        ("Credit", "CN-2026-000003", "refund")
    }
    assert {r["BillingAccountId"] for r in rows} == {"'=org"}  # formula-safe
    assert rows[1]["SubAccountId"] == rows[1]["x_UserId"] == rows[1]["ConsumedQuantity"] == ""
