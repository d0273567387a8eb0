"""Finance reports: cost allocation, summary.pdf, month over month, and re-rendering statements."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from billing.cli.app import app
from billing.close.inline import close_period
from billing.close.publish import render_statements
from billing.config import Settings
from billing.domain import Statement
from billing.errors import ConfigError
from billing.periods import BillingPeriod
from billing.statements.allocation import (
    UNALLOCATED,
    CostCentreMap,
    allocate,
    allocation_csv,
    load_cost_centres,
)
from billing.statements.formatting import money
from billing.statements.reports import GONE, NEW, SWING, month_over_month
from billing.usage.emulator import running_emulator
from tests.support.agreement import count, database_totals, pdf_text
from tests.support.factories import charge, line, statement

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PERIOD = BillingPeriod.parse("2026-10")


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


def two_statements() -> list[Statement]:
    usd = statement(
        org_id="org-a",
        charges=(charge("duration", "10.00", "0.12 / hour"), charge("memory", "0.03", "x")),
        lines=(
            line("duration", "4.01", "key-a-1", "user-a-1"),
            line("duration", "3.00", "key-a-2", "user-a-1"),
            line("duration", "2.99", "key-a-2", "user-a-2"),
            line("memory", "0.01", "key-a-1", "user-a-1"),
            line("memory", "0.02", None, None),
        ),
    )
    eur = statement(
        invoice_number="INV-2026-000002",
        org_id="org-b",
        currency="EUR",
        charges=(charge("duration", "5.55", "0.09 / hour"),),
        lines=(
            line("duration", "5.00", "key-b-1", "user-b-1"),
            line("duration", "0.55", "key-b-2", None),
        ),
    )
    return [usd, eur]


def test_allocation_sums_exactly_to_the_period_total_per_currency() -> None:
    statements = two_statements()
    centres = CostCentreMap(
        api_keys={"key-a-1": "research"}, users={"user-a-2": "platform"}, orgs={"org-b": "emea"}
    )
    rows = allocate(statements, centres)
    per_currency: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        per_currency[row.currency] += row.billed_cost
    assert per_currency == {"USD": Decimal("10.03"), "EUR": Decimal("5.55")}
    written = list(csv.DictReader(io.StringIO(allocation_csv(rows).decode("utf-8"))))
    assert sum(Decimal(r["billed_cost"]) for r in written if r["currency"] == "USD") == Decimal(
        "10.03"
    )
    keys = [(r.cost_centre, r.org_id, r.api_key_id, r.user_id, r.currency) for r in rows]
    assert len(keys) == len(set(keys))


def test_allocation_precedence_is_api_key_then_user_then_org_then_unallocated() -> None:
    centres = CostCentreMap(
        api_keys={"key-a-1": "research"},
        users={"user-a-1": "user-centre", "user-a-2": "platform"},
        orgs={"org-b": "emea"},
    )
    rows = {(r.api_key_id, r.user_id): r for r in allocate(two_statements(), centres)}
    # the key wins over the user's centre
    assert rows[("key-a-1", "user-a-1")].cost_centre == "research"
    assert rows[("key-a-1", "user-a-1")].billed_cost == Decimal("4.02")
    assert rows[("key-a-1", "user-a-1")].mapped_by == "api_key"
    # an unmapped key falls back to the user
    assert rows[("key-a-2", "user-a-1")].cost_centre == "user-centre"
    assert rows[("key-a-2", "user-a-2")].cost_centre == "platform"
    # the org's centre for anything else in that org
    assert rows[("key-b-1", "user-b-1")].cost_centre == "emea"
    assert rows[("key-b-2", None)].mapped_by == "org"
    # nothing mapped: unallocated (here the org-level line without key or user)
    assert rows[(None, None)].cost_centre == UNALLOCATED
    assert rows[(None, None)].billed_cost == Decimal("0.02")
    everything_unallocated = allocate(two_statements(), CostCentreMap())
    assert {row.cost_centre for row in everything_unallocated} == {UNALLOCATED}


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("api_keys:\n  key-1: research\napikeys:\n  key-2: x\n", "field apikeys"),
        ("users:\n  user-1: [a, b]\n", "field users.user-1"),
        ("orgs:\n  org-0001: '   '\n", "field orgs.org-0001"),
        ("api_keys: [key-1]\n", "field api_keys"),
        ("orgs:\n  org-0001: 12\n", "field orgs.org-0001"),
    ],
)
def test_bad_cost_centre_yaml_names_file_and_field(
    tmp_path: Path, content: str, field: str
) -> None:
    path = tmp_path / "centres.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_cost_centres(path)
    message = str(caught.value)
    assert str(path) in message
    assert field in message


def test_cost_centre_yaml_syntax_errors_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("orgs:\n  org-0001: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: not valid YAML"):
        load_cost_centres(broken)
    with pytest.raises(ConfigError, match=r"missing\.yaml: cost-centre file not found"):
        load_cost_centres(tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"list\.yaml:1: expected a mapping"):
        load_cost_centres(listed)
    assert load_cost_centres(EXAMPLES / "cost_centres.yaml").api_keys


def test_bad_cost_centre_file_stops_a_render_before_anything_is_written(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    bad = tmp_path / "centres.yaml"
    bad.write_text("users:\n  user-1: {nested: map}\n", encoding="utf-8")
    settings = make_settings(cost_centres=bad)
    with pytest.raises(ConfigError, match=r"centres\.yaml:2: field users\.user-1"):
        render_statements(settings, PERIOD)
    assert not (tmp_path / "statements").exists()


def test_month_over_month_flags_new_gone_and_swings() -> None:
    def one(org_id: str, amount: str) -> Statement:
        return statement(org_id=org_id, charges=(charge("duration", amount, "0.12 / hour"),))

    previous = [one("org-a", "100.00"), one("org-b", "100.00"), one("org-gone", "5.00")]
    current = [one("org-a", "149.00"), one("org-b", "40.00"), one("org-new", "7.00")]
    changes = {c.org_id: c for c in month_over_month(current, previous, Decimal(50))}
    assert changes["org-a"].change == Decimal("49.00")
    assert changes["org-a"].change_percent == Decimal("49.0")
    assert changes["org-a"].flag == ""
    assert changes["org-b"].change_percent == Decimal("-60.0")
    assert changes["org-b"].flag == SWING
    assert changes["org-new"].flag == NEW
    assert changes["org-gone"].flag == GONE
    assert changes["org-gone"].current is None


def test_close_writes_summary_pdf_and_allocation_csv(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    with running_emulator(orgs=5, seed=4) as base_url:
        settings = make_settings(
            mka1_base_url=base_url,
            mka1_api_key=SecretStr("t"),
            cost_centres=EXAMPLES / "cost_centres.yaml",
        )
        result = close_period(settings, PERIOD)
    text = pdf_text(result.folder / "summary.pdf")
    assert "Billing run report" in text
    for item in result.statements:
        assert item.org_name in text
        assert money(item.total, item.currency, "en_US") in text
    assert "Orgs without a billing contact" in text
    assert "Month over month" in text

    allocation = read_csv(result.folder / "allocation.csv")
    totals = database_totals(sqlite_url, str(PERIOD))
    per_currency: dict[str, Decimal] = defaultdict(Decimal)
    expected: dict[str, Decimal] = defaultdict(Decimal)
    for row in allocation:
        per_currency[row["currency"]] += Decimal(row["billed_cost"])
    for item in result.statements:
        expected[item.currency] += totals[item.org_id][1]
    assert per_currency == expected
    centres = {row["cost_centre"] for row in allocation}
    assert {"robotics-research", "analytics", UNALLOCATED} <= centres
    research = [row for row in allocation if row["cost_centre"] == "robotics-research"]
    assert {row["api_key_id"] for row in research} == {"key-org-0001-1"}


def test_month_over_month_against_the_stored_totals(
    make_settings: Callable[..., Settings], sqlite_url: str, tmp_path: Path
) -> None:
    # The shipped directory puts org-0003 on a card that starts in 2026-10: price it on the
    # default card here so that both months close.
    orgs = tmp_path / "orgs.yaml"
    shipped = (EXAMPLES / "orgs.yaml").read_text(encoding="utf-8").splitlines()
    orgs.write_text(
        "\n".join(text for text in shipped if "rate_card: platform" not in text) + "\n",
        encoding="utf-8",
    )
    september = PERIOD.previous()
    with running_emulator(orgs=5, seed=6) as base_url:
        settings = make_settings(
            mka1_base_url=base_url,
            mka1_api_key=SecretStr("t"),
            orgs=orgs,
            report_swing_percent=Decimal(5),
        )
        close_period(settings, september)
        result = close_period(settings, PERIOD)
    before = database_totals(sqlite_url, str(september))
    after = database_totals(sqlite_url, str(PERIOD))
    assert set(before) == set(after)
    text = pdf_text(result.folder / "summary.pdf")
    assert f"{PERIOD} against {september}" in text
    changes = {c.org_id: c for c in month_over_month(result.statements, [], Decimal(5))}
    assert all(change.flag == NEW for change in changes.values())
    currencies = {item.org_id: item.currency for item in result.statements}
    for org_id, (_number, total, _charges, _lines) in after.items():
        previous_total = before[org_id][1]
        change = total - previous_total
        currency = currencies[org_id]
        row = f"{money(previous_total, currency, 'en_US')} {money(total, currency, 'en_US')} "
        row += money(change, currency, "en_US")
        assert row in text, org_id
        if previous_total:
            percent = (change / previous_total * 100).quantize(Decimal("0.1"))
            assert f"{percent}%" in text
            if abs(change / previous_total * 100) > 5:
                assert f"{percent}% swing" in text


def test_render_rewrites_identical_files_without_a_run_or_the_upstream(
    make_settings: Callable[..., Settings], sqlite_url: str, tmp_path: Path
) -> None:
    with running_emulator(orgs=4, seed=8) as base_url:
        settings = make_settings(
            mka1_base_url=base_url,
            mka1_api_key=SecretStr("t"),
            cost_centres=EXAMPLES / "cost_centres.yaml",
        )
        result = close_period(settings, PERIOD)
    folder = result.folder
    before = {path.name: path.read_bytes() for path in folder.glob("*.csv")}
    pdfs = {path.name: pdf_text(path) for path in folder.glob("org-*.pdf")}
    emails = sorted((folder / "emails").glob("*.eml"))
    for path in folder.glob("*.csv"):
        path.unlink()
    runs = count(sqlite_url, "billing_run")

    closed_port = make_settings(
        mka1_base_url="http://127.0.0.1:9",
        mka1_max_attempts=1,
        cost_centres=EXAMPLES / "cost_centres.yaml",
    )
    rendered = render_statements(closed_port, PERIOD)
    assert {path.name for path in folder.glob("*.csv")} == set(before)
    assert {path.name: path.read_bytes() for path in folder.glob("*.csv")} == before
    assert {path.name: pdf_text(path) for path in folder.glob("org-*.pdf")} == pdfs
    assert rendered.count == 4
    assert count(sqlite_url, "billing_run") == runs
    assert sorted((folder / "emails").glob("*.eml")) == emails

    one_org = folder / "org-0002.csv"
    one_org.unlink()
    cli = CliRunner().invoke(
        app,
        ["statements", "render", "--period", str(PERIOD), "--org", "org-0002"],
        env={
            "BILLING_DATABASE_URL": sqlite_url,
            "BILLING_OUTPUT_DIR": str(tmp_path / "statements"),
            "MKA1_BASE_URL": "http://127.0.0.1:9",
            "BILLING_AUTO_MIGRATE": "false",
        },
    )
    assert cli.exit_code == 0, cli.output
    assert "wrote 1 statement of" in cli.output
    assert "(0 rendered, 1 unchanged;" in cli.output  # its PDF's key matched: kept as it was
    assert one_org.read_bytes() == before["org-0002.csv"]
    assert count(sqlite_url, "billing_run") == runs


def test_allocation_rows_do_not_depend_on_the_order_of_the_statements() -> None:
    centres = CostCentreMap(api_keys={"key-a-1": "research"}, orgs={"org-b": "emea"})
    statements = two_statements()
    rows = allocate(statements, centres)
    assert allocate(list(reversed(statements)), centres) == rows
    assert [(row.currency, row.cost_centre, row.org_id) for row in rows] == [
        ("EUR", "emea", "org-b"),
        ("EUR", "emea", "org-b"),
        ("USD", "research", "org-a"),
        ("USD", UNALLOCATED, "org-a"),
        ("USD", UNALLOCATED, "org-a"),
        ("USD", UNALLOCATED, "org-a"),
    ]
    # within an org: by API key, then user, the missing ones last
    assert [(row.api_key_id, row.user_id) for row in rows if row.cost_centre == UNALLOCATED] == [
        ("key-a-2", "user-a-1"),
        ("key-a-2", "user-a-2"),
        (None, None),
    ]
