"""Budgets against the emulator over real HTTP, on SQLite and PostgreSQL: the last day's
month-to-date spend equals the close per scope to the cent; each threshold fires once across
daily reruns, new processes and a Celery task, by email (aiosmtpd) and webhook; usage that
arrives late shows as a difference in `billing budgets status`."""

from __future__ import annotations

import email
import email.policy
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from html import unescape
from pathlib import Path

from fastapi.testclient import TestClient
from pydantic import SecretStr

from billing.close.inline import close_period
from billing.close.pricing import load_pricing
from billing.config import Settings
from billing.db.engine import ledger
from billing.finance.budgets import budget_status, check_budgets
from billing.finance.webhooks import deliver_due
from billing.money import format_minor
from billing.periods import BillingPeriod
from billing.statements.formatting import money
from billing.states import BudgetScope, Role
from billing.usage.emulator import running_emulator
from billing.web.app import create_app
from tests.support.agreement import rows
from tests.support.api_data import tokens
from tests.support.api_server import settings_env
from tests.support.console import add_console_users, console_session
from tests.support.processes import run_billing
from tests.support.smtp_servers import RunningServer
from tests.support.webhook_receiver import webhook_receiver

OCTOBER = BillingPeriod.parse("2026-10")
LAST_DAY = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
MID_MONTH = datetime(2026, 10, 16, 6, 30, tzinfo=UTC)
CLOSED_AT = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
ORGS = ("org-0001", "org-0002", "org-0003", "org-0004")
SECRET = "whsec_0123456789abcdef0123456789abcdef"


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


@contextmanager
def emulator(reported_until: datetime | None = None) -> Iterator[str]:
    until = None if reported_until is None else int(reported_until.timestamp())
    with running_emulator(orgs=4, seed=11, page_size=300, reported_until=until) as base_url:
        yield base_url


def cost_centres(folder: Path) -> Path:
    path = folder / "cost_centres.yaml"
    path.write_text(
        "api_keys:\n  key-org-0001-1: research\norgs:\n  org-0002: analytics\n", encoding="utf-8"
    )
    return path


def budgets_file(folder: Path, entries: dict[str, list[tuple[str, str, str]]]) -> Path:
    """A BILLING_BUDGETS file: section -> [(scope id, amount, currency)], contacts for
    centres and keys."""
    lines = ["thresholds: [50, 80, 100]"]
    for section, budgets in entries.items():
        lines.append(f"{section}:")
        for scope_id, amount, currency in budgets:
            lines += [f"  {scope_id}:", f'    amount: "{amount}"', f"    currency: {currency}"]
            if section != "orgs":
                lines.append(f"    contacts: [{scope_id}-lead@example.com]")
    path = folder / "budgets.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def currencies(settings: Settings) -> dict[str, str]:
    pricing = load_pricing(settings, OCTOBER)
    return {org: pricing.card_for(pricing.account_for(org)).currency for org in ORGS}


GROUPS = {"org": "i.org_id", "api_key": "l.api_key_id"}


def usage_sums(database_url: str, scope: str) -> dict[str, Decimal]:
    """Per org or API key: the live invoices' usage lines less minimum top-ups, by SQL."""
    column = GROUPS[scope]
    found = rows(
        database_url,
        f"SELECT {column}, l.amount FROM invoice_line l JOIN invoice i ON i.id = l.invoice_id "  # noqa: S608
        "WHERE i.period = '2026-10' AND i.status <> 'void' AND l.charge_class = 'usage' "
        f"AND l.meter <> 'minimum_charge' AND {column} IS NOT NULL",
    )
    sums: dict[str, Decimal] = {}
    for scope_id, amount in found:
        sums[str(scope_id)] = sums.get(str(scope_id), Decimal(0)) + Decimal(str(amount))
    return sums


def test_the_last_days_month_to_date_equals_the_close_per_scope(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    with emulator() as base_url:
        settings = make_settings(
            database_url=database_url,
            mka1_base_url=base_url,
            mka1_api_key=SecretStr("t"),
            cost_centres=cost_centres(tmp_path),
            render_processes=1,
        )
        currency = currencies(settings)
        close_period(settings, OCTOBER, now=at(CLOSED_AT))
        keys = sorted(usage_sums(database_url, "api_key"))[:3]
        big = "1000000.00"
        settings = settings.model_copy(
            update={
                "budgets": budgets_file(
                    tmp_path,
                    {
                        "orgs": [(org, big, currency[org]) for org in ORGS],
                        "cost_centres": [
                            ("research", big, currency["org-0001"]),
                            ("analytics", big, currency["org-0002"]),
                        ],
                        "api_keys": [(key, big, currency[key[4:12]]) for key in keys],
                    },
                )
            }
        )
        check = check_budgets(settings, period=OCTOBER, now=at(LAST_DAY))
    assert len(check.measured) == 4 + 2 + 3
    assert check.fired == []
    by_org = usage_sums(database_url, "org")
    by_key = usage_sums(database_url, "api_key")
    stored = {
        (str(scope), str(scope_id)): Decimal(str(spend))
        for scope, scope_id, spend in rows(
            database_url, "SELECT scope, scope_id, spend FROM budget_spend WHERE period = '2026-10'"
        )
    }
    for org in ORGS:
        assert stored[("org", org)] == by_org[org] > 0
    for key in keys:
        assert stored[("api_key", key)] == by_key[key] > 0
    assert stored[("cost_centre", "research")] == by_key["key-org-0001-1"]
    with ledger(settings) as engine:
        statuses = budget_status(settings, engine, OCTOBER)
    assert len(statuses) == 9
    for status in statuses:
        assert status.spend is not None
        assert status.spend > 0
        assert status.invoiced == status.spend, status.budget
        assert status.difference == 0
        assert status.forecast is not None
        assert status.forecast > status.spend  # measured at Oct 31 23:00, before the end


def test_thresholds_fire_once_across_reruns_processes_and_a_task_by_email_and_webhook(
    make_settings: Callable[..., Settings],
    database_url: str,
    tmp_path: Path,
    smtp_server: RunningServer,
) -> None:
    hooks = tmp_path / "webhooks.yaml"
    with webhook_receiver() as receiver:
        hooks.write_text(
            "endpoints:\n  - name: finance\n"
            f"    url: {receiver.url}\n    secret: {SECRET}\n"
            "    events: [budget.threshold_reached]\n",
            encoding="utf-8",
        )
        with emulator(reported_until=MID_MONTH.replace(hour=0, minute=0)) as base_url:
            settings = make_settings(
                database_url=database_url,
                mka1_base_url=base_url,
                mka1_api_key=SecretStr("t"),
                email_backend="smtp",
                smtp_url=SecretStr(f"smtp://127.0.0.1:{smtp_server.port}"),
                smtp_retry_seconds=(0.05,),
                webhooks=hooks,
            )
            currency = currencies(settings)
            measuring = budgets_file(
                tmp_path, {"orgs": [(org, "1000000.00", currency[org]) for org in ORGS]}
            )
            first = check_budgets(
                settings.model_copy(update={"budgets": measuring}),
                period=OCTOBER,
                now=at(MID_MONTH),
            )
            early = {m.scope_id: m.spend for m in first.measured}
            # Budgets that the first half of October uses 60% of: 50% fires now.
            amounts = {org: (early[org] * 100 / 60).quantize(Decimal("0.01")) for org in ORGS}
            settings = settings.model_copy(
                update={
                    "budgets": budgets_file(
                        tmp_path,
                        {"orgs": [(org, str(amounts[org]), currency[org]) for org in ORGS]},
                    )
                }
            )
            mid = check_budgets(settings, period=OCTOBER, now=at(MID_MONTH))
            assert sorted((r.measured.scope_id, r.threshold) for r in mid.fired) == [
                (org, "50") for org in ORGS
            ]
            again = check_budgets(settings, period=OCTOBER, now=at(MID_MONTH))
            assert again.fired == []  # the next daily run: nothing new
            assert deliver_due(settings, now=at(MID_MONTH)).delivered == len(ORGS)
        with emulator() as full_url:
            settings = settings.model_copy(update={"mka1_base_url": full_url})
            env = {**settings_env(settings), "COLUMNS": "200"}
            # Two new processes on the last day's data, as a restarted beat would run them.
            for _ in range(2):
                done = run_billing("budgets", "check", "--period", "2026-10", env=env, cwd=tmp_path)
                assert done.returncode == 0, done.stderr
            # And the Celery task (eager here: no broker), once more.
            from workers.tasks import check_budgets as check_task

            check_task.apply()
        full = {
            str(scope_id): Decimal(str(spend))
            for scope_id, spend in rows(
                database_url, "SELECT scope_id, spend FROM budget_spend WHERE scope = 'org'"
            )
        }
        expected = sorted(
            (org, str(threshold))
            for org in ORGS
            for threshold in (50, 80, 100)
            if full[org] * 100 >= amounts[org] * threshold
        )
        fired = rows(database_url, "SELECT scope_id, threshold, email_status FROM budget_alert")
        assert sorted((str(org), str(threshold)) for org, threshold, _ in fired) == expected
        assert len(expected) > len(ORGS), "the rest of October must cross a higher threshold"
        assert {status for _, _, status in fired} == {"sent"}
        assert deliver_due(settings).tried == 0  # the commands delivered theirs already
        events = receiver.delivered_events()
    # Each alert mailed once, to the org's directory contacts.
    received = smtp_server.recorder.messages
    assert len(received) == len(expected)
    subjects = Counter(
        str(email.message_from_bytes(item.content, policy=email.policy.default)["Subject"])
        for item in received
    )
    assert all(count == 1 for count in subjects.values())
    assert any("has used 50% of its October 2026 budget" in subject for subject in subjects)
    # Each alert's webhook event delivered once, with the spend and budget as decimal strings.
    assert sorted((e["data"]["scope_id"], e["data"]["threshold_percent"]) for e in events) == (
        expected
    )
    assert len({e["id"] for e in events}) == len(expected)
    sample = next(e["data"] for e in events if e["data"]["threshold_percent"] == "50")
    assert sample["scope"] == str(BudgetScope.ORG)
    assert Decimal(sample["budget"]) == amounts[sample["scope_id"]]


def test_usage_that_arrives_after_the_last_check_shows_as_a_difference(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    late_from = datetime(2026, 10, 29, tzinfo=UTC)
    with emulator(reported_until=late_from) as base_url:
        settings = make_settings(
            database_url=database_url,
            mka1_base_url=base_url,
            mka1_api_key=SecretStr("t"),
            render_processes=1,
        )
        currency = currencies(settings)
        settings = settings.model_copy(
            update={
                "budgets": budgets_file(
                    tmp_path, {"orgs": [(org, "1000000.00", currency[org]) for org in ORGS]}
                )
            }
        )
        check_budgets(settings, period=OCTOBER, now=at(LAST_DAY))
    with emulator() as full_url:
        settings = settings.model_copy(update={"mka1_base_url": full_url})
        close_period(settings, OCTOBER, now=at(CLOSED_AT))
    invoiced = usage_sums(database_url, "org")
    with ledger(settings) as engine:
        statuses = {s.budget.scope_id: s for s in budget_status(settings, engine, OCTOBER)}
    for org in ORGS:
        status = statuses[org]
        assert status.invoiced == invoiced[org]
        assert status.spend is not None
        assert status.spend < invoiced[org]
        assert status.difference == invoiced[org] - status.spend
    env = {**settings_env(settings), "COLUMNS": "250"}
    shown = run_billing(
        "budgets", "status", "--period", "2026-10", "--format", "csv", env=env, cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    header, *lines = shown.stdout.strip().splitlines()
    assert header.split(",")[-2:] == ["invoiced", "difference"]
    for line in lines:
        cells = line.split(",")
        org = cells[1]
        assert Decimal(cells[-1]) == invoiced[org] - statuses[org].spend  # type: ignore[operator]
        assert Decimal(cells[-1]) > 0
    table = run_billing("budgets", "status", "--period", "2026-10", env=env, cwd=tmp_path)
    assert "4 budgets invoiced differently from the last month-to-date check" in table.stdout
    # The REST API gives the same figures, as decimal strings at the currency's places.
    viewer = tokens(settings).viewer
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        answer = client.get(
            "/api/v1/budgets?period=2026-10", headers={"Authorization": f"Bearer {viewer}"}
        )
        refused = client.get("/api/v1/budgets?period=2026-10")
    assert answer.status_code == 200
    assert refused.status_code == 401
    items = {item["scope_id"]: item for item in answer.json()["items"]}
    for org in ORGS:
        status = statuses[org]
        assert items[org]["spend"] == format_minor(status.spend, currency[org])  # type: ignore[arg-type]
        assert items[org]["invoiced"] == format_minor(invoiced[org], currency[org])
        assert Decimal(items[org]["difference"]) == status.difference
        assert items[org]["alerts"] == []
    # The console's Budgets page shows the same, in the locale's money.
    add_console_users(settings)
    with console_session(settings, Role.VIEWER) as viewer:
        period_page = viewer.client.get("/periods/2026-10").text
        html = viewer.client.get("/periods/2026-10/budgets").text
    assert 'id="budgets-link" href="/periods/2026-10/budgets"' in period_page
    for org in ORGS:
        status = statuses[org]
        start = html.index(f'data-id="{org}"')
        row = html[start : html.index("</tr>", start)]
        cells = [unescape(cell) for cell in re.findall(r'<td class="num">([^<]*)</td>', row)]
        assert money(status.spend, currency[org], "en_US") in row  # type: ignore[arg-type]
        assert money(invoiced[org], currency[org], "en_US") in cells
        assert money(status.difference, currency[org], "en_US") in cells  # type: ignore[arg-type]
    assert " style=" not in html


def test_a_bad_budgets_file_or_setting_stops_the_check_before_anything_is_fetched(
    make_settings: Callable[..., Settings], sqlite_url: str, tmp_path: Path
) -> None:
    bad = tmp_path / "budgets.yaml"
    bad.write_text("orgs:\n  org-0001:\n    amount: 12.5\n    currency: USD\n", encoding="utf-8")
    with emulator() as base_url:
        settings = make_settings(
            database_url=sqlite_url, mka1_base_url=base_url, mka1_api_key=SecretStr("t")
        )
        env = {**settings_env(settings), "BILLING_BUDGETS": str(bad)}
        done = run_billing("budgets", "check", "--period", "2026-10", env=env, cwd=tmp_path)
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [
            f'error: {bad}:3: field orgs.org-0001.amount: write 12.5 in quotes ("12.5"): '
            "YAML reads it as a binary float"
        ]
        unset = run_billing("budgets", "check", env=settings_env(settings), cwd=tmp_path)
        assert unset.returncode == 1
        assert "BILLING_BUDGETS is unset" in unset.stderr
        assert "Traceback" not in unset.stderr
        bad.write_text('orgs:\n  org-0001: {amount: "5.00", currency: USD}\n', encoding="utf-8")
        env["BILLING_EMAIL_FROM"] = "not an address"
        wrong = run_billing("budgets", "check", "--period", "2026-10", env=env, cwd=tmp_path)
        assert wrong.returncode == 1
        assert "setting BILLING_EMAIL_FROM" in wrong.stderr
    assert not (tmp_path / "billing.db").exists()  # nothing fetched, priced or stored
