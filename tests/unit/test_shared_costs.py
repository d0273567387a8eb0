"""Shared costs: each split method by hand, docs/CHARGEBACK.md's worked examples, largest
remainder ties, first rule wins, and the streamed allocation.csv equal to the in-memory one."""

from __future__ import annotations

import csv
import io
import random
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from pypdf import PdfReader

from billing.domain import OrgTotal, Statement
from billing.statements.allocation import (
    ALLOCATION_COLUMNS,
    SHARED,
    UNALLOCATED,
    AllocationRow,
    CostCentreMap,
    allocate,
    allocation_csv,
    centre_totals,
)
from billing.statements.period_reports import PeriodReportWriter
from billing.statements.shared_costs import NO_TARGET, WEIGHTED_AS_EVEN, spread
from tests.support.factories import charge, line, statement


def org(org_id: str, *amounts: str, currency: str = "USD", key: str | None = None) -> Statement:
    """An org's statement: one line per amount (with `key`, if given), charges to match."""
    number = f"INV-2026-{org_id[-4:]}"
    total = sum((Decimal(a) for a in amounts), Decimal(0))
    return statement(
        invoice_number=number,
        org_id=org_id,
        org_name=f"Org {org_id}",
        currency=currency,
        charges=(charge("duration", str(total), "0.10 / hour"),),
        lines=tuple(line("duration", amount, key, None) for amount in amounts),
    )


def centres(*rules: dict[str, Any], **extra: Any) -> CostCentreMap:
    """The worked examples' map: four orgs with a centre each, org-0005 unmapped."""
    return CostCentreMap.model_validate(
        {
            "orgs": {
                "org-0001": "research",
                "org-0002": "platform",
                "org-0003": "web",
                "org-0004": "shared-services",
            },
            "shared": list(rules),
            **extra,
        }
    )


# docs/CHARGEBACK.md "Worked examples": one USD period, net total 560.01.
EXAMPLE = [
    org("org-0001", "300.00"),
    org("org-0002", "100.00"),
    org("org-0003", "50.00"),
    org("org-0004", "100.00"),
    org("org-0005", "10.01"),
]


def allocated(rows: list[AllocationRow]) -> dict[str, Decimal]:
    """Each USD centre's allocated total (billed_cost after sharing)."""
    return {centre: total for currency, centre, total in centre_totals(rows) if currency == "USD"}


def shares(rows: list[AllocationRow]) -> dict[str, tuple[Decimal, str, str]]:
    """Each target centre's (share, method, ratio) of the one rule of an example."""
    found: dict[str, tuple[Decimal, str, str]] = {}
    for row in rows:
        if row.is_share:
            before = found.get(row.cost_centre, (Decimal(0), "", ""))[0]
            found[row.cost_centre] = (before + row.shared_cost, row.method, row.ratio)
    return found


def sums_per_currency(rows: list[AllocationRow]) -> dict[str, Decimal]:
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        sums[row.currency] += row.billed_cost
        assert row.billed_cost == row.direct_cost + row.shared_cost
    return dict(sums)


def test_worked_example_even() -> None:
    rule = {
        "name": "platform-overhead",
        "from": {"centre": "shared-services"},
        "to": {"method": "even"},
    }
    rows = allocate(EXAMPLE, centres(rule))
    # 100.00 / 3 = 33.333...: 3333 cents each, 1 left; the three remainders tie, so it goes
    # to the first by name: platform.
    assert shares(rows) == {
        "platform": (Decimal("33.34"), "even", "0.333333"),
        "research": (Decimal("33.33"), "even", "0.333333"),
        "web": (Decimal("33.33"), "even", "0.333333"),
    }
    assert allocated(rows) == {
        "platform": Decimal("133.34"),
        "research": Decimal("333.33"),
        "shared-services": Decimal("0.00"),
        "web": Decimal("83.33"),
        UNALLOCATED: Decimal("10.01"),
    }
    assert sums_per_currency(rows) == {"USD": Decimal("560.01")}
    source = next(r for r in rows if r.cost_centre == "shared-services")
    assert (source.direct_cost, source.shared_cost, source.billed_cost) == (
        Decimal("100.00"),
        Decimal("-100.00"),
        Decimal("0"),
    )
    assert (source.allocated_from, source.method, source.ratio) == ("platform-overhead", "even", "")


def test_worked_example_weighted() -> None:
    rule = {
        "name": "platform-overhead",
        "from": {"centre": "shared-services"},
        "to": {"method": "weighted"},
    }
    rows = allocate(EXAMPLE, centres(rule))
    # weights 100 : 300 : 50 (platform, research, web; total 450): 10000 cents give
    # 2222.22, 6666.67 and 1111.11 -> floors 2222, 6666, 1111; the cent left goes to the largest
    # remainder (.67): research.
    assert shares(rows) == {
        "platform": (Decimal("22.22"), "weighted", "0.222222"),
        "research": (Decimal("66.67"), "weighted", "0.666667"),
        "web": (Decimal("11.11"), "weighted", "0.111111"),
    }
    assert allocated(rows) == {
        "platform": Decimal("122.22"),
        "research": Decimal("366.67"),
        "shared-services": Decimal("0.00"),
        "web": Decimal("61.11"),
        UNALLOCATED: Decimal("10.01"),
    }
    assert sums_per_currency(rows) == {"USD": Decimal("560.01")}


def test_worked_example_fixed_percentages() -> None:
    rule = {
        "name": "unmapped",
        "from": {"centre": "unallocated"},
        "to": {"method": "fixed", "percentages": {"research": "60", "platform": 40}},
    }
    rows = allocate(EXAMPLE, centres(rule))
    # 1001 cents: 600.6 and 400.4 -> floors 600 and 400; the cent left goes to research (.6).
    assert shares(rows) == {
        "platform": (Decimal("4.00"), "fixed", "0.4"),
        "research": (Decimal("6.01"), "fixed", "0.6"),
    }
    assert allocated(rows) == {
        "platform": Decimal("104.00"),
        "research": Decimal("306.01"),
        "shared-services": Decimal("100.00"),
        "web": Decimal("50.00"),
        UNALLOCATED: Decimal("0.00"),
    }
    assert sums_per_currency(rows) == {"USD": Decimal("560.01")}


def test_worked_example_fixed_amount() -> None:
    rule = {
        "name": "office-rent",
        "from": {"amount": "2000.00", "currency": "USD"},
        "to": {"method": "even", "centres": ["research", "platform", "web"]},
    }
    rows = allocate(EXAMPLE, centres(rule))
    # 200000 cents / 3 = 66666.67: floors 66666 each, 2 left; all remainders tie, so platform
    # and research (first by name) get one each.
    assert shares(rows) == {
        "platform": (Decimal("666.67"), "even", "0.333333"),
        "research": (Decimal("666.67"), "even", "0.333333"),
        "web": (Decimal("666.66"), "even", "0.333333"),
    }
    overhead = [row for row in rows if row.is_share]
    assert {(row.org_id, row.org_name, row.invoice_number) for row in overhead} == {("", "", "")}
    assert {row.allocated_from for row in overhead} == {"office-rent"}
    assert all(row.line_items == 0 and row.mapped_by == SHARED for row in overhead)
    # the net total plus the overhead
    assert sums_per_currency(rows) == {"USD": Decimal("2560.01")}
    assert allocated(rows)["research"] == Decimal("966.67")


def test_running_total_pieces_add_up_both_ways() -> None:
    """docs/CHARGEBACK.md "What a share is made of": 0.01 from each of two orgs, even over
    three centres: the split of the running total gives the first cent to a and the second to
    b (split org by org, a would get both)."""
    assert [list(column) for column in spread([1, 1], [1, 1, 1])] == [[1, 0], [0, 1], [0, 0]]
    statements = [
        org("org-0001", "1.00"),
        org("org-0002", "2.00"),
        org("org-0003", "3.00"),
        org("org-0011", "0.01", key="key-ops"),
        org("org-0012", "0.01", key="key-ops"),
    ]
    table = CostCentreMap.model_validate(
        {
            "orgs": {"org-0001": "a", "org-0002": "b", "org-0003": "c"},
            "api_keys": {"key-ops": "ops"},
            "shared": [{"name": "ops", "from": {"centre": "ops"}, "to": {"method": "even"}}],
        }
    )
    rows = [row for row in allocate(statements, table) if row.is_share]
    assert [(row.cost_centre, row.org_id, row.shared_cost) for row in rows] == [
        ("a", "org-0011", Decimal("0.01")),
        ("b", "org-0012", Decimal("0.01")),
    ]


def test_ties_go_to_the_first_centre_by_name_whatever_the_file_order() -> None:
    rule = {
        "name": "r",
        "from": {"orgs": ["org-0004"]},
        "to": {"method": "even", "centres": ["zeta", "alpha", "mid"]},
    }
    rows = allocate([org("org-0004", "0.02")], centres(rule))
    assert shares(rows) == {
        "alpha": (Decimal("0.01"), "even", "0.333333"),
        "mid": (Decimal("0.01"), "even", "0.333333"),
    }
    fixed = {
        "name": "r",
        "from": {"orgs": ["org-0004"]},
        "to": {"method": "fixed", "percentages": {"b": "50", "a": "50"}},
    }
    assert shares(allocate([org("org-0004", "0.01")], centres(fixed))) == {
        "a": (Decimal("0.01"), "fixed", "0.5")
    }


def test_even_weighted_and_fixed_by_hand_in_yen_and_negative() -> None:
    """JPY has no minor digits; a negative source (a credit) is split by the same rule."""
    table = CostCentreMap.model_validate(
        {
            "orgs": {"org-0001": "a", "org-0002": "b", "org-0003": "c"},
            "api_keys": {"key-x": "x"},
            "shared": [
                {"name": "w", "from": {"centre": "x"}, "to": {"method": "weighted"}},
            ],
        }
    )
    statements = [
        org("org-0001", "700", currency="JPY"),
        org("org-0002", "300", currency="JPY"),
        org("org-0003", "-5", currency="JPY"),  # negative direct cost weighs nothing
        org("org-0009", "-101", currency="JPY", key="key-x"),
    ]
    rows = allocate(statements, table)
    # -101 by 700 : 300 : 0 -> -70.7 and -30.3 -> -70 and -30, the yen left to a (.7).
    assert shares(rows) == {
        "a": (Decimal("-71"), "weighted", "0.7"),
        "b": (Decimal("-30"), "weighted", "0.3"),
    }
    assert sums_per_currency(rows) == {"JPY": Decimal("894")}


def test_weighted_without_direct_cost_falls_back_to_even() -> None:
    rule = {
        "name": "r",
        "from": {"orgs": ["org-0004"]},
        "to": {"method": "weighted", "centres": ["empty-1", "empty-2"]},
    }
    rows = allocate([org("org-0004", "1.01")], centres(rule))
    assert shares(rows) == {
        "empty-1": (Decimal("0.51"), WEIGHTED_AS_EVEN, "0.5"),
        "empty-2": (Decimal("0.50"), WEIGHTED_AS_EVEN, "0.5"),
    }


def test_first_rule_wins_and_shares_are_not_shared_again() -> None:
    table = CostCentreMap.model_validate(
        {
            "orgs": {"org-0001": "a", "org-0002": "b", "org-0004": "ops"},
            "api_keys": {"key-ops": "ops"},
            "shared": [
                # org-0004's lines (centre ops) go here first, by file order
                {
                    "name": "org-four",
                    "from": {"orgs": ["org-0004"]},
                    "to": {"method": "fixed", "percentages": {"ops2": "100"}},
                },
                {"name": "ops", "from": {"centre": "ops"}, "to": {"method": "weighted"}},
                {
                    "name": "to-ops",
                    "from": {"orgs": ["org-0002"]},
                    "to": {"method": "even", "centres": ["ops"]},
                },
            ],
        }
    )
    statements = [
        org("org-0001", "10.00"),
        org("org-0002", "5.00"),
        org("org-0004", "7.00"),
        org("org-0005", "3.00", key="key-ops"),
    ]
    rows = allocate(statements, table)
    by_rule: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for row in rows:
        if row.is_share:
            by_rule[row.allocated_from][row.cost_centre] = row.shared_cost
    # org-0004 went to ops2 only; ops kept org-0005's 3.00 and shares it by direct cost: b's
    # 5.00 is shared out, so only a (10.00) and ops2 (no direct cost) are candidates -> a.
    # ops receives org-0002's 5.00 from the third rule and keeps it (no chaining).
    assert dict(by_rule) == {
        "org-four": {"ops2": Decimal("7.00")},
        "ops": {"a": Decimal("3.00")},
        "to-ops": {"ops": Decimal("5.00")},
    }
    assert allocated(rows) == {
        "a": Decimal("13.00"),
        "b": Decimal("0.00"),
        "ops": Decimal("5.00"),
        "ops2": Decimal("7.00"),
    }


def test_default_targets_leave_out_shared_centres_unallocated_and_excluded() -> None:
    rule = {
        "name": "r",
        "from": {"centre": "shared-services"},
        "to": {"method": "even", "exclude": ["web"]},
    }
    second = {
        "name": "s",
        "from": {"centre": "platform"},
        "to": {"method": "even", "centres": ["web"]},
    }
    rows = allocate(EXAMPLE, centres(rule, second))
    # platform is shared out by rule s, web excluded, unallocated never a default target
    assert shares(rows)["research"][0] == Decimal("100.00")
    assert sums_per_currency(rows) == {"USD": Decimal("560.01")}


def test_a_rule_without_target_leaves_its_cost_in_unallocated() -> None:
    rule = {"name": "r", "from": {"centre": "shared-services"}, "to": {"method": "even"}}
    rows = allocate(
        [org("org-0004", "9.99"), org("org-0006", "1.00", currency="EUR")], centres(rule)
    )
    moved = [row for row in rows if row.is_share]
    assert [(r.cost_centre, r.method, r.ratio, r.shared_cost) for r in moved] == [
        (UNALLOCATED, NO_TARGET, "1", Decimal("9.99"))
    ]
    overhead = {"name": "o", "from": {"amount": "5", "currency": "GBP"}, "to": {"method": "even"}}
    rows = allocate([org("org-0001", "1.00")], centres(overhead))
    assert [(r.currency, r.cost_centre, r.shared_cost) for r in rows if r.is_share] == [
        ("GBP", UNALLOCATED, Decimal("5.00"))
    ]


def test_sources_by_api_key_and_user_take_only_their_lines() -> None:
    table = CostCentreMap.model_validate(
        {
            "orgs": {"org-0001": "a", "org-0002": "b"},
            "shared": [
                {
                    "name": "k",
                    "from": {"api_keys": ["key-1"]},
                    "to": {"method": "even", "centres": ["b"]},
                },
            ],
        }
    )
    first = org("org-0001", "1.00", "2.00")
    keyed = statement(
        invoice_number="INV-1",
        org_id="org-0001",
        org_name="One",
        charges=(charge("duration", "3.00", "x"),),
        lines=(line("duration", "1.00", "key-1", None), line("duration", "2.00", None, None)),
    )
    rows = allocate([keyed, org("org-0002", "4.00")], table)
    assert first.lines  # the helper builds lines without a key
    a_rows = [(r.api_key_id, r.billed_cost, r.allocated_from) for r in rows if r.cost_centre == "a"]
    assert a_rows == [("key-1", Decimal("0"), "k"), (None, Decimal("2.00"), "")]
    assert allocated(rows) == {"a": Decimal("2.00"), "b": Decimal("5.00")}


def test_csv_columns_and_focus_allocation_columns() -> None:
    rule = {
        "name": "platform-overhead",
        "from": {"centre": "shared-services"},
        "to": {"method": "even"},
    }
    text = allocation_csv(allocate(EXAMPLE, centres(rule))).decode("utf-8")
    records = list(csv.DictReader(io.StringIO(text)))
    assert tuple(records[0]) == ALLOCATION_COLUMNS
    share = next(r for r in records if r["mapped_by"] == SHARED and r["cost_centre"] == "web")
    assert share["org_id"] == "org-0004"
    assert (share["direct_cost"], share["shared_cost"], share["billed_cost"]) == (
        "0.00",
        "33.33",
        "33.33",
    )
    assert share["AllocatedMethodId"] == "even"
    assert share["AllocatedResourceId"] == share["AllocatedResourceName"] == "web"
    assert share["AllocatedMethodDetails"] == (
        '{"Elements":[{"AllocatedRatio":0.333333}],"x_SharedRule":"platform-overhead"}'
    )
    source = next(r for r in records if r["cost_centre"] == "shared-services")
    assert (source["billed_cost"], source["direct_cost"], source["shared_cost"]) == (
        "0.00",
        "100.00",
        "-100.00",
    )
    assert (source["AllocatedMethodId"], source["AllocatedResourceId"]) == ("even", "")
    plain = next(r for r in records if r["cost_centre"] == "research" and r["mapped_by"] == "org")
    assert [plain[c] for c in ALLOCATION_COLUMNS[-8:]] == ["0.00", "", "", "", "", "", "", ""]
    assert [r["cost_centre"] for r in records] == [
        "platform",
        "platform",
        "research",
        "research",
        "shared-services",
        "web",
        "web",
        UNALLOCATED,
    ]


def test_streamed_allocation_equals_the_in_memory_one_with_shared_rules(tmp_path: Path) -> None:
    rng = random.Random(20)
    table = CostCentreMap.model_validate(
        {
            "orgs": {f"org-{n:04d}": rng.choice(["a", "b", "c", "ops"]) for n in range(40)},
            "api_keys": {f"key-{n}": "ops" for n in range(5)},
            "shared": [
                {
                    "name": "keys",
                    "from": {"api_keys": ["key-1", "key-2"]},
                    "to": {"method": "fixed", "percentages": {"a": "33.3333", "c": "66.6667"}},
                },
                {"name": "ops", "from": {"centre": "ops"}, "to": {"method": "weighted"}},
                {
                    "name": "rest",
                    "from": {"centre": "unallocated"},
                    "to": {"method": "even", "exclude": ["c"]},
                },
                {
                    "name": "rent",
                    "from": {"amount": "1234.56", "currency": "EUR"},
                    "to": {"method": "weighted"},
                },
            ],
        }
    )
    statements = []
    for n in range(60):
        currency = rng.choice(["USD", "EUR", "JPY"])
        places = 0 if currency == "JPY" else 2
        amounts = [str(Decimal(rng.randint(-50, 9999)).scaleb(-places)) for _ in range(3)]
        key = rng.choice([None, "key-1", "key-2", "key-3"])
        statements.append(org(f"org-{n:04d}", *amounts, currency=currency, key=key))
    shuffled = statements[:]
    rng.shuffle(shuffled)
    expected = allocation_csv(allocate(statements, table))
    assert allocation_csv(allocate(shuffled, table)) == expected
    with PeriodReportWriter(
        tmp_path,
        "2026-10",
        "2026-09",
        table,
        issuer_name="Issuer",
        swing_threshold_percent=Decimal(50),
        top_orgs=5,
        max_org_rows=10,
        templates_dir=None,
        locale="en_US",
    ) as writer:
        for item in shuffled:
            writer.add(item)
        paths = writer.finish(list[OrgTotal](), None)
    assert paths[1].read_bytes() == expected
    rows = allocate(statements, table)
    net: dict[str, Decimal] = defaultdict(Decimal)
    for item in statements:
        net[item.currency] += sum((ln.amount for ln in item.lines), Decimal(0))
    net["EUR"] += Decimal("1234.56")
    assert sums_per_currency(rows) == dict(net)


def test_summary_pdf_shows_the_centres_after_sharing(tmp_path: Path) -> None:
    rule = {
        "name": "platform-overhead",
        "from": {"centre": "shared-services"},
        "to": {"method": "even"},
    }
    with PeriodReportWriter(
        tmp_path,
        "2026-10",
        "2026-09",
        centres(rule),
        issuer_name="Issuer",
        swing_threshold_percent=Decimal(50),
        top_orgs=5,
        max_org_rows=10,
        templates_dir=None,
        locale="en_US",
    ) as writer:
        for item in EXAMPLE:
            writer.add(item)
        paths = writer.finish([], None)
    text = " ".join(page.extract_text() for page in PdfReader(paths[4]).pages)
    centre_table = text.split("Cost allocation by cost centre")[1]
    for figure in ("$133.34", "$333.33", "$83.33", "$10.01"):
        assert figure in centre_table
