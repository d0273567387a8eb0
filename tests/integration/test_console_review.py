"""The console's Review page on SQLite and PostgreSQL: totals equal summary.csv's, flags as
worked out by hand from the ledger, filters, sorting and pages, names escaped, one-line errors."""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from billing.config import Settings
from billing.db.engine import make_engine
from billing.finance.adjustments import adjust
from billing.finance.review import hold, release
from billing.finance.review_board import period_review
from billing.periods import BillingPeriod
from billing.states import Role
from tests.support.agreement import rows
from tests.support.api_data import (
    OCTOBER,
    SCRIPT_NAME,
    SCRIPTED_ORG,
    SEPTEMBER,
    api_settings,
)
from tests.support.console import ConsoleSession, add_console_users, console_session
from tests.support.seeded import SeededLedgers

HELD_ORG = "org-0002"
SILENT_ORG = "org-0005"  # no email in the example directory
ROW = re.compile(r'<tr(?: data-invoice="([^"]*)")? data-org="([^"]*)">(.*?)</tr>', re.DOTALL)
FLAG = re.compile(r'<span class="flag flag-([a-z-]+)">')
PERIOD_TOTAL = re.compile(r'data-currency="([A-Z]{3})" data-amount="([-0-9.]+)"')
FILTERED_TOTAL = re.compile(r'data-filtered-currency="([A-Z]{3})" data-amount="([-0-9.]+)"')


@dataclass(frozen=True)
class Shown:
    """A Review page's rows as (ref or None, org id) -> flags, its rows' order and totals."""

    flags: dict[str, set[str]]
    refs: dict[str, str | None]
    order: list[str]
    totals: dict[str, Decimal]
    filtered: dict[str, Decimal]


def shown(text: str) -> Shown:
    found = ROW.findall(text)
    return Shown(
        flags={html.unescape(org): set(FLAG.findall(cells)) for _ref, org, cells in found},
        refs={html.unescape(org): (ref or None) for ref, org, _cells in found},
        order=[html.unescape(org) for _ref, org, _cells in found],
        totals={c: Decimal(a) for c, a in PERIOD_TOTAL.findall(text)},
        filtered={c: Decimal(a) for c, a in FILTERED_TOTAL.findall(text)},
    )


@pytest.fixture
def seeded(
    make_settings: Callable[..., Settings],
    database_url: str,
    tmp_path: Path,
    seeded_ledgers: SeededLedgers,
) -> Iterator[tuple[Settings, ConsoleSession]]:
    """September sent, October drafted with org-0002's draft held; a viewer signed in."""
    settings = api_settings(make_settings, tmp_path, database_url)
    seeded_ledgers.seed(settings)
    add_console_users(settings)
    [(draft,)] = rows(
        database_url,
        f"SELECT id FROM invoice WHERE org_id = '{HELD_ORG}' AND period = '{OCTOBER}'",  # noqa: S608
    )
    hold(settings, str(draft), "usage looks doubled", actor="test")
    with console_session(settings, Role.VIEWER) as session:
        yield settings, session


def summary_totals(settings: Settings, period: BillingPeriod) -> dict[str, Decimal]:
    report = (settings.output_dir / str(period) / "summary.csv").read_text(encoding="utf-8")
    totals: dict[str, Decimal] = {}
    for row in csv.DictReader(io.StringIO(report)):
        totals[row["currency"]] = totals.get(row["currency"], Decimal(0)) + Decimal(row["total"])
    return totals


def live_totals(database_url: str, period: BillingPeriod) -> dict[str, tuple[str, Decimal]]:
    found = rows(
        database_url,
        "SELECT org_id, currency, total FROM invoice "  # noqa: S608
        f"WHERE period = '{period}' AND status <> 'void'",
    )
    return {str(org): (str(cur), Decimal(str(total))) for org, cur, total in found}


def test_totals_equal_summary_csv_and_flags_are_those_worked_out_by_hand(
    seeded: tuple[Settings, ConsoleSession],
) -> None:
    settings, console = seeded
    answer = console.client.get(f"/periods/{OCTOBER}/review")
    assert answer.status_code == 200
    page = shown(answer.text)

    assert page.totals == summary_totals(settings, OCTOBER)
    assert len(page.totals) == 2  # org-0001 is billed in EUR, the rest in USD
    assert page.filtered == {}  # no filter: no subtotal

    now, before = (
        live_totals(settings.database_url, OCTOBER),
        live_totals(settings.database_url, SEPTEMBER),
    )
    expected: dict[str, set[str]] = {}
    for org, (currency, total) in now.items():
        last_currency, last = before[org]
        assert last_currency == currency
        flags = set()
        if last == 0 and total != 0:
            flags.add("from-zero")
        elif last != 0 and abs((total - last) / last * 100) > settings.report_swing_percent:
            flags.add("swing")
        expected[org] = flags
    expected[HELD_ORG].add("held")
    expected[SILENT_ORG].add("no-contact")
    assert page.flags == expected
    assert page.order == sorted(now)

    drafts = rows(
        settings.database_url,
        f"SELECT org_id, id FROM invoice WHERE period = '{OCTOBER}'",  # noqa: S608
    )
    assert page.refs == {str(org): str(draft) for org, draft in drafts}
    for org, draft in drafts:
        assert f'href="/invoices/{draft}"' in answer.text
        assert f'href="/orgs/{org}"' in answer.text
    assert '<span class="status status-held">held</span>' in answer.text
    assert f'<td class="org-name">{html.escape(SCRIPT_NAME, quote=False)}</td>' in answer.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
    assert SCRIPT_NAME not in answer.text
    assert f'data-org="{SCRIPTED_ORG}"' in answer.text


def test_new_orgs_and_gone_orgs_across_two_periods(
    seeded: tuple[Settings, ConsoleSession],
) -> None:
    settings, console = seeded
    first = shown(console.client.get(f"/periods/{SEPTEMBER}/review").text)
    assert first.totals == summary_totals(settings, SEPTEMBER)
    assert {org: flags - {"no-contact"} for org, flags in first.flags.items()} == {
        org: {"new"} for org in live_totals(settings.database_url, SEPTEMBER)
    }
    numbers = rows(
        settings.database_url,
        f"SELECT org_id, number FROM invoice WHERE period = '{SEPTEMBER}'",  # noqa: S608
    )
    assert first.refs == {str(org): str(number) for org, number in numbers}

    november = console.client.get("/periods/2026-11/review")
    assert november.status_code == 200
    after = shown(november.text)
    assert after.flags == {org: {"gone"} for org in live_totals(settings.database_url, OCTOBER)}
    assert set(after.refs.values()) == {None}  # no invoice: no link
    assert "/invoices/" not in november.text
    assert after.totals == {}
    assert "No live invoice in 2026-11." in november.text


def test_filters_sorting_and_pages(seeded: tuple[Settings, ConsoleSession]) -> None:
    settings, console = seeded
    url = f"/periods/{OCTOBER}/review"
    now = live_totals(settings.database_url, OCTOBER)

    held = shown(console.client.get(url, params={"flag": "held"}).text)
    assert held.order == [HELD_ORG]
    assert held.filtered == {now[HELD_ORG][0]: now[HELD_ORG][1]}
    assert held.totals == summary_totals(settings, OCTOBER)  # the period's, whatever the filter
    assert shown(console.client.get(url, params={"flag": "no-contact"}).text).order == [SILENT_ORG]
    assert shown(console.client.get(url, params={"status": "draft"}).text).order == sorted(now)
    assert shown(console.client.get(url, params={"status": "sent"}).text).order == []
    assert shown(console.client.get(url, params={"q": "GLOBEX"}).text).order == ["org-0002"]
    assert shown(console.client.get(url, params={"q": "<SCRIPT>"}).text).order == [SCRIPTED_ORG]
    assert shown(console.client.get(url, params={"q": "-000"}).text).order == sorted(now)

    largest = sorted(now, key=lambda org: (-now[org][1], org))
    by_total = console.client.get(url, params={"sort": "total", "order": "desc"})
    assert shown(by_total.text).order == largest
    assert shown(console.client.get(url, params={"sort": "org", "order": "desc"}).text).order == (
        sorted(now, reverse=True)
    )
    names = shown(console.client.get(url, params={"sort": "name", "q": "org"}).text)
    assert len(names.order) == len(now)
    # the header links keep the filters and flip the sorted column's order
    assert (
        'href="?flag=held&amp;sort=total&amp;order=desc"'
        in console.client.get(url, params={"flag": "held"}).text
    )
    assert 'href="?sort=total"' in by_total.text

    board = period_review(
        settings, make_engine(settings.database_url), OCTOBER, sort="total", per_page=2, page=2
    )
    smallest = list(reversed(largest))
    assert (board.count, board.pages, board.page) == (5, 3, 2)
    assert [row.org_id for row in board.rows] == smallest[2:4]
    paged = console.client.get(url, params={"sort": "total", "page": "9"})
    assert shown(paged.text).order == smallest  # one page of 100 holds them all


def test_the_board_follows_each_change_of_the_ledger(
    seeded: tuple[Settings, ConsoleSession],
) -> None:
    settings, console = seeded
    url = f"/periods/{OCTOBER}/review"
    assert shown(console.client.get(url, params={"flag": "held"}).text).order == [HELD_ORG]
    [(draft,)] = rows(
        settings.database_url,
        f"SELECT id FROM invoice WHERE org_id = 'org-0003' AND period = '{OCTOBER}'",  # noqa: S608
    )
    hold(settings, str(draft), "second look", actor="test")
    held = shown(console.client.get(url, params={"flag": "held"}).text)
    assert held.order == [HELD_ORG, "org-0003"]
    release(settings, str(draft), actor="test")
    assert shown(console.client.get(url, params={"flag": "held"}).text).order == [HELD_ORG]

    before = shown(console.client.get(url).text).totals
    adjust(settings, str(draft), None, Decimal("12.34"), "goodwill", "Goodwill", created_by="t")
    after = shown(console.client.get(url).text)
    currency = live_totals(settings.database_url, OCTOBER)["org-0003"][0]
    assert after.totals[currency] == before[currency] + Decimal("12.34")
    assert after.totals == summary_totals(settings, OCTOBER)


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("/periods/october/review", "period 'october' is not of the form YYYY-MM"),
        (f"/periods/{OCTOBER}/review?flag=odd", "flag 'odd' is not one of: swing,"),
        (f"/periods/{OCTOBER}/review?sort=%3Cb%3E", "sort '<b>' is not one of: org, name,"),
        (f"/periods/{OCTOBER}/review?page=0", "page 0 of 100 rows: both must be 1 or more"),
    ],
)
def test_bad_input_is_a_422_page_with_one_line(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path, path: str, line: str
) -> None:
    settings = api_settings(make_settings, tmp_path, database_url)
    add_console_users(settings)
    with console_session(settings, Role.VIEWER) as console:
        answer = console.client.get(path)
    assert answer.status_code == 422
    [message] = re.findall(r'id="error-message">(.*?)</p>', answer.text, re.DOTALL)
    assert line in html.unescape(message)
    assert "\n" not in message
    assert "<b>" not in answer.text
