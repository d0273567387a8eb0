"""The console's Period, Run and Allocation pages over a real ledger on SQLite and PostgreSQL:
figures equal period_summary and the period's CSV reports, finalize and send-emails refused
without the role or the form's token, confirmed before anything happens, recorded with the
signed-in user; a run's progress reloads only while it runs; allocation sums exactly."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from html import unescape
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from billing.config import Settings
from billing.db.engine import ledger
from billing.db.locks import period_lock
from billing.db.tables import BillingRun, RunTask
from billing.finance.credit_notes import CreditRequest, create_credit_note
from billing.finance.overview import PeriodSummary, period_summary
from billing.finance.review import hold
from billing.periods import BillingPeriod
from billing.states import Role
from tests.support.agreement import rows
from tests.support.api_data import (
    EXAMPLES,
    OCTOBER,
    SCRIPT_NAME,
    SCRIPTED_ORG,
    SEPTEMBER,
    api_settings,
)
from tests.support.console import add_console_users, console_session
from tests.support.seeded import SeededLedgers

SCRIPTED_CENTRE = "shared <b>services</b>"
HELD_ORG = "org-0003"


@pytest.fixture
def settings(
    make_settings: Callable[..., Settings],
    database_url: str,
    tmp_path: Path,
    seeded_ledgers: SeededLedgers,
) -> Settings:
    """September sent, October drafted, the example cost centres (one named with markup), and
    a console user per role."""
    built = api_settings(make_settings, tmp_path, database_url)
    centres = tmp_path / "cost_centres.yaml"
    text = (EXAMPLES / "cost_centres.yaml").read_text(encoding="utf-8")
    centres.write_text(text.replace("shared-services", f'"{SCRIPTED_CENTRE}"'), encoding="utf-8")
    seeded = built.model_copy(update={"cost_centres": centres})
    seeded_ledgers.seed(seeded)
    add_console_users(seeded)
    return seeded


def response(answer: object) -> httpx.Response:
    assert isinstance(answer, httpx.Response)
    return answer


def summary_of(settings: Settings, period: BillingPeriod) -> PeriodSummary:
    with ledger(settings) as engine:
        return period_summary(engine, period, datetime.now(UTC))


def report(settings: Settings, period: BillingPeriod, name: str) -> list[dict[str, str]]:
    text = (settings.output_dir / str(period) / name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def csv_totals(records: list[dict[str, str]], amount: str) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for record in records:
        currency = record["currency"]
        totals[currency] = totals.get(currency, Decimal(0)) + Decimal(record[amount])
    return totals


def attr_values(html: str, name: str) -> dict[str, str]:
    """{value of data-<name>: the text of that element} for elements like <dd data-x="v">n<."""
    found = re.findall(rf'data-{name}="([^"]+)"[^>]*>(?:<[^>]+>)*([^<]*)<', html)
    return {key: text.strip() for key, text in found}


def section(html: str, element_id: str, tag: str) -> str:
    """The markup of the element with this id, up to its closing tag."""
    start = html.index(f'id="{element_id}"')
    return html[start : html.index(f"</{tag}>", start)]


def invoice_states(settings: Settings, period: BillingPeriod) -> list[tuple[str, str, object]]:
    return [
        (str(org), str(status), number)
        for org, status, number in rows(
            settings.database_url,
            "SELECT org_id, status, number FROM invoice "  # noqa: S608
            f"WHERE period = '{period}' ORDER BY org_id",
        )
    ]


def draft_id(settings: Settings, org_id: str) -> str:
    [(found,)] = rows(
        settings.database_url,
        f"SELECT id FROM invoice WHERE org_id = '{org_id}' AND status = 'draft'",  # noqa: S608
    )
    return str(found)


def test_period_page_shows_what_period_summary_and_summary_csv_say(settings: Settings) -> None:
    summary = summary_of(settings, SEPTEMBER)
    with console_session(settings, Role.VIEWER) as viewer:
        page = viewer.client.get(f"/periods/{SEPTEMBER}")
        october = viewer.client.get(f"/periods/{OCTOBER}").text
        bad = viewer.client.get("/periods/2026-13")
    assert page.status_code == 200
    html = page.text
    assert f"<h1>Period {SEPTEMBER}</h1>" in html
    assert attr_values(html, "invoices") == {s: str(n) for s, n in summary.counts.items()}
    assert attr_values(html, "emails") == {s: str(n) for s, n in summary.emails.items()}
    assert int(attr_values(html, "invoices")["sent"]) >= 4
    assert int(attr_values(html, "emails")["sent"]) > 0
    assert attr_values(october, "invoices")["draft"] == "5"
    amounts = dict(re.findall(r'data-currency="(\w+)" data-amount="([^"]+)"', html))
    shown = {currency: Decimal(amount) for currency, amount in amounts.items()}
    assert (
        shown == summary.totals == csv_totals(report(settings, SEPTEMBER, "summary.csv"), "total")
    )
    runs = section(html, "runs", "table")
    assert summary.runs
    for run in summary.runs:
        assert f'<a href="/runs/{run.id}">run {run.id}</a>' in runs
        assert f"<td>{run.trigger}</td>" in runs
    assert f'id="review-link" href="/periods/{SEPTEMBER}/review"' in html
    assert f'id="allocation-link" href="/periods/{SEPTEMBER}/allocation"' in html
    actions = section(html, "period-actions", "section")
    assert "Finalize period" not in actions  # a viewer sees no button it may not use
    assert " style=" not in html
    assert bad.status_code == 422
    assert 'id="error-message"' in bad.text


def test_finalize_refused_or_unconfirmed_numbers_nothing(settings: Settings) -> None:
    hold(settings, draft_id(settings, HELD_ORG), "usage spike", actor="test")
    before = invoice_states(settings, OCTOBER)
    path = f"/periods/{OCTOBER}/finalize"
    with console_session(settings, Role.VIEWER) as viewer:
        refused = response(viewer.post(path))
        viewer_emails = response(viewer.post(f"/periods/{OCTOBER}/emails/send"))
    with console_session(settings, Role.APPROVER) as approver:
        page = approver.client.get(f"/periods/{OCTOBER}").text
        forged = approver.client.post(path, data={"confirmed": "yes"}, follow_redirects=False)
        asked = response(approver.post(path, confirmed=False))
        asked_emails = response(approver.post(f"/periods/{OCTOBER}/emails/send", confirmed=False))
    assert refused.status_code == 403
    assert 'id="error-message"' in refused.text
    assert "approver" in refused.text
    assert viewer_emails.status_code == 403
    assert forged.status_code == 403
    assert "security token" in forged.text
    actions = section(page, "period-actions", "section")
    assert f'action="/periods/{OCTOBER}/finalize"' in actions
    assert "Finalize period" in actions
    assert "No email pending." in actions  # October is drafted: nothing to send yet
    assert asked.status_code == 200
    assert 'id="confirm"' in asked.text
    assert f"<h1>Finalize {OCTOBER}</h1>" in asked.text
    assert f"4 draft invoices of {OCTOBER} will be numbered" in asked.text
    assert "1 held draft will stay a draft" in asked.text
    assert "gapless and cannot be taken back" in asked.text
    assert "emailed" in asked.text
    assert asked_emails.status_code == 200
    assert "0 pending emails" in asked_emails.text
    assert invoice_states(settings, OCTOBER) == before
    assert all(status == "draft" and number is None for _org, status, number in before)
    assert rows(
        settings.database_url, "SELECT COUNT(*) FROM billing_run WHERE operation = 'finalize'"
    ) == [(0,)]


def test_approver_finalizes_and_sends_the_pending_emails(settings: Settings) -> None:
    hold(settings, draft_id(settings, HELD_ORG), "usage spike", actor="test")
    with console_session(settings, Role.APPROVER) as approver:
        done = response(approver.post(f"/periods/{OCTOBER}/finalize"))
        page = approver.client.get(done.headers["location"]).text
    assert done.status_code == 303
    assert done.headers["location"] == f"/periods/{OCTOBER}"
    [(run_id, trigger, started_by, status, finalized)] = rows(
        settings.database_url,
        "SELECT id, trigger, started_by, status, finalized_count FROM billing_run "
        "WHERE operation = 'finalize'",
    )
    assert (trigger, started_by, status, finalized) == (
        "console",
        "april-approver (console)",
        "succeeded",
        4,
    )
    states = invoice_states(settings, OCTOBER)
    assert [s for s in states if s[0] == HELD_ORG] == [(HELD_ORG, "draft", None)]
    others = [s for s in states if s[0] != HELD_ORG]
    assert len(others) == 4
    assert all(status in ("finalized", "sent") and number for _org, status, number in others)
    notice = re.search(r'<p class="notice" role="status">([^<]*)</p>', page)
    assert notice
    assert notice.group(1).startswith(
        f"Finalized {OCTOBER} in run {run_id}: 4 invoices numbered, 1 draft left on hold, "
    )
    assert "<td>april-approver (console)</td>" in section(page, "runs", "table")
    assert attr_values(page, "invoices")["held"] == "1"

    # A credit note issued while another run holds September leaves its emails pending.
    [(number,)] = rows(
        settings.database_url,
        f"SELECT number FROM invoice WHERE org_id = 'org-0002' AND period = '{SEPTEMBER}'",  # noqa: S608
    )
    with ledger(settings) as engine, period_lock(engine, str(SEPTEMBER)):
        create_credit_note(
            settings, str(number), CreditRequest(reason="outage", amount="1.00"), wait_seconds=0
        )
    pending = summary_of(settings, SEPTEMBER).emails["pending"]
    assert pending > 0
    with console_session(settings, Role.APPROVER) as approver:
        shown = approver.client.get(f"/periods/{SEPTEMBER}").text
        asked = response(approver.post(f"/periods/{SEPTEMBER}/emails/send", confirmed=False))
        sent = response(approver.post(f"/periods/{SEPTEMBER}/emails/send"))
        after = approver.client.get(sent.headers["location"]).text
    assert attr_values(shown, "emails")["pending"] == str(pending)
    assert f"{pending} pending email" in asked.text
    assert sent.status_code == 303
    assert f"Sent the pending emails of {SEPTEMBER}: {pending} message" in after
    assert summary_of(settings, SEPTEMBER).emails["pending"] == 0
    assert attr_values(after, "emails")["pending"] == "0"


def running_run(settings: Settings) -> int:
    """A distributed close of 2026-11 as the workers leave it mid-way: rating 2 of 4 done,
    one parked."""
    now = datetime.now(UTC)
    with ledger(settings) as engine, Session(engine) as session:
        run = BillingRun(
            period="2026-11",
            status="running",
            trigger="beat",
            started_at=now,
            upstream_url="http://upstream.example",
            mode="distributed",
            stage="rating",
            started_by="worker@host",
            heartbeat_at=now,
        )
        session.add(run)
        session.flush()
        assert run.id is not None
        for unit, state in enumerate(("done", "done", "queued", "parked")):
            session.add(
                RunTask(run_id=run.id, stage="rate", unit=str(unit), status=state, updated_at=now)
            )
        session.commit()
        return run.id


def end_run(settings: Settings, run_id: int) -> None:
    with ledger(settings) as engine, Session(engine) as session:
        run = session.get(BillingRun, run_id)
        assert run is not None
        run.status, run.finished_at, run.error = "failed", datetime.now(UTC), "<b>boom</b>"
        session.commit()


def test_run_page_shows_the_audit_and_reloads_progress_only_while_running(
    settings: Settings,
) -> None:
    [(closed,)] = rows(
        settings.database_url,
        f"SELECT MIN(id) FROM billing_run WHERE period = '{SEPTEMBER}'",  # noqa: S608
    )
    [(checksum, card_hashes)] = rows(
        settings.database_url,
        f"SELECT usage_checksum, rate_cards FROM billing_run WHERE id = {closed}",  # noqa: S608
    )
    running = running_run(settings)
    with console_session(settings, Role.VIEWER) as viewer:
        done_page = viewer.client.get(f"/runs/{closed}").text
        done_progress = viewer.client.get(f"/runs/{closed}/progress").text
        live_page = viewer.client.get(f"/runs/{running}").text
        live_progress = viewer.client.get(f"/runs/{running}/progress")
        end_run(settings, running)
        ended = viewer.client.get(f"/runs/{running}/progress").text
        ended_page = viewer.client.get(f"/runs/{running}").text
        missing = viewer.client.get("/runs/9999")
    audit = section(done_page, "audit", "dl")
    assert str(checksum) in audit
    assert 'id="trigger">test<' in audit
    assert f"close of {SEPTEMBER}" in audit
    hashes = re.findall(r'"content_hash": "(\w+)"', str(card_hashes))
    assert hashes
    assert all(card in section(done_page, "rate-cards", "table") for card in hashes)
    assert 'id="warnings"' in done_page
    assert 'id="progress"' in done_page
    assert 'id="progress"' in done_progress
    assert "data-refresh" not in done_page
    assert "data-refresh" not in done_progress
    assert done_progress.lstrip().startswith('<div id="progress"')
    assert "<html" not in done_progress
    marker = f'data-refresh="2" data-src="/runs/{running}/progress"'
    assert marker in live_page
    assert live_progress.status_code == 200
    assert marker in live_progress.text
    assert 'data-step="rate"' in live_progress.text
    cells = re.findall(
        r'<td class="num">(?:<[^>]+>)?(\d+)', section(live_progress.text, "steps", "table")
    )
    assert cells == ["2", "4", "1", "1"]  # done, of, to do, parked
    assert "data-refresh" not in ended
    assert 'data-status="failed"' in ended
    assert "error: &lt;b&gt;boom&lt;/b&gt;" in section(ended_page, "warnings", "ul")
    assert "<b>boom" not in ended_page
    assert missing.status_code == 404
    assert 'id="error-message"' in missing.text


def table_amounts(html: str, table_id: str) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """(sum of the body's cells per currency, the tfoot's totals per currency) of a table."""
    table = section(html, table_id, "table")
    body, foot = table.split("<tfoot>")
    sums: dict[str, Decimal] = {}
    for block in body.split("<tbody")[1:]:
        currency = re.search(r'data-currency="(\w+)"', block)
        assert currency
        cells = re.findall(r'data-amount="([^"]+)"', block)
        assert cells
        sums[currency.group(1)] = sum((Decimal(c) for c in cells), Decimal(0))
    footer = {
        c: Decimal(a) for c, a in re.findall(r'data-currency="(\w+)" data-amount="([^"]+)"', foot)
    }
    return sums, footer


def centre_amounts(table: str) -> dict[tuple[str, str], Decimal]:
    """{(currency, cost centre): amount} of the by-cost-centre table's rows."""
    found: dict[tuple[str, str], Decimal] = {}
    for block in table.split("<tfoot>")[0].split("<tbody")[1:]:
        currency = re.search(r'data-currency="(\w+)"', block)
        assert currency
        for key, amount in re.findall(
            r'<tr data-key="([^"]*)">.*?data-amount="([^"]+)"', block, re.S
        ):
            found[(currency.group(1), unescape(key))] = Decimal(amount)
    return found


def test_allocation_sums_exactly_to_the_period_totals_and_escapes_names(
    settings: Settings,
) -> None:
    totals = summary_of(settings, SEPTEMBER).totals
    allocated = report(settings, SEPTEMBER, "allocation.csv")
    with console_session(settings, Role.VIEWER) as viewer:
        answer = viewer.client.get(f"/periods/{SEPTEMBER}/allocation")
    assert answer.status_code == 200
    html = answer.text
    assert csv_totals(allocated, "billed_cost") == totals
    for table_id in ("by-cost-centre", "by-org", "by-api-key", "by-user"):
        sums, footer = table_amounts(html, table_id)
        assert sums == footer == totals, table_id
    centres = section(html, "by-cost-centre", "table")
    by_centre: dict[tuple[str, str], Decimal] = {}
    for record in allocated:
        key = (record["currency"], record["cost_centre"])
        by_centre[key] = by_centre.get(key, Decimal(0)) + Decimal(record["billed_cost"])
    assert centre_amounts(centres) == by_centre
    assert "robotics-research" in centres
    assert "unallocated" in centres
    chart = section(html, "chart-title", "svg")
    assert html.count('class="chart"') == 1
    assert chart.count("<rect") == len(by_centre)
    widths = [
        Decimal(w)
        for w in re.findall(r'<rect class="bar[^"]*" x="0" y="\d+" width="([^"]+)"', chart)
    ]
    assert max(widths) == Decimal("420.00")
    assert all("e" not in str(w).lower() for w in widths)
    assert "&lt;b&gt;services&lt;/b&gt;" in chart
    assert "&lt;b&gt;services&lt;/b&gt;" in centres
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert escaped in section(html, "by-org", "table")
    assert SCRIPT_NAME not in html
    assert "<b>services" not in html
    assert f'href="/orgs/{SCRIPTED_ORG}"' in html
    assert " style=" not in html
