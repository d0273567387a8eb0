"""Every action through the REST API leaves the ledger as its `billing` command does: two
identical ledgers, one driven by the CLI as processes, one by `billing serve` over HTTP, then
their rows compared (ids, times and who acted aside), on SQLite and PostgreSQL; the API's rows
name the token that acted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from billing.config import Settings
from tests.support.agreement import rows
from tests.support.api_data import (
    OCTOBER,
    SCRIPTED_ORG,
    SEPTEMBER,
    api_settings,
    tokens,
)
from tests.support.api_server import served_api
from tests.support.ledger_twins import act_by_cli, draft, number, state, twin_database
from tests.support.seeded import SeededLedgers


def a_line(database_url: str, invoice_number: str) -> tuple[str, str]:
    """The API key and user of one duration line of an invoice (both present)."""
    found = rows(
        database_url,
        "SELECT l.api_key_id, l.user_id FROM invoice_line l JOIN invoice i "  # noqa: S608
        f"ON i.id = l.invoice_id WHERE i.number = '{invoice_number}' AND l.meter = 'duration' "
        "AND l.api_key_id IS NOT NULL AND l.user_id IS NOT NULL ORDER BY l.id",
    )
    return str(found[0][0]), str(found[0][1])


@pytest.fixture
def twin_url(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A second, empty database of the same kind."""
    return twin_database(database_url, tmp_path, request)


@pytest.mark.timeout(600)  # two seeded ledgers and a dozen CLI processes
def test_api_actions_leave_the_ledger_as_the_cli_commands_do(
    make_settings: Callable[..., Settings],
    database_url: str,
    twin_url: str,
    tmp_path: Path,
    seeded_ledgers: SeededLedgers,
) -> None:
    by_cli = api_settings(make_settings, tmp_path, database_url, "cli")
    by_api = api_settings(make_settings, tmp_path, twin_url, "api")
    for settings in (by_cli, by_api):
        seeded_ledgers.seed(settings)
    assert state(by_cli.database_url) == state(by_api.database_url)  # twins to begin with

    def one_line_refunded(url: str, scripted: str) -> tuple[str, ...]:
        key, user = a_line(url, scripted)
        return ("--line", f"duration:{key}:{user}=0.50", "--reason", "one line", "--refund")

    act_by_cli(by_cli, tmp_path / "cli", one_line_refunded)
    key, user = a_line(by_cli.database_url, number(by_cli.database_url, SCRIPTED_ORG, str(OCTOBER)))

    made = tokens(by_api)
    url = by_api.database_url
    with (
        served_api(by_api, tmp_path / "api") as server,
        server.client(made.approver) as approver,
        server.client(made.admin) as admin,
    ):

        def ok(response: object, status: int = 200) -> None:
            assert getattr(response, "status_code", None) == status, getattr(response, "text", "")

        ok(
            approver.post(
                f"/invoices/{draft(url, 'org-0003')}/hold",
                json={"reason": "usage spike <b>check</b>"},
            )
        )
        ok(
            approver.post(
                f"/invoices/{draft(url, 'org-0005')}/hold", json={"reason": "commitment?"}
            )
        )
        ok(
            approver.post(
                f"/invoices/{draft(url, 'org-0005')}/release", json={"reason": "looked fine"}
            )
        )
        ok(
            approver.post(
                f"/invoices/{draft(url, 'org-0002')}/adjustments",
                json={"description": "Goodwill", "amount": "-1.50", "reason": "late start"},
            ),
            201,
        )
        added = approver.post(
            f"/invoices/{draft(url, SCRIPTED_ORG)}/adjustments",
            json={"meter": "duration", "amount": "+2.00", "reason": "manual"},
        )
        ok(added, 201)
        ok(
            approver.post(
                f"/adjustments/{added.json()['adjustment_id']}/cancel",
                json={"reason": "entered twice"},
            )
        )
        finalized = approver.post(f"/periods/{OCTOBER}/finalize")
        ok(finalized)
        assert finalized.json()["drafts"] == 1  # the held one
        globex = number(url, "org-0002", str(OCTOBER))
        scripted = number(url, SCRIPTED_ORG, str(OCTOBER))
        ok(
            approver.post(
                f"/invoices/{globex}/credit-notes", json={"amount": "1.00", "reason": "sorry"}
            ),
            201,
        )
        noted = approver.post(
            f"/invoices/{scripted}/credit-notes",
            json={
                "lines": [
                    {"meter": "duration", "api_key_id": key, "user_id": user, "amount": "0.50"}
                ],
                "reason": "one line",
                "settlement": "refund",
            },
        )
        ok(noted, 201)
        assert noted.json()["credit_note"]["lines"][0]["api_key_id"] == key
        ok(
            admin.post(
                f"/invoices/{number(url, 'org-0001', str(SEPTEMBER))}/void",
                json={"reason": "wrong entity"},
            )
        )
        ok(
            approver.post(
                f"/invoices/{number(url, 'org-0002', str(SEPTEMBER))}/resend",
                json={"to": "ap@globex.example"},
            )
        )
        ok(approver.post(f"/periods/{OCTOBER}/emails/send"))

    assert state(by_api.database_url) == state(by_cli.database_url)

    approver_actor, admin_actor = "approver-bot (api token)", "admin-bot (api token)"
    assert {str(r[0]) for r in rows(url, "SELECT held_by FROM review_hold")} == {approver_actor}
    assert rows(url, "SELECT released_by FROM review_hold WHERE released_at IS NOT NULL") == [
        (approver_actor,)
    ]
    assert {
        (str(a), str(b))
        for a, b in rows(
            url, "SELECT created_by, COALESCE(cancelled_by, '-') FROM invoice_adjustment"
        )
    } == {(approver_actor, "-"), (approver_actor, approver_actor)}
    assert {str(r[0]) for r in rows(url, "SELECT created_by FROM credit_note")} == {approver_actor}
    assert rows(url, "SELECT voided_by FROM invoice WHERE status = 'void'") == [(admin_actor,)]
    assert rows(url, "SELECT requested_by FROM email_delivery WHERE kind = 'resend'") == [
        (approver_actor,)
    ]
    assert rows(
        url, "SELECT started_by, trigger FROM billing_run WHERE operation = 'finalize'"
    ) == [(approver_actor, "api")]
    [(cli_voider,)] = rows(
        by_cli.database_url, "SELECT voided_by FROM invoice WHERE status = 'void'"
    )
    assert cli_voider
    assert "api token" not in str(cli_voider)
