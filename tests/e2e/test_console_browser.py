"""The console in a real browser (Debian's Chromium) against a real `billing serve` over a
PostgreSQL ledger (September sent, October drafted): sign in and out, review, hold, finalize,
void, the refusals a forged or token-less form gets, and an org named like a script shown as
text. The flows share one server; the ones that only read or are refused run first."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import pytest
from playwright.sync_api import Browser, Page, expect
from pydantic import SecretStr

from billing.config import Settings
from billing.states import Role
from tests.support.agreement import rows
from tests.support.api_data import (
    OCTOBER,
    SCRIPT_NAME,
    SCRIPTED_ORG,
    SEPTEMBER,
    api_settings,
)
from tests.support.api_server import served_api
from tests.support.browser import CHROMIUM, MISSING, Tab, confirm, launched_browser, new_tab
from tests.support.browser import sign_in as browser_sign_in
from tests.support.console import PASSWORD, USERS, add_console_users
from tests.support.seeded import SeededLedgers

pytestmark = [pytest.mark.postgres]

HELD_ORG = "org-0001"
NUMBERED = re.compile(r"^INV-\d{4}-\d+$")
INVOICES = "SELECT id, number, status, total FROM invoice ORDER BY id"
INVOICES_BY_ORG = "SELECT period, org_id, number, status FROM invoice ORDER BY period, org_id"
RUNS = "SELECT period, started_by FROM billing_run ORDER BY id DESC"
VOIDED = "SELECT number, void_reason, voided_by FROM invoice WHERE status = 'void'"


@dataclass(frozen=True)
class Console:
    """The served console: its root URL and the ledger behind it."""

    url: str
    database_url: str


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(MISSING, pytrace=False)
    with launched_browser() as launched:
        yield launched


@pytest.fixture(scope="module")
def console(
    pg_server_url: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
    seeded_ledgers: SeededLedgers,
) -> Iterator[Console]:
    folder = tmp_path_factory.mktemp("console")
    build = partial(
        Settings,
        _env_file=None,
        email_backend="file",
        broker_url=None,
        mka1_max_attempts=3,
        mka1_api_key=SecretStr("test-key"),
    )
    settings = api_settings(build, folder, pg_server_url())
    seeded_ledgers.seed(settings)
    add_console_users(settings)
    with served_api(settings, folder) as server:
        yield Console(server.url.removesuffix("/api/v1"), settings.database_url)


@pytest.fixture
def tab(browser: Browser, console: Console) -> Iterator[Tab]:
    with new_tab(browser, console.url) as opened:
        yield opened


def sign_in(tab: Tab, role: Role) -> Page:
    browser_sign_in(tab.page, USERS[role], PASSWORD)
    expect(tab.page).to_have_url(re.compile(r"/periods$"))
    return tab.page


def csrf_token(page: Page) -> str:
    """The session's CSRF token, as the sign-out form in the header carries it."""
    token = page.locator('form[action="/logout"] input[name="csrf_token"]').get_attribute("value")
    assert token
    return token


def test_a_wrong_password_is_refused_and_signing_out_ends_the_session(
    tab: Tab, console: Console
) -> None:
    page = tab.page
    browser_sign_in(page, USERS[Role.APPROVER], "not the password at all")
    expect(page.locator("p.error")).to_contain_text("password")
    expect(page).to_have_url(re.compile(r"/login$"))

    page = sign_in(tab, Role.APPROVER)
    expect(page.locator("table#periods tr[data-period='2026-10']")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/periods")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fperiods$"))
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert tab.dialogs == []


def test_a_viewer_sees_no_finalize_and_a_forged_finalize_is_refused(
    tab: Tab, console: Console
) -> None:
    before = rows(console.database_url, INVOICES)
    assert any(number is None for _, number, _, _ in before)  # October's drafts are there
    page = sign_in(tab, Role.VIEWER)
    page.locator("table#periods tr[data-period='2026-10'] a[href='/periods/2026-10']").click()
    expect(page.locator("h1")).to_contain_text("2026-10")
    expect(page.locator("a#review-link")).to_be_visible()
    expect(page.get_by_role("button", name="Finalize period")).to_have_count(0)

    forged = page.request.post(
        "/periods/2026-10/finalize",
        form={"csrf_token": csrf_token(page), "confirmed": "yes"},
        max_redirects=0,
    )

    assert forged.status == 403, forged.text()[-500:]
    assert "role" in forged.text()
    assert rows(console.database_url, INVOICES) == before


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    tab: Tab, console: Console
) -> None:
    before = rows(console.database_url, INVOICES)
    page = sign_in(tab, Role.APPROVER)

    no_token = page.request.post(
        "/periods/2026-10/finalize", form={"confirmed": "yes"}, max_redirects=0
    )
    wrong_token = page.request.post(
        "/logout", form={"csrf_token": "not-the-token"}, max_redirects=0
    )

    assert no_token.status == 403, no_token.text()[-500:]
    assert wrong_token.status == 403, wrong_token.text()[-500:]
    assert "security token" in no_token.text()
    assert rows(console.database_url, INVOICES) == before
    page.goto("/periods")  # the refused sign-out did not end the session
    expect(page).to_have_url(re.compile(r"/periods$"))


def test_an_org_named_like_a_script_is_shown_as_text(tab: Tab, console: Console) -> None:
    page = sign_in(tab, Role.VIEWER)
    page.goto(f"/periods/{OCTOBER}/review")
    row = page.locator(f"table#review tr[data-org='{SCRIPTED_ORG}']")
    expect(row.locator("td.org-name")).to_have_text(SCRIPT_NAME)
    expect(page.get_by_text(SCRIPT_NAME, exact=True).first).to_be_visible()
    assert not scripted(page)

    row.locator("td.ref a").click()
    expect(page).to_have_url(re.compile(r"/invoices/[^/]+$"))
    expect(page.get_by_text(SCRIPT_NAME, exact=True).first).to_be_visible()
    assert not scripted(page)
    assert tab.dialogs == []


def scripted(page: Page) -> bool:
    """Whether the DOM holds a <script> element with the org's name in it."""
    found: bool = page.evaluate(
        "Array.from(document.querySelectorAll('script'))"
        ".some((s) => s.textContent.includes('alert(1)'))"
    )
    return found


def test_an_approver_reviews_holds_one_draft_and_finalizes_the_rest(
    tab: Tab, console: Console
) -> None:
    page = sign_in(tab, Role.APPROVER)
    page.locator("table#periods tr[data-period='2026-10'] a[href='/periods/2026-10']").click()
    expect(page.locator("h1")).to_contain_text("2026-10")
    page.locator("a#review-link").click()
    expect(page).to_have_url(re.compile(r"/periods/2026-10/review"))
    drafts = page.locator("table#review tbody tr[data-invoice]")
    count = drafts.count()
    assert count >= 3

    page.locator(f"table#review tr[data-org='{HELD_ORG}'] td.ref a").click()
    held_ref = page.url.rsplit("/", 1)[1]
    hold_form = page.locator("section#invoice-actions form[action$='/hold']")
    hold_form.locator("input[name='reason'], textarea[name='reason']").fill("usage spike: ask")
    hold_form.get_by_role("button", name="Hold").click()
    confirm(page)
    expect(page.locator("p.notice")).to_contain_text("held")
    expect(page).to_have_url(re.compile(rf"/invoices/{held_ref}$"))

    page.goto("/periods/2026-10")
    page.locator("section#period-actions").get_by_role("button", name="Finalize period").click()
    confirm(page)
    expect(page.locator("p.notice")).to_be_visible()

    page.goto("/periods/2026-10/review")
    rows_shown = page.locator("table#review tbody tr[data-invoice]")
    expect(rows_shown).to_have_count(count)
    held = page.locator(f"table#review tr[data-org='{HELD_ORG}']")
    expect(held.locator("span.flag-held")).to_be_visible()
    expect(held.locator(".status-draft")).to_be_visible()
    refs = rows_shown.evaluate_all("(rows) => rows.map((row) => row.dataset.invoice)")
    numbered = [ref for ref in refs if NUMBERED.match(ref)]
    assert len(numbered) == count - 1, refs
    assert held.get_attribute("data-invoice") == held_ref
    for ref in numbered:
        shown = page.locator(f"table#review tr[data-invoice='{ref}']")
        expect(shown.locator(".status-finalized, .status-sent")).to_have_count(1)

    page.locator(f"table#review tr[data-invoice='{numbered[0]}'] td.ref a").click()
    expect(page.locator("h1")).to_contain_text(numbered[0])
    expect(page.locator("span#invoice-status")).to_have_text(re.compile("finalized|sent"))
    frame = page.locator("iframe.pdf")
    expect(frame).to_have_count(1)
    pdf = page.request.get(str(frame.get_attribute("src")))
    assert pdf.status == 200
    assert pdf.body().startswith(b"%PDF")
    csv = page.request.get(str(page.locator("a#csv-link").get_attribute("href")))
    assert csv.status == 200
    assert "attachment" in csv.headers["content-disposition"]
    assert numbered[0] in csv.text()

    october = {
        org: (number, status)
        for period, org, number, status in rows(console.database_url, INVOICES_BY_ORG)
        if period == str(OCTOBER)
    }
    assert sum(number is not None for number, _ in october.values()) == count - 1
    assert october[HELD_ORG] == (None, "draft")
    assert {status for _, status in october.values()} <= {"draft", "finalized", "sent"}
    runs = rows(console.database_url, RUNS)
    latest = next(who for period, who in runs if period == str(OCTOBER))
    assert latest == "april-approver (console)"  # the finalize's run
    assert tab.dialogs == []


def test_an_admin_voids_an_invoice_with_a_reason(tab: Tab, console: Console) -> None:
    invoices = rows(console.database_url, INVOICES_BY_ORG)
    number = str(next(number for period, _, number, _ in invoices if period == str(SEPTEMBER)))
    page = sign_in(tab, Role.ADMIN)
    page.goto(f"/invoices/{number}")
    void_form = page.locator("section#invoice-actions form[action$='/void']")
    void_form.locator("input[name='reason'], textarea[name='reason']").fill("billed <twice>")
    void_form.get_by_role("button", name="Void").click()
    confirm(page)
    expect(page.locator("p.notice")).to_contain_text(number)
    expect(page.locator("span#invoice-status")).to_have_text("void")

    voided = rows(console.database_url, VOIDED)
    assert voided == [(number, "billed <twice>", "adam-admin (console)")]
    assert tab.dialogs == []
