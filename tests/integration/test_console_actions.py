"""Every action through the console's forms leaves the ledger as its `billing` command does: two
identical ledgers, one driven by the CLI as processes, one by the console's confirmed posts,
then their rows compared (ids, times and who acted aside), on SQLite and PostgreSQL; the
console's rows name the signed-in user."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from billing.config import Settings
from billing.states import Role
from tests.support.agreement import rows
from tests.support.api_data import OCTOBER, SCRIPTED_ORG, SEPTEMBER, api_settings
from tests.support.console import ConsoleSession, add_console_users, console_session
from tests.support.ledger_twins import act_by_cli, draft, number, one, state, twin_database
from tests.support.seeded import SeededLedgers

APPROVER, ADMIN = "april-approver (console)", "adam-admin (console)"


@pytest.fixture
def twin_url(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return twin_database(database_url, tmp_path, request)


def done(session: ConsoleSession, path: str, back: str | None = None, **fields: str) -> str:
    """A confirmed post that is carried out: a 303 (to `back` when given); the notice the next
    page shows."""
    answer = session.post(path, True, **fields)
    assert isinstance(answer, httpx.Response)
    assert answer.status_code == 303, answer.text[-600:]
    location = answer.headers["location"]
    if back is not None:
        assert location == back
    shown = session.client.get(location)
    assert shown.status_code == 200
    assert '<p class="notice" role="status">' in shown.text
    notice: str = shown.text.split('<p class="notice" role="status">')[1].split("</p>")[0]
    return notice


@pytest.mark.timeout(600)  # two seeded ledgers and a dozen CLI processes
def test_console_actions_leave_the_ledger_as_the_cli_commands_do(
    make_settings: Callable[..., Settings],
    database_url: str,
    twin_url: str,
    tmp_path: Path,
    seeded_ledgers: SeededLedgers,
) -> None:
    by_cli = api_settings(make_settings, tmp_path, database_url, "cli")
    by_console = api_settings(make_settings, tmp_path, twin_url, "console")
    for settings in (by_cli, by_console):
        seeded_ledgers.seed(settings)
    assert state(by_cli.database_url) == state(by_console.database_url)  # twins to begin with

    def all_refunded(url: str, scripted: str) -> tuple[str, ...]:
        whole = one(url, f"SELECT total FROM invoice WHERE number = '{scripted}'")  # noqa: S608
        return ("--amount", whole, "--reason", "all", "--refund")

    act_by_cli(by_cli, tmp_path / "cli", all_refunded)

    url = by_console.database_url
    add_console_users(by_console)
    with console_session(by_console, Role.APPROVER) as approver:
        held = draft(url, "org-0003")
        notice = done(
            approver,
            f"/invoices/{held}/hold",
            f"/invoices/{held}",
            reason="usage spike <b>check</b>",
        )
        assert notice == f"Draft {held} held"
        done(approver, f"/invoices/{draft(url, 'org-0005')}/hold", reason="commitment?")
        done(approver, f"/invoices/{draft(url, 'org-0005')}/release", reason="looked fine")
        done(
            approver,
            f"/invoices/{draft(url, 'org-0002')}/adjust",
            meter="",
            description="Goodwill",
            amount="-1.50",
            reason="late start",
        )
        scripted_draft = draft(url, SCRIPTED_ORG)
        done(
            approver,
            f"/invoices/{scripted_draft}/adjust",
            meter="duration",
            description="",
            amount="+2.00",
            reason="manual",
        )
        added = one(url, "SELECT MAX(id) FROM invoice_adjustment")
        done(
            approver,
            f"/adjustments/{added}/cancel",
            f"/invoices/{scripted_draft}",
            invoice=scripted_draft,
            reason="entered twice",
        )
        done(approver, f"/periods/{OCTOBER}/finalize", f"/periods/{OCTOBER}")
        globex = number(url, "org-0002", str(OCTOBER))
        scripted = number(url, SCRIPTED_ORG, str(OCTOBER))
        done(
            approver,
            f"/invoices/{globex}/credit-notes",
            f"/invoices/{globex}",
            amount="1.00",
            reason="sorry",
            settlement="credit",
        )
        notice = done(
            approver,
            f"/invoices/{scripted}/credit-notes",
            f"/invoices/{scripted}",
            amount="",
            rest="yes",
            reason="all",
            settlement="refund",
        )
        assert "(refund)" in notice
        sent = number(url, "org-0002", str(SEPTEMBER))
        done(approver, f"/invoices/{sent}/resend", f"/invoices/{sent}", to="ap@globex.example")
        done(approver, f"/periods/{OCTOBER}/emails/send", f"/periods/{OCTOBER}")
    with console_session(by_console, Role.ADMIN) as admin:
        acme = number(url, "org-0001", str(SEPTEMBER))
        notice = done(admin, f"/invoices/{acme}/void", f"/invoices/{acme}", reason="wrong entity")
        assert notice == f"{acme} voided: wrong entity"

    assert state(by_console.database_url) == state(by_cli.database_url)

    assert {str(r[0]) for r in rows(url, "SELECT held_by FROM review_hold")} == {APPROVER}
    assert rows(url, "SELECT released_by FROM review_hold WHERE released_at IS NOT NULL") == [
        (APPROVER,)
    ]
    assert {
        (str(a), str(b))
        for a, b in rows(
            url, "SELECT created_by, COALESCE(cancelled_by, '-') FROM invoice_adjustment"
        )
    } == {(APPROVER, "-"), (APPROVER, APPROVER)}
    assert {str(r[0]) for r in rows(url, "SELECT created_by FROM credit_note")} == {APPROVER}
    assert rows(url, "SELECT voided_by FROM invoice WHERE status = 'void'") == [(ADMIN,)]
    assert rows(url, "SELECT requested_by FROM email_delivery WHERE kind = 'resend'") == [
        (APPROVER,)
    ]
    assert rows(
        url, "SELECT started_by, trigger FROM billing_run WHERE operation = 'finalize'"
    ) == [(APPROVER, "console")]
