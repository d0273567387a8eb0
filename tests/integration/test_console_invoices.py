"""The console's Invoice and Org pages on SQLite and PostgreSQL: the invoice's number, charges,
lines and timeline, names escaped, the PDF and CSV as the close wrote them; its actions refused
without the role or the form's token, asked first, then recorded as the console user."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from billing.config import Settings
from billing.statements.files import safe_stem
from billing.statements.formatting import money
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
from tests.support.ledger_twins import draft, number, one
from tests.support.seeded import SeededLedgers


@pytest.fixture
def seeded(
    make_settings: Callable[..., Settings],
    database_url: str,
    tmp_path: Path,
    seeded_ledgers: SeededLedgers,
) -> Settings:
    """September sent, October drafted, a console user per role."""
    settings = api_settings(make_settings, tmp_path, database_url)
    seeded_ledgers.seed(settings)
    add_console_users(settings)
    return settings


def element(page: str, tag: str, ident: str) -> str:
    """The inner markup of the first `<tag ... id="ident" ...>` of a page."""
    found = re.search(rf'<{tag}[^>]* id="{ident}"[^>]*>(.*?)</{tag}>', page, re.DOTALL)
    assert found, f"no {tag}#{ident} on the page"
    return found.group(1)


def heading(page: str) -> str:
    found = re.search(r"<h1>(.*?)</h1>", page, re.DOTALL)
    assert found
    return found.group(1)


def cells(markup: str) -> list[list[str]]:
    """A table body's rows as their cells' text (tags dropped, entities decoded)."""
    body = re.search(r"<tbody>(.*?)</tbody>", markup, re.DOTALL)
    assert body
    return [
        [
            html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)
        ]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body.group(1), re.DOTALL)
    ]


def post(
    session: ConsoleSession, path: str, confirmed: bool = True, **fields: str
) -> httpx.Response:
    """A form post of the session (with its token), the answer not followed."""
    answer = session.post(path, confirmed, **fields)
    assert isinstance(answer, httpx.Response)
    return answer


def status_of(page: str) -> list[str]:
    """The states span#invoice-status shows (its state, and "held" on a held draft)."""
    found = re.search(r'<span id="invoice-status">(.*?)</span></h1>', page, re.DOTALL)
    assert found
    return re.findall(r'<span class="status status-[a-z]+">([a-z]+)</span>', found.group(1))


def error_of(answer: httpx.Response) -> str:
    """The one line of an error page."""
    return html.unescape(element(answer.text, "p", "error-message"))


def ledger_state(database_url: str) -> list[tuple[object, ...]]:
    """Everything an invoice action could change."""
    return [
        *rows(database_url, "SELECT id, status, number, total, voided_by FROM invoice ORDER BY id"),
        *rows(database_url, "SELECT id, held_by, released_at FROM review_hold ORDER BY id"),
        *rows(database_url, "SELECT id, amount, cancelled_at FROM invoice_adjustment ORDER BY id"),
        *rows(database_url, "SELECT id, total FROM credit_note ORDER BY id"),
        *rows(database_url, "SELECT id, kind, status FROM email_delivery ORDER BY id"),
    ]


def test_invoice_and_org_pages_show_the_ledger_escaped_with_its_files(
    seeded: Settings, database_url: str
) -> None:
    issued = number(database_url, SCRIPTED_ORG, str(SEPTEMBER))
    currency = one(database_url, f"SELECT currency FROM invoice WHERE number = '{issued}'")  # noqa: S608
    charges = rows(
        database_url,
        "SELECT c.meter, c.amount FROM invoice_charge c JOIN invoice i "  # noqa: S608
        f"ON i.id = c.invoice_id WHERE i.number = '{issued}' ORDER BY c.position",
    )
    lines = one(
        database_url,
        "SELECT COUNT(*) FROM invoice_line l JOIN invoice i ON i.id = l.invoice_id "  # noqa: S608
        f"WHERE i.number = '{issued}'",
    )
    folder = seeded.output_dir / str(SEPTEMBER)
    with console_session(seeded, Role.VIEWER) as viewer:
        answer = viewer.client.get(f"/invoices/{issued}")
        assert answer.status_code == 200, answer.text[-400:]
        page = answer.text
        assert issued in heading(page)
        assert status_of(page) == ["sent"]
        assert SCRIPT_NAME not in page
        assert html.escape(SCRIPT_NAME, quote=False) in page
        shown = cells(element(page, "table", "charges"))
        assert [(row[0], row[-1]) for row in shown] == [
            (str(meter), money(Decimal(str(amount)), currency, "en_US"))
            for meter, amount in charges
        ]
        assert len(cells(element(page, "table", "lines"))) == int(lines)
        assert f'<iframe class="pdf" src="/invoices/{issued}/pdf#view=FitH"' in page
        assert f'id="csv-link" href="/invoices/{issued}/csv"' in page
        timeline = re.search(r'<ol class="timeline">(.*?)</ol>', page, re.DOTALL)
        assert timeline
        assert "finalized" in timeline.group(1)
        assert "<form" not in element(page, "section", "invoice-actions")  # none for a viewer

        pdf = viewer.client.get(f"/invoices/{issued}/pdf")
        assert pdf.status_code == 200
        assert pdf.headers["content-disposition"].startswith("inline")
        assert pdf.content == (folder / f"{safe_stem(SCRIPTED_ORG)}.pdf").read_bytes()
        csv = viewer.client.get(f"/invoices/{issued}/csv")
        assert csv.headers["content-disposition"].startswith("attachment")
        assert csv.content == (folder / f"{safe_stem(SCRIPTED_ORG)}.csv").read_bytes()

        draft_id = draft(database_url, SCRIPTED_ORG)
        drafted = viewer.client.get(f"/invoices/{draft_id}")
        assert f"Draft {draft_id}" in heading(drafted.text)
        assert status_of(drafted.text) == ["draft"]
        october = seeded.output_dir / str(OCTOBER) / f"{safe_stem(SCRIPTED_ORG)}.pdf"
        assert viewer.client.get(f"/invoices/{draft_id}/pdf").content == october.read_bytes()

        org = viewer.client.get(f"/orgs/{SCRIPTED_ORG}")
        assert org.status_code == 200
        assert SCRIPT_NAME not in org.text
        assert f"<h1>{html.escape(SCRIPT_NAME, quote=False)}</h1>" in org.text
        listed = cells(element(org.text, "table", "org-invoices"))
        assert [(row[0], row[1]) for row in listed] == [
            (str(OCTOBER), f"Draft {draft_id}"),
            (str(SEPTEMBER), issued),
        ]
        assert 'id="contacts"' in org.text
        assert 'id="balances"' in org.text
        chart = org.text.split('<svg class="chart"')[1].split("</svg>")[0]
        assert re.findall(r'<g data-period="([0-9-]+)">', chart) == [str(SEPTEMBER), str(OCTOBER)]
        assert 'height="120"' in chart  # the larger total is the tallest bar

        missing = viewer.client.get("/invoices/INV-1999-000001")
        assert missing.status_code == 404
        assert "INV-1999-000001" in element(missing.text, "p", "error-message")


def test_actions_need_the_role_and_the_token_and_ask_first(
    seeded: Settings, database_url: str
) -> None:
    draft_id = draft(database_url, "org-0003")
    issued = number(database_url, "org-0001", str(SEPTEMBER))
    before = ledger_state(database_url)

    with console_session(seeded, Role.VIEWER) as viewer:
        for path in (f"/invoices/{draft_id}/hold", f"/invoices/{issued}/void"):
            refused = post(viewer, path, reason="no")
            assert refused.status_code == 403
            assert "vera-viewer has the viewer role" in error_of(refused)
    assert ledger_state(database_url) == before

    with console_session(seeded, Role.APPROVER) as approver:
        refused = post(approver, f"/invoices/{issued}/void", reason="wrong entity")
        assert refused.status_code == 403  # admin only
        assert error_of(refused).startswith("this needs the admin role")

        forged = approver.client.post(
            f"/invoices/{draft_id}/hold", data={"reason": "x", "confirmed": "yes"}
        )
        assert forged.status_code == 403
        assert "security token" in error_of(forged)

        bad = post(
            approver, f"/invoices/{draft_id}/adjust", meter="duration", amount="NaN", reason="x"
        )
        assert bad.status_code == 422
        assert error_of(bad).startswith("Amount:")

        asked = post(
            approver, f"/invoices/{draft_id}/hold", confirmed=False, reason="spike <b>?</b>"
        )
        assert asked.status_code == 200
        assert '<button type="submit" id="confirm"' in asked.text
        assert "stays a draft" in asked.text
        assert "spike &lt;b&gt;?&lt;/b&gt;" in asked.text
        assert ledger_state(database_url) == before  # nothing changed: refused or only asked

        done = post(approver, f"/invoices/{draft_id}/hold", reason="spike <b>?</b>")
        assert done.status_code == 303
        assert done.headers["location"] == f"/invoices/{draft_id}"
        shown = approver.client.get(f"/invoices/{draft_id}")
        assert f'<p class="notice" role="status">Draft {draft_id} held</p>' in shown.text
        assert status_of(shown.text) == ["draft", "held"]
    assert rows(database_url, "SELECT held_by, reason FROM review_hold") == [
        ("april-approver (console)", "spike <b>?</b>")
    ]

    with console_session(seeded, Role.ADMIN) as admin:
        asked = post(admin, f"/invoices/{issued}/void", confirmed=False, reason="wrong entity")
        assert asked.status_code == 200
        name = one(database_url, f"SELECT org_name FROM invoice WHERE number = '{issued}'")  # noqa: S608
        assert (
            f"{issued} of {name} (org-0001) for {SEPTEMBER} becomes void; the next close of "
            f"{SEPTEMBER} issues a replacement"
        ) in html.unescape(asked.text)
        assert "void notice" in asked.text
    assert rows(database_url, "SELECT COUNT(*) FROM invoice WHERE status = 'void'") == [(0,)]
