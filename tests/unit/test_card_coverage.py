"""The months each rate card, and so each org, can be billed for, as `ratecards check` says them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.catalog import load_rate_cards
from billing.catalog.coverage import MonthRange, billable_months, common_months, describe_months
from billing.cli.app import app
from billing.errors import RateCardError
from billing.periods import BillingPeriod

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

VERSIONS = {
    "v1.yaml": "effective_from: 2026-01-01\neffective_until: 2026-03-31\n",
    "v2.yaml": "effective_from: 2026-05-15\n",
    "v3.yaml": "effective_from: 2026-08-01\neffective_until: 2026-08-20\n",
    "v4.yaml": "effective_from: 2026-10-01\n",
}


def card_folder(tmp_path: Path) -> Path:
    for name, dates in VERSIONS.items():
        (tmp_path / name).write_text(
            "id: c\ncurrency: USD\n"
            + dates
            + "meters:\n  duration: {unit: hour, unit_price: '1'}\n",
            encoding="utf-8",
        )
    return tmp_path


def month(text: str) -> BillingPeriod:
    return BillingPeriod.parse(text)


def within(period: BillingPeriod, ranges: list[MonthRange]) -> bool:
    return any(r.first <= period and (r.last is None or period <= r.last) for r in ranges)


def test_the_months_are_exactly_those_a_close_can_price(tmp_path: Path) -> None:
    catalog = load_rate_cards(card_folder(tmp_path))
    ranges = billable_months(catalog.versions("c"))
    assert describe_months(ranges) == "2026-01 to 2026-03, 2026-06 to 2026-08, 2026-10 on"
    period = month("2025-06")
    while period <= month("2027-06"):
        try:
            catalog.card_for("c", period, "o")
            priced = True
        except RateCardError:
            priced = False
        assert within(period, ranges) == priced, period
        period = period.next()


def test_months_every_card_shares() -> None:
    early = [MonthRange(month("2026-01"), None)]
    gappy = [MonthRange(month("2026-02"), month("2026-03")), MonthRange(month("2026-10"), None)]
    assert describe_months(common_months(early, gappy)) == "2026-02 to 2026-03, 2026-10 on"
    assert describe_months(common_months([MonthRange(month("2026-01"), month("2026-01"))])) == (
        "2026-01"
    )
    assert describe_months(common_months(early, [])) == "no month"


def test_a_card_starting_later_shows_in_the_check(tmp_path: Path) -> None:
    cards = tmp_path / "cards"
    shutil.copytree(EXAMPLES / "ratecards", cards)
    platform = cards / "platform-2026-01.yaml"
    platform.write_text(
        platform.read_text(encoding="utf-8").replace(
            "effective_from: 2026-01-01", "effective_from: 2026-10-01"
        ),
        encoding="utf-8",
    )
    orgs = tmp_path / "orgs.yaml"
    orgs.write_text(
        (EXAMPLES / "orgs.yaml").read_text(encoding="utf-8")
        + '  - org_id: "[bold]x[/]"\n    name: Odd\n    rate_card: platform\n',
        encoding="utf-8",
    )
    shown = CliRunner().invoke(app, ["ratecards", "check", str(cards), "--orgs", str(orgs)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert "platform bills 2026-10 on: 2 orgs (org-0003, [bold]x[/])" in lines
    assert lines[-1] == "every org can be billed for 2026-10 on"


@pytest.mark.parametrize("count", [5, 6, 12])
def test_a_card_with_many_orgs_names_a_few_and_counts_the_rest(tmp_path: Path, count: int) -> None:
    orgs = tmp_path / "orgs.yaml"
    orgs.write_text(
        "default_rate_card: standard\norgs:\n"
        + "".join(f"  - {{org_id: o-{n:02d}, name: O}}\n" for n in range(count)),
        encoding="utf-8",
    )
    shown = CliRunner().invoke(
        app, ["ratecards", "check", str(EXAMPLES / "ratecards"), "--orgs", str(orgs)]
    )
    assert shown.exit_code == 0, shown.output
    more = f" and {count - 5} more" if count > 5 else ""
    assert (
        f"standard bills 2026-01 on: the default card: {count} orgs "
        f"(o-00, o-01, o-02, o-03, o-04{more}) and every org not listed"
    ) in shown.output.splitlines()
    assert "platform bills 2026-01 on: no org" in shown.output.splitlines()
