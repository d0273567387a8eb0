"""Budgets, pure: spend per scope, thresholds reached exactly, the linear forecast by hand,
the budgets file's errors with file and line, and the alert email."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path

import pytest

from billing.budgets import (
    Budget,
    SpendLine,
    crossed,
    linear_forecast,
    scope_spend,
    spend_of,
    used_percent,
)
from billing.catalog.budgets import check_budgets, load_budgets
from billing.config import Settings
from billing.email.messages import BudgetAlertNotice, Letterhead, build_budget_alert
from billing.errors import ConfigError
from billing.statements.pdf import template_environment
from billing.states import BudgetScope

OCT_START = datetime(2026, 10, 1, tzinfo=UTC)
NOV_START = datetime(2026, 11, 1, tzinfo=UTC)


def line(
    org: str, key: str | None, user: str | None, amount: str, currency: str = "USD"
) -> SpendLine:
    return SpendLine(org, key, user, currency, Decimal(amount))


def test_spend_per_org_api_key_and_direct_cost_centre() -> None:
    lines = [
        line("org-1", "k1", "u1", "10.25"),
        line("org-1", "k1", "u2", "4.75"),
        line("org-1", None, "u2", "1.00"),
        line("org-2", "k9", None, "7.00", "EUR"),
    ]
    centres = {"k1": "research"}

    def centre_of(org: str, key: str | None, user: str | None) -> str:
        return centres.get(key or "", "unallocated")

    spend = scope_spend(lines, centre_of)
    assert spend[(BudgetScope.ORG, "org-1", "USD")] == Decimal("16.00")
    assert spend[(BudgetScope.API_KEY, "k1", "USD")] == Decimal("15.00")
    assert spend[(BudgetScope.COST_CENTRE, "research", "USD")] == Decimal("15.00")
    assert spend[(BudgetScope.COST_CENTRE, "unallocated", "USD")] == Decimal("1.00")
    assert spend[(BudgetScope.ORG, "org-2", "EUR")] == Decimal("7.00")
    assert (BudgetScope.API_KEY, "k9", "USD") not in spend  # spend stays in its currency
    budget = Budget(BudgetScope.ORG, "org-2", Decimal(100), "USD", (Decimal(50),))
    assert spend_of(budget, spend) == 0  # a USD budget counts no EUR spend
    assert (
        scope_spend(lines, None).keys().isdisjoint({(BudgetScope.COST_CENTRE, "research", "USD")})
    )


def test_thresholds_fire_when_spend_reaches_them_exactly_and_only_once() -> None:
    budget = Budget(
        BudgetScope.ORG, "org-1", Decimal("200.00"), "USD", (Decimal(100), Decimal(50), Decimal(80))
    )
    assert crossed(budget, Decimal("99.99")) == []
    assert crossed(budget, Decimal("100.00")) == [Decimal(50)]
    assert crossed(budget, Decimal("159.99")) == [Decimal(50)]
    assert crossed(budget, Decimal("160.00")) == [Decimal(50), Decimal(80)]
    assert crossed(budget, Decimal("250.00"), fired=[Decimal(50)]) == [Decimal(80), Decimal(100)]
    assert crossed(budget, Decimal("250.00"), fired=budget.thresholds) == []


def test_used_percent_to_one_decimal_half_up() -> None:
    assert used_percent(Decimal("33.35"), Decimal("100")) == Decimal("33.4")
    assert used_percent(Decimal("2"), Decimal("3")) == Decimal("66.7")
    assert used_percent(Decimal("0"), Decimal("0")) == 0
    assert used_percent(Decimal("0.01"), Decimal("0")) == 100


def test_linear_forecast_by_hand() -> None:
    # 10 of October's 31 days: 100.00 x 31 / 10 = 310.00
    assert linear_forecast(
        Decimal("100.00"), "USD", OCT_START, NOV_START, datetime(2026, 10, 11, tzinfo=UTC)
    ) == Decimal("310.00")
    # 3 days: 10.00 x 31 / 3 = 103.333... -> 103.33; 0.05 x 31 / 3 = 0.51666... -> 0.52
    at_day_3 = datetime(2026, 10, 4, tzinfo=UTC)
    assert linear_forecast(Decimal("10.00"), "USD", OCT_START, NOV_START, at_day_3) == Decimal(
        "103.33"
    )
    assert linear_forecast(Decimal("0.05"), "USD", OCT_START, NOV_START, at_day_3) == Decimal(
        "0.52"
    )
    # JPY has no minor unit: 1000 x 31 / 3 = 10333.3 -> 10333
    assert linear_forecast(Decimal(1000), "JPY", OCT_START, NOV_START, at_day_3) == Decimal(10333)
    # After the period's end the forecast is the spend itself.
    assert linear_forecast(Decimal("12.34"), "USD", OCT_START, NOV_START, NOV_START) == Decimal(
        "12.34"
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "budgets.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_budgets_file_loads() -> None:
    budgets = load_budgets(Path("examples/budgets.yaml"))
    org = budgets.get(BudgetScope.ORG, "org-0002")
    assert org is not None
    assert org.amount == Decimal("400.00")
    assert org.thresholds == (Decimal(80), Decimal(100), Decimal(120))
    centre = budgets.get(BudgetScope.COST_CENTRE, "robotics-research")
    assert centre is not None
    assert centre.thresholds == (Decimal(50), Decimal(80), Decimal(100))
    assert centre.contacts == ("robotics-lead@example.com",)


def test_every_problem_of_a_budgets_file_names_its_line_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "thresholds: [50, 50]\n"
        "orgs:\n"
        "  org-1:\n"
        "    amount: 12.5\n"
        "    currency: USD\n"
        "  org-2:\n"
        '    amount: "10.001"\n'
        "    currency: USD\n"
        "cost_centres:\n"
        "  research:\n"
        '    amount: "5"\n'
        "    currency: XXY\n"
        "    contacts: ['not an address']\n"
        "    limit: 3\n",
    )
    problems = check_budgets(path)
    assert problems[0] == f"{path}:1: field thresholds: a threshold is listed twice"
    assert problems[1].startswith(f"{path}:4: field orgs.org-1.amount: write 12.5 in quotes")
    assert problems[2].startswith(f"{path}:12: field cost_centres.research.currency:")
    assert problems[3].startswith(f"{path}:13: field cost_centres.research.contacts:")
    assert problems[4] == (
        f"{path}:14: field cost_centres.research.limit: Extra inputs are not permitted"
    )
    with pytest.raises(ConfigError) as raised:
        load_budgets(path)
    assert (
        str(raised.value)
        == problems[0] + f" (and {len(problems) - 1} more; run billing ratecards check)"
    )
    decimals = write(tmp_path, 'orgs:\n  org-2:\n    amount: "10.001"\n    currency: USD\n')
    assert check_budgets(decimals) == [
        f"{decimals}:3: field orgs.org-2.amount: 10.001 has more decimals than USD has (2)"
    ]
    assert check_budgets(tmp_path / "missing.yaml") == [
        f"{tmp_path / 'missing.yaml'}: budgets file not found; fix BILLING_BUDGETS or unset it"
    ]


def test_the_alert_email_prints_ids_literally_on_one_subject_line() -> None:
    notice = BudgetAlertNotice(
        period="2026-10",
        scope="API key",
        scope_id="key\r\nBcc: victim@example.com <b>",
        threshold="80",
        currency="USD",
        budget=Decimal("100.00"),
        spend=Decimal("80.00"),
        forecast=Decimal("120.50"),
        fired_at=datetime(2026, 10, 20, 6, 30, tzinfo=UTC),
        recipients=("lead@example.com",),
    )
    letterhead = Letterhead("billing@mka1.example", "MKA1, Inc.", "en_US")
    message: EmailMessage = build_budget_alert(
        notice, template_environment(None, "en_US"), letterhead
    )
    subject = str(message["Subject"])
    assert "\n" not in subject
    assert "\r" not in subject
    assert subject == (
        "Budget alert: API key key Bcc: victim@example.com <b> has used 80% of its "
        "October 2026 budget ($80.00 of $100.00)"
    )
    assert message["Bcc"] is None
    assert message["To"] == "lead@example.com"
    body = message.get_content()
    assert "Forecast to the end of the month (at the same daily rate): $120.50" in body
    assert "<b>" in body  # a text email prints the id as it is


def test_beat_checks_budgets_daily_at_the_configured_hour_on_the_fetch_queue(
    make_settings: Callable[..., Settings],
) -> None:
    from celery.schedules import crontab

    from workers import tasks
    from workers.celery_app import FETCH_QUEUE, ROUTES, beat_schedule, create_app

    settings = make_settings(budget_check_hour=5)
    entry = beat_schedule(settings)["check-budgets"]
    assert entry["task"] == "workers.tasks.check_budgets"
    assert entry["schedule"] == crontab(minute="30", hour="5")
    assert ROUTES["workers.tasks.check_budgets"] == FETCH_QUEUE
    app = create_app(settings)
    assert app.amqp.router.route({}, entry["task"])["queue"].name == FETCH_QUEUE
    assert tasks.check_budgets.name == entry["task"]
