"""Adjustments of drafts on SQLite and PostgreSQL: split exactly over the chargeback lines,
discounted, the minimum recomputed; re-applied by a re-close (or the re-close refused when the
card lost the meter); on the PDF, CSV and allocation; applied once finalized; the CLI."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlmodel import Session

from billing.close.inline import close_period, finalize_period
from billing.close.steps import CloseOptions
from billing.config import Settings
from billing.db.adjustments import adjustments_of
from billing.db.engine import ledger
from billing.errors import BillingError, InvoiceStateError
from billing.finance.adjustments import adjust, cancel
from billing.finance.invoices import void
from billing.money import allocate_largest_remainder
from billing.periods import BillingPeriod
from billing.statements.formatting import money
from billing.usage.emulator import running_emulator
from tests.support.agreement import assert_period_agrees, count, pdf_text, rows
from tests.support.processes import run_billing

OCTOBER = BillingPeriod.parse("2026-10")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DRAFT = CloseOptions(draft=True)
DISCOUNTED = "org-0002"  # 10% off every charge, USD, the standard card (minimum 5.00)
COMMITTED = "org-0005"  # a minimum commitment of 2500.00 USD: topped up
PLAIN = "org-0004"  # the standard card, no discount, no commitment


@contextmanager
def upstream(
    make_settings: Callable[..., Settings], database_url: str, **overrides: object
) -> Iterator[Settings]:
    with running_emulator(orgs=5, seed=5, page_size=200) as base_url:
        yield make_settings(
            database_url=database_url,
            mka1_base_url=base_url,
            mka1_api_key=SecretStr("t"),
            **overrides,
        )


def decimal(value: object) -> Decimal:
    return Decimal(str(value))


def draft_id(database_url: str, org_id: str) -> int:
    [(invoice_id,)] = rows(
        database_url,
        f"SELECT id FROM invoice WHERE org_id = '{org_id}' AND status = 'draft'",  # noqa: S608
    )
    assert isinstance(invoice_id, int)
    return invoice_id


def charges(database_url: str, invoice_id: int) -> list[tuple[str, str, str, str, Decimal]]:
    """(meter, class, description, pricing, amount) in statement order."""
    return [
        (str(meter), str(kind), str(text), str(pricing), decimal(amount))
        for meter, kind, text, pricing, amount in rows(
            database_url,
            "SELECT meter, charge_class, description, pricing, amount FROM invoice_charge "  # noqa: S608
            f"WHERE invoice_id = {invoice_id} ORDER BY position",
        )
    ]


def lines(database_url: str, invoice_id: int, meter: str) -> list[tuple[object, object, Decimal]]:
    """(api key, user, amount) of one meter's lines, in the order stored."""
    return [
        (key, user, decimal(amount))
        for key, user, amount in rows(
            database_url,
            "SELECT api_key_id, user_id, amount FROM invoice_line "  # noqa: S608
            f"WHERE invoice_id = {invoice_id} AND meter = '{meter}' ORDER BY id",
        )
    ]


def total_of(database_url: str, invoice_id: int) -> Decimal:
    [(total,)] = rows(database_url, f"SELECT total FROM invoice WHERE id = {invoice_id}")  # noqa: S608
    return decimal(total).quantize(Decimal("0.01"))  # every org here bills in USD or EUR


def adjustment_charge(database_url: str, invoice_id: int, adjustment_id: int) -> Decimal:
    [amount] = [
        amount
        for meter, kind, _text, _pricing, amount in charges(database_url, invoice_id)
        if kind == "adjustment" and meter.endswith(f"#{adjustment_id}")
    ]
    return amount


def csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def assert_exact(database_url: str, invoice_id: int) -> None:
    """Every charge's lines add up to it; the charges add up to the invoice total."""
    by_meter: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for meter, kind, amount in rows(
        database_url,
        f"SELECT meter, charge_class, amount FROM invoice_line WHERE invoice_id = {invoice_id}",  # noqa: S608
    ):
        by_meter[(str(meter), str(kind))] += decimal(amount)
    stored = charges(database_url, invoice_id)
    for meter, kind, _text, _pricing, amount in stored:
        assert by_meter[(meter, kind)] == amount, meter
    assert sum(amount for *_rest, amount in stored) == total_of(database_url, invoice_id)


def expected_split(amount_minor: int, weights: list[Decimal]) -> list[Decimal]:
    shares = allocate_largest_remainder(amount_minor, [int(w * 100) for w in weights])
    return [Decimal(share) / 100 for share in shares]


def test_adjustments_split_exactly_take_the_discount_and_move_the_minimum(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with upstream(make_settings, database_url) as settings:
        drafted = close_period(settings, OCTOBER, options=DRAFT)
    folder = drafted.folder

    # A meter adjustment of the discounted org: -12.35 less 10% is -11.115 -> -11.12, split
    # over its session-time lines in proportion to their amounts.
    discounted = draft_id(database_url, DISCOUNTED)
    before = total_of(database_url, discounted)
    usage = lines(database_url, discounted, "duration")
    assert len(usage) > 1
    result = adjust(settings, str(discounted), "duration", Decimal("-12.35"), "goodwill, outage")
    assert result.total == before - Decimal("11.12")
    assert adjustment_charge(database_url, discounted, result.adjustment_id) == Decimal("-11.12")
    split = lines(database_url, discounted, f"duration#{result.adjustment_id}")
    assert [(key, user) for key, user, _amount in split] == [(k, u) for k, u, _a in usage]
    assert [amount for *_key, amount in split] == expected_split(
        -1112, [amount for *_key, amount in usage]
    )
    # A free-text line: 20.00 less 10% = 18.00 over every line's usage across the meters.
    free = adjust(settings, str(discounted), None, Decimal("20"), "set-up", "Onboarding support")
    assert free.total == before - Decimal("11.12") + Decimal("18.00")
    free_lines = lines(database_url, discounted, f"adjustment#{free.adjustment_id}")
    assert sum(amount for *_key, amount in free_lines) == Decimal("18.00")
    assert len(free_lines) > 1
    stored = charges(database_url, discounted)
    assert (stored[-1][1], stored[-1][3]) == ("adjustment", "adjustment of 20.00, less 10%")
    assert_exact(database_url, discounted)

    # The committed org is topped up to 2500.00: +100.00 lowers the top-up, the total stays.
    committed = draft_id(database_url, COMMITTED)
    [top_up] = [c for c in charges(database_url, committed) if c[0] == "minimum_charge"]
    assert total_of(database_url, committed) == Decimal("2500.00")
    assert top_up[3] == "minimum 2500.00 per period"
    raised = adjust(settings, str(committed), None, Decimal("100.00"), "support", "Support hours")
    assert raised.total == Decimal("2500.00")
    [lowered] = [c for c in charges(database_url, committed) if c[0] == "minimum_charge"]
    assert lowered[4] == top_up[4] - Decimal("100.00")
    assert lowered[3] == top_up[3]  # the same text as rating wrote, on either database
    assert charges(database_url, committed)[-1][0] == "minimum_charge"  # after the adjustment
    assert_exact(database_url, committed)
    # Withdrawn, the rated top-up comes back exactly.
    cancel(settings, raised.adjustment_id, "entered on the wrong org")
    assert [c for c in charges(database_url, committed) if c[0] == "minimum_charge"] == [top_up]
    assert total_of(database_url, committed) == Decimal("2500.00")

    # An org above its 5.00 minimum brought down to 1.00 is topped up by 4.00.
    plain = draft_id(database_url, PLAIN)
    usage_total = total_of(database_url, plain)
    assert usage_total > Decimal("5.00")
    below = adjust(settings, str(plain), None, Decimal("1.00") - usage_total, "trial", "Trial")
    assert below.total == Decimal("5.00")
    [(minimum,)] = rows(
        database_url,
        f"SELECT amount FROM invoice_charge WHERE invoice_id = {plain} "  # noqa: S608
        "AND meter = 'minimum_charge'",
    )
    assert decimal(minimum) == Decimal("4.00")
    assert_exact(database_url, plain)

    # PDF = CSV = summary = database, and the adjustment on each, the draft marked DRAFT.
    totals = assert_period_agrees(database_url, folder, str(OCTOBER))
    assert totals[DISCOUNTED] == free.total
    text = pdf_text(folder / f"{DISCOUNTED}.pdf")
    assert "DRAFT" in text
    # In the summary of charges whatever BILLING_STATEMENT_DETAIL (the cells may wrap).
    assert "Adjustment: Session time" in " ".join(text.split())
    assert "Onboarding support" in " ".join(text.split())
    # The page prints a discounted charge at its list amount (the adjustment as entered) and
    # the org's discount on a row of its own (issue 19): -12.35, not the -11.12 it nets to.
    assert money(Decimal("-12.35"), "USD", settings.locale) in text
    statement = csv_rows(folder / f"{DISCOUNTED}.csv")
    adjusted = [row for row in statement if row["x_ChargeClass"] == "adjustment"]
    assert {row["ChargeCategory"] for row in adjusted} == {"Adjustment"}
    assert sum(Decimal(row["BilledCost"]) for row in adjusted) == Decimal("6.88")
    assert {row["ChargeDescription"] for row in adjusted} == {
        "Adjustment: Session time",
        "Onboarding support",
    }
    assert sum(Decimal(row["BilledCost"]) for row in statement) == free.total
    # summary.pdf totals the adjustments on one row, not one per adjustment.
    summary = pdf_text(folder / "summary.pdf")
    assert "Adjustments" in summary
    assert "Onboarding support" not in summary
    # allocation.csv still sums to every invoice's total, adjustments included.
    allocated: dict[str, Decimal] = defaultdict(Decimal)
    for row in csv_rows(folder / "allocation.csv"):
        allocated[row["org_id"]] += Decimal(row["billed_cost"])
    assert dict(allocated) == totals


def test_an_adjustment_survives_a_re_close_and_is_applied_once_finalized(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with upstream(make_settings, database_url) as settings:
        close_period(settings, OCTOBER, options=DRAFT)
        first = draft_id(database_url, DISCOUNTED)
        made = adjust(settings, str(first), "duration", Decimal("-12.35"), "goodwill")
        committed = draft_id(database_url, COMMITTED)
        support = adjust(settings, str(committed), None, Decimal("-300.00"), "SLA", "SLA credit")
        assert support.total == Decimal("2500.00")  # the minimum takes it back up

        again = close_period(settings, OCTOBER, options=DRAFT)
        second = draft_id(database_url, DISCOUNTED)
        [(run_id,)] = rows(database_url, f"SELECT run_id FROM invoice WHERE id = {second}")  # noqa: S608
        assert run_id == again.run_id  # a new draft (SQLite may give it the same id)
        assert adjustment_charge(database_url, second, made.adjustment_id) == Decimal("-11.12")
        assert total_of(database_url, second) == made.total
        assert total_of(database_url, draft_id(database_url, COMMITTED)) == Decimal("2500.00")
        assert_exact(database_url, second)
        assert_period_agrees(database_url, again.folder, str(OCTOBER))

        final = finalize_period(settings, OCTOBER)
        number = next(s.invoice_number for s in final.statements if s.org_id == DISCOUNTED)
        [(applied,)] = rows(
            database_url,
            f"SELECT applied_invoice_id FROM invoice_adjustment WHERE id = {made.adjustment_id}",  # noqa: S608
        )
        assert applied == second
        assert total_of(database_url, second) == made.total
        assert_period_agrees(database_url, final.folder, str(OCTOBER))
        adjusted = [
            row
            for row in csv_rows(final.folder / f"{DISCOUNTED}.csv")
            if row["x_ChargeClass"] == "adjustment"
        ]
        assert {row["InvoiceId"] for row in adjusted} == {number}

        # A later close of the finalized period compares usage only: nothing to correct, and
        # the adjustments (and the minimum they moved) are not billed again.
        image = rows(database_url, "SELECT id, total FROM invoice ORDER BY id")
        later = close_period(settings, OCTOBER)
    assert {o["action"] for o in later.org_outcomes} == {"already finalized"}
    assert count(database_url, "invoice_correction") == 0
    assert rows(database_url, "SELECT id, total FROM invoice ORDER BY id") == image
    with ledger(settings) as engine, Session(engine) as session:
        listed = adjustments_of(session, DISCOUNTED, str(OCTOBER))
    assert [(row.id, row.state, row.applied_to) for row in listed] == [
        (made.adjustment_id, "applied", number)
    ]
    assert listed[0].created_by
    # A finalized invoice is never adjusted: a credit note is the way.
    with pytest.raises(InvoiceStateError, match=f"use billing credit-notes create {number}"):
        adjust(settings, number, "duration", Decimal("-1.00"), "late")
    with pytest.raises(InvoiceStateError, match=f"billed on {number}"):
        cancel(settings, made.adjustment_id, "too late")


def test_a_void_releases_its_adjustments_to_the_replacement(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with upstream(make_settings, database_url) as settings:
        close_period(settings, OCTOBER, options=DRAFT)
        made = adjust(
            settings, str(draft_id(database_url, DISCOUNTED)), None, Decimal("7.00"), "x", "Fee"
        )
        final = finalize_period(settings, OCTOBER)
        number = next(s.invoice_number for s in final.statements if s.org_id == DISCOUNTED)
        void(settings, number, "wrong address")
        replaced = close_period(settings, OCTOBER, org_ids=[DISCOUNTED], options=DRAFT)
    replacement = draft_id(database_url, DISCOUNTED)
    assert adjustment_charge(database_url, replacement, made.adjustment_id) == Decimal("6.30")
    assert total_of(database_url, replacement) == made.total
    assert_period_agrees(database_url, replaced.folder, str(OCTOBER))


def test_a_re_close_whose_card_lost_the_meter_is_refused_and_keeps_the_drafts(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    cards = tmp_path / "ratecards"
    shutil.copytree(EXAMPLES / "ratecards", cards)
    with upstream(make_settings, database_url, rate_cards=cards) as settings:
        close_period(settings, OCTOBER, options=DRAFT)
        made = adjust(
            settings,
            str(draft_id(database_url, DISCOUNTED)),
            "workspace_in",
            Decimal("2.00"),
            "re-upload",
        )
        before = rows(database_url, "SELECT id, total, run_id FROM invoice ORDER BY id")
        lines_before = rows(database_url, "SELECT id, amount FROM invoice_line ORDER BY id")
        card = cards / "standard-2026-07.yaml"
        text = card.read_text(encoding="utf-8")
        card.write_text(
            text.replace('  workspace_in:  {unit: gib, unit_price: "0.01"}\n', ""),
            encoding="utf-8",
        )
        with pytest.raises(InvoiceStateError) as refused:
            close_period(settings, OCTOBER, options=DRAFT)
        assert str(refused.value) == (
            f"org {DISCOUNTED}, {OCTOBER}: adjustment {made.adjustment_id} is on meter "
            "'workspace_in', which the new draft has no charge for (the rate card changed); "
            f"withdraw it with billing invoices adjust --cancel {made.adjustment_id} "
            "--reason TEXT, then close the period again"
        )
        assert rows(database_url, "SELECT id, total, run_id FROM invoice ORDER BY id") == before
        assert rows(database_url, "SELECT id, amount FROM invoice_line ORDER BY id") == lines_before

        withdrawn = cancel(settings, made.adjustment_id, "the card dropped workspace_in")
        assert withdrawn.draft_id in {invoice_id for invoice_id, _total, _run in before}
        again = close_period(settings, OCTOBER, options=DRAFT)
    assert_period_agrees(database_url, again.folder, str(OCTOBER))
    assert count(database_url, "invoice_adjustment") == 1  # cancelled, never deleted
    [(cancelled_by, reason)] = rows(
        database_url, "SELECT cancelled_by, cancel_reason FROM invoice_adjustment"
    )
    assert cancelled_by
    assert reason == "the card dropped workspace_in"


def test_refusals_name_what_and_what_to_do(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with upstream(make_settings, database_url) as settings:
        close_period(settings, OCTOBER, options=DRAFT)
    draft = str(draft_id(database_url, DISCOUNTED))
    before = rows(database_url, "SELECT id, total FROM invoice ORDER BY id")
    with pytest.raises(
        BillingError, match=r"has no charge for meter 'gpu'; its meters: duration, "
    ):
        adjust(settings, draft, "gpu", Decimal("1.00"), "why")
    with pytest.raises(BillingError, match=r"1\.005 has more decimal places than USD has \(2\)"):
        adjust(settings, draft, "duration", Decimal("1.005"), "why")
    with pytest.raises(BillingError, match="needs a reason"):
        adjust(settings, draft, "duration", Decimal("1.00"), "  ")
    with pytest.raises(BillingError, match="free-text adjustment needs --description"):
        adjust(settings, draft, None, Decimal("1.00"), "why")
    with pytest.raises(BillingError, match="an adjustment of 0 changes nothing"):
        adjust(settings, draft, "duration", Decimal("0.00"), "why")
    with pytest.raises(BillingError, match="no invoice '999999'"):
        adjust(settings, "999999", "duration", Decimal("1.00"), "why")
    assert rows(database_url, "SELECT id, total FROM invoice ORDER BY id") == before
    assert count(database_url, "invoice_adjustment") == 0


def test_adjust_through_the_billing_command(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    with upstream(make_settings, database_url) as settings:
        close_period(settings, OCTOBER, options=DRAFT)
    draft = draft_id(database_url, PLAIN)
    before = total_of(database_url, draft)
    env = {
        "BILLING_DATABASE_URL": database_url,
        "BILLING_OUTPUT_DIR": str(settings.output_dir),
        "BILLING_EMAIL_BACKEND": "file",
        "BILLING_BROKER_URL": "",
    }
    spaced = run_billing(
        "invoices", "adjust", str(draft), "--meter", "duration", "--amount", "-1.25",
        "--reason", "goodwill", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert spaced.returncode == 0, spaced.stderr
    after = before - Decimal("1.25")
    [adjustment_id] = [
        int(str(value))
        for (value,) in rows(database_url, "SELECT id FROM invoice_adjustment ORDER BY id")
    ]
    assert spaced.stdout.strip() == (
        f"adjustment {adjustment_id}: -1.25 USD on duration of draft {draft} "
        f"({PLAIN}, 2026-10); the draft now totals {after} USD"
    )
    equals = run_billing(
        "invoices", "adjust", str(draft), "--amount=-0.75", "--description", "=HYPERLINK()",
        "--reason", "x", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert equals.returncode == 0, equals.stderr
    assert f"the draft now totals {after - Decimal('0.75')} USD" in equals.stdout
    statement = csv_rows(settings.output_dir / "2026-10" / f"{PLAIN}.csv")
    assert "'=HYPERLINK()" in {row["ChargeDescription"] for row in statement}

    refused = run_billing(
        "invoices", "adjust", str(draft), "--meter", "duration", "--amount", "-1.005",
        "--reason", "x", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "error: -1.005 has more decimal places than USD has (2); give the amount to the cent"
    ]
    withdrawn = run_billing(
        "invoices", "adjust", "--cancel", str(adjustment_id), "--reason", "duplicate",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert withdrawn.returncode == 0, withdrawn.stderr
    assert withdrawn.stdout.strip() == (
        f"adjustment {adjustment_id} of {PLAIN} (2026-10) is cancelled; draft {draft} now "
        f"totals {before - Decimal('0.75')} USD"
    )
    assert total_of(database_url, draft) == before - Decimal("0.75")
    shown = run_billing("invoices", "show", str(draft), "--format", "json", env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    listed = [
        (item["id"], item["state"], item["meter"], item["amount"], item["reason"])
        for item in json.loads(shown.stdout)["adjustments"]
    ]
    assert listed == [
        (adjustment_id, "cancelled", "duration", "-1.25", "goodwill"),
        (adjustment_id + 1, "live", None, "-0.75", "x"),
    ]
    assert_period_agrees(database_url, settings.output_dir / "2026-10", str(OCTOBER))
