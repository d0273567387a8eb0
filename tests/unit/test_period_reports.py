"""The streaming period reports: the same bytes as the in-memory ones, bounded PDF and memory."""

from __future__ import annotations

import csv
import io
import random
import tracemalloc
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from pypdf import PdfReader

from billing.domain import OrgTotal, Statement, StatementCharge, StatementLine
from billing.money import minor_to_decimal
from billing.statements.allocation import UNALLOCATED, CostCentreMap, allocate, allocation_csv
from billing.statements.csv_files import summary_csv
from billing.statements.formatting import money
from billing.statements.period_reports import CHANGES_COLUMNS, PeriodReportWriter
from billing.statements.reports import (
    CURRENCY_CHANGED,
    FROM_ZERO,
    GONE,
    NEW,
    SWING,
    RunFacts,
    build_period_report,
    month_over_month,
    org_total,
)
from tests.support.factories import statement

PERIOD, PREVIOUS = "2026-10", "2026-09"
SWING_PERCENT = Decimal(50)
FACTS = RunFacts(
    run_id=7,
    trigger="cli",
    status="running",
    pages_fetched=3,
    usage_results=120,
    results_without_memory=2,
    results_with_peak_only=None,
    duplicate_results=0,
    completeness="passed",
)
CENTRES = CostCentreMap(
    api_keys={"key-org-a-1": "research", "key-org_b-2": "platform", "key-Org-C-1": "research"},
    users={"user-1": "analytics", "user-3": "platform"},
    orgs={"org-a2": "emea", "org.z": "apac"},
)


def _line(
    meter: str, cents: int, key: str | None, user: str | None, places: int = 2
) -> StatementLine:
    return StatementLine(
        meter, key, user, Decimal("1.5"), "hour", Decimal(cents).scaleb(-places), "usage"
    )


def org_statement(
    org_id: str,
    currency: str,
    rng: random.Random,
    *,
    contact: bool = True,
    lines: int = 6,
    name: str | None = None,
) -> Statement:
    """A statement whose lines sum to its charges and its charges to its total, exactly."""
    places = 0 if currency == "JPY" else 2
    keys = (f"key-{org_id}-1", f"key-{org_id}-2", None)
    users = ("user-1", "user-2", "user-3", None)
    made: list[StatementLine] = []
    for index in range(lines):
        meter = ("duration", "memory")[index % 2]
        made.append(
            _line(meter, rng.randint(0, 90_000), rng.choice(keys), rng.choice(users), places)
        )
    by_meter: dict[str, Decimal] = defaultdict(Decimal)
    for item in made:
        by_meter[item.meter] += item.amount
    charges = tuple(
        StatementCharge(
            meter, meter.title(), "hour", Decimal(10), Decimal(0), Decimal(10), "x", amount
        )
        for meter, amount in sorted(by_meter.items())
    )
    built = statement(
        invoice_number=f"INV-2026-{rng.randrange(10**6):06d}",
        org_id=org_id,
        org_name=name or f"{org_id.title()} Robotics & Co",
        currency=currency,
        charges=charges,
        lines=tuple(made),
    )
    return built if contact else replace(built, emails=())


def mixed_statements() -> list[Statement]:
    """Several currencies and cost centres, lines without key or user, a correction, orgs
    without contact, and ids whose order depends on the collation."""
    rng = random.Random(11)
    ids = ["org-a", "org_b", "Org-C", "org-a2", "org.z", "org-B", "org-é", "org-0", "org-10"]
    made = []
    for number, org_id in enumerate(ids):
        currency = ("USD", "EUR", "JPY")[number % 3]
        made.append(org_statement(org_id, currency, rng, contact=number % 4 != 1))
    correction_line = StatementLine(
        "duration", "key-org-a-1", None, Decimal(-1), "hour", Decimal("-1.25"), "correction", 3
    )
    correction = StatementCharge(
        "duration", "Duration", "hour", Decimal(-1), Decimal(0), Decimal(-1), "x",
        Decimal("-1.25"), "correction", 3,
    )  # fmt: skip
    first = made[0]
    made[0] = replace(
        first,
        charges=(*first.charges, correction),
        lines=(*first.lines, correction_line),
        total=first.total - Decimal("1.25"),
    )
    made.append(statement(org_id="org-empty", org_name="No Usage Ltd"))  # no lines at all
    return made


def previous_totals(current: Sequence[Statement]) -> list[OrgTotal]:
    """The month before: a swing, a steady org, a currency change, one from zero, a gone org."""
    totals = [org_total(item) for item in current]
    previous = [
        replace(totals[0], total=totals[0].total * 3),  # swing down
        # steady: one minor unit more
        replace(totals[1], total=totals[1].total + minor_to_decimal(1, totals[1].currency)),
        replace(totals[2], currency="CHF"),  # currency changed
        replace(totals[3], total=Decimal(0)),  # from zero
        OrgTotal("org-gone", "Gone Inc", "USD", Decimal("12.00")),
    ]
    return list(reversed(previous))  # any order


def writer_for(folder: Path, max_org_rows: int = 200, top_orgs: int = 10) -> PeriodReportWriter:
    folder.mkdir(parents=True, exist_ok=True)
    return PeriodReportWriter(
        folder,
        PERIOD,
        PREVIOUS,
        CENTRES,
        issuer_name="MKA1, Inc.",
        swing_threshold_percent=SWING_PERCENT,
        top_orgs=top_orgs,
        max_org_rows=max_org_rows,
        templates_dir=None,
        locale="en_US",
    )


def write(
    folder: Path,
    statements: Sequence[Statement],
    previous: Sequence[OrgTotal],
    max_org_rows: int = 200,
    top_orgs: int = 10,
) -> list[Path]:
    with writer_for(folder, max_org_rows, top_orgs) as writer:
        for item in statements:
            writer.add(item)
        return writer.finish(previous, FACTS)


def pdf_text(path: Path) -> str:
    return "".join(page.extract_text() for page in PdfReader(path).pages)


def csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


def as_statements(totals: Sequence[OrgTotal]) -> list[Statement]:
    return [
        replace(statement(org_id=t.org_id, org_name=t.org_name, currency=t.currency), total=t.total)
        for t in totals
    ]


def test_streamed_csv_files_equal_the_in_memory_ones(tmp_path: Path) -> None:
    statements = sorted(mixed_statements(), key=lambda item: item.org_id)
    previous = previous_totals(statements)
    paths = write(tmp_path, statements, previous)

    assert [path.name for path in paths] == [
        "summary.csv",
        "allocation.csv",
        "changes.csv",
        "focus.csv",
        "summary.pdf",
    ]
    assert all(path.parent == tmp_path for path in paths)
    assert paths[0].read_bytes() == summary_csv(statements)
    rows = allocate(statements, CENTRES)
    assert paths[1].read_bytes() == allocation_csv(rows)
    # the set is mixed as intended: several currencies and centres, unallocated last, gaps
    assert {row.currency for row in rows} == {"USD", "EUR", "JPY"}
    assert {"research", "platform", "analytics", "emea", "apac", UNALLOCATED} <= {
        row.cost_centre for row in rows
    }
    assert any(row.api_key_id is None and row.user_id is None for row in rows)
    assert any(row.api_key_id is not None and row.user_id is None for row in rows)
    # the reports and summary.pdf's key (billing/statements/render_keys.py), nothing else
    written_names = sorted(p.name for p in tmp_path.iterdir())
    assert written_names == sorted([*(p.name for p in paths), "summary.pdf.key"])

    expected = month_over_month(statements, as_statements(previous), SWING_PERCENT)
    written = csv_rows(paths[2])
    assert list(written[0]) == list(CHANGES_COLUMNS)
    assert len(written) == len(statements) + 1  # the gone org too

    def number(cell: str) -> Decimal | None:
        return Decimal(cell) if cell else None

    assert [
        (
            row["org_id"],
            row["org_name"],
            row["currency"],
            number(row["previous_total"]),
            number(row["current_total"]),
            number(row["change"]),
            number(row["change_percent"]),
            row["flag"],
        )
        for row in written
    ] == [
        (
            c.org_id,
            c.org_name,
            c.currency,
            c.previous,
            c.current,
            c.change,
            c.change_percent,
            c.flag,
        )
        for c in expected
    ]
    assert {c.flag for c in expected} >= {NEW, GONE, SWING, FROM_ZERO, CURRENCY_CHANGED, ""}


def test_statements_in_another_order_give_the_same_allocation_and_changes(
    tmp_path: Path,
) -> None:
    statements = mixed_statements()
    random.Random(3).shuffle(statements)  # e.g. a database collation other than the code points
    assert [s.org_id for s in statements] != sorted(s.org_id for s in statements)
    previous = previous_totals(statements)
    paths = write(tmp_path, statements, previous)
    assert paths[0].read_bytes() == summary_csv(statements)  # in the order they came
    assert paths[1].read_bytes() == allocation_csv(allocate(statements, CENTRES))
    ordered = write(tmp_path / "sorted", sorted(statements, key=lambda s: s.org_id), previous)
    assert paths[2].read_bytes() == ordered[2].read_bytes()


@pytest.mark.parametrize("shuffled", [False, True])
def test_an_org_added_twice_is_refused_and_nothing_is_written(
    tmp_path: Path, shuffled: bool
) -> None:
    statements = sorted(mixed_statements(), key=lambda item: item.org_id)
    twice = [*statements, statements[-1]]
    if shuffled:
        twice = [statements[-1], *statements]
    with pytest.raises(ValueError, match=rf"org {statements[-1].org_id} was added twice"):
        write(tmp_path, twice, [])
    assert list(tmp_path.iterdir()) == []


def test_under_the_bound_the_pdf_lists_every_org(tmp_path: Path) -> None:
    statements = sorted(mixed_statements(), key=lambda item: item.org_id)
    paths = write(tmp_path, statements, previous_totals(statements))
    text = pdf_text(paths[4])
    for item in statements:
        assert item.org_name in text
        assert item.invoice_number in text
    assert "every invoice is in summary.csv" not in text
    assert "every org is in changes.csv" not in text
    assert "Corrections: Duration" in text
    assert "2 usage results had neither reserved nor peak memory" in text
    assert "2 orgs have no billing contact and get no email." in " ".join(text.split())


def test_over_the_bound_the_pdf_shows_the_largest_and_says_where_the_rest_are(
    tmp_path: Path,
) -> None:
    statements = sorted(mixed_statements(), key=lambda item: item.org_id)
    previous = previous_totals(statements)
    paths = write(tmp_path, statements, previous, max_org_rows=4, top_orgs=1)
    text = " ".join(pdf_text(paths[4]).split())
    assert "Invoices 10" in text
    assert "The 4 largest of 10 invoices, by currency; every invoice is in summary.csv." in text
    assert "flagged changes" in text
    assert "every org is in changes.csv." in text
    assert "orgs without a billing contact; every org is in summary.csv" not in text  # 2 <= 4

    # the totals agree to the cent with summary.csv, per currency and for the largest invoice
    summary = csv_rows(paths[0])
    per_currency: dict[str, Decimal] = defaultdict(Decimal)
    for row in summary:
        per_currency[row["currency"]] += Decimal(row["total"])
    for currency, total in per_currency.items():
        assert f"{currency} {sum(r['currency'] == currency for r in summary)} " in text
        assert money(total, currency, "en_US") in text
    largest = max((r for r in summary if r["currency"] == "USD"), key=lambda r: Decimal(r["total"]))
    assert f"{largest['invoice_number']} standard@2026-07-01 " in text
    assert money(Decimal(largest["total"]), "USD", "en_US") in text

    report = build_period_report(
        PERIOD,
        PREVIOUS,
        statements,
        as_statements(previous),
        FACTS,
        [],
        issuer_name="x",
        swing_threshold_percent=SWING_PERCENT,
        top_orgs=1,
        max_org_rows=4,
    )
    # rank by rank across currencies: the largest of each currency, then the second of one
    firsts = {
        currency: max((s for s in statements if s.currency == currency), key=lambda s: s.total)
        for currency in per_currency
    }
    assert {row.org_id for row in firsts.values()} <= {row.org_id for row in report.org_rows}
    assert len(report.org_rows) == 4
    for row in report.org_rows:
        assert row.org_name in text
    assert {row.org_id for row in report.chart_rows} == {s.org_id for s in firsts.values()}
    # flagged changes first, by size of change
    assert [bool(c.flag) for c in report.changes] == [True] * 4
    assert report.change_count == 11
    assert report.flagged_count >= 4


def synthetic(count: int, seed: int = 5) -> Iterator[Statement]:
    """`count` statements in org order, made one at a time (the caller keeps none of them)."""
    rng = random.Random(seed)
    for number in range(count):
        yield org_statement(
            f"org-{number:05d}",
            ("USD", "EUR")[number % 2],
            rng,
            contact=number % 9 != 0,
            lines=rng.randint(2, 40),
            name=f"Synthetic Customer Number {number:05d} GmbH",
        )


def test_memory_per_org_is_small_and_the_pdf_does_not_grow(tmp_path: Path) -> None:
    bound = 40
    orgs = 3_000
    previous = [
        OrgTotal(f"org-{number:05d}", "Before", ("USD", "EUR")[number % 2], Decimal(number))
        for number in range(0, orgs, 3)
    ]
    tracemalloc.start()
    try:
        with writer_for(tmp_path / "big", bound) as writer:
            start = tracemalloc.get_traced_memory()[0]
            at_thousand = 0
            for count, item in enumerate(synthetic(orgs), start=1):
                writer.add(item)
                if count == 1_000:
                    at_thousand = tracemalloc.get_traced_memory()[0]
            del item
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            big = writer.finish(previous, FACTS)
    finally:
        tracemalloc.stop()
    assert (after - start) / orgs < 2048
    assert (after - at_thousand) / (orgs - 1_000) < 1024  # what each further org costs

    small = write(tmp_path / "small", list(synthetic(2 * bound)), previous[: bound // 2], bound)
    big_pages = len(PdfReader(big[4]).pages)
    small_pages = len(PdfReader(small[4]).pages)
    assert big_pages <= small_pages + 1
    text = " ".join(pdf_text(big[4]).split())
    assert f"The {bound} largest of 3,000 invoices, by currency" in text
    assert f"of {orgs:,} orgs" in text or "orgs in all" in text
    assert f"The {bound} largest invoices of 334 orgs without a billing contact" in text
    summary = csv_rows(big[0])
    assert len(summary) == orgs
    assert len(csv_rows(big[2])) == orgs
    for currency in ("USD", "EUR"):
        total = sum((Decimal(r["total"]) for r in summary if r["currency"] == currency), Decimal(0))
        assert f"{currency} 1500 {money(total, currency, 'en_US')}" in text
    allocated = sum((Decimal(r["billed_cost"]) for r in csv_rows(big[1])), Decimal(0))
    assert allocated == sum((Decimal(r["total"]) for r in summary), Decimal(0))
