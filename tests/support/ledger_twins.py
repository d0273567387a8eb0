"""Two ledgers driven the same way by different front ends (the CLI, the API, the console):
what each table holds without ids, times or who acted, to compare them, and a few lookups."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from billing.config import Settings
from tests.support.agreement import rows
from tests.support.api_data import OCTOBER, SCRIPTED_ORG, SEPTEMBER
from tests.support.api_server import settings_env
from tests.support.processes import run_billing

# What each table holds, without ids, times or who: the same on both ledgers.
COMPARED = {
    "invoices": "SELECT org_id, period, status, number, currency, total, void_reason FROM invoice",
    "charges": "SELECT i.org_id, i.period, i.status, c.meter, c.charge_class, c.description, "
    "c.amount FROM invoice_charge c JOIN invoice i ON i.id = c.invoice_id",
    "lines": "SELECT i.org_id, i.period, i.status, l.meter, l.charge_class, l.api_key_id, "
    "l.user_id, l.amount FROM invoice_line l JOIN invoice i ON i.id = l.invoice_id",
    "holds": "SELECT org_id, period, reason, released_at IS NULL FROM review_hold",
    "adjustments": "SELECT org_id, period, meter, description, amount, reason, cancel_reason, "
    "cancelled_at IS NULL, applied_invoice_id IS NULL FROM invoice_adjustment",
    "credit notes": "SELECT number, org_id, period, currency, total, reason, settlement "
    "FROM credit_note",
    "credit note lines": "SELECT n.number, l.meter, l.charge_class, l.api_key_id, l.user_id, "
    "l.amount FROM credit_note_line l JOIN credit_note n ON n.id = l.credit_note_id",
    "credit balance": "SELECT org_id, currency, kind, amount, reason FROM credit_entry",
    "emails": "SELECT org_id, period, recipient, kind, status FROM email_delivery",
    "runs": "SELECT period, operation, status, invoice_count, finalized_count FROM billing_run",
}


def state(database_url: str) -> dict[str, list[tuple[str, ...]]]:
    return {
        name: sorted(tuple(str(value) for value in row) for row in rows(database_url, sql))
        for name, sql in COMPARED.items()
    }


def one(database_url: str, sql: str) -> str:
    [(value,)] = rows(database_url, sql)
    return str(value)


def draft(database_url: str, org_id: str) -> str:
    return one(
        database_url,
        f"SELECT id FROM invoice WHERE org_id = '{org_id}' AND status = 'draft'",  # noqa: S608
    )


def number(database_url: str, org_id: str, period: str) -> str:
    return one(
        database_url,
        "SELECT number FROM invoice WHERE status <> 'void' "  # noqa: S608
        f"AND org_id = '{org_id}' AND period = '{period}'",
    )


def twin_database(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A second, empty database of the same kind as `database_url`."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'twin.db'}"
    return str(request.getfixturevalue("pg_server_url")())


# The second credit note's options, given the CLI's database and the credited invoice's number
SecondCredit = Callable[[str, str], tuple[str, ...]]


def act_by_cli(settings: Settings, cwd: Path, second_credit: SecondCredit) -> None:
    """What every twin test does to its first ledger, through `billing` processes: two holds
    (one released), a free-text and a meter adjustment (the latter cancelled), the October
    finalize, two credit notes (the second's options from `second_credit`), a void, a resend
    and sending October's emails."""

    def cli(*args: str) -> None:
        done = run_billing(*args, env=settings_env(settings), cwd=cwd)
        assert done.returncode == 0, done.stderr

    url = settings.database_url
    cli("invoices", "hold", draft(url, "org-0003"), "--reason", "usage spike <b>check</b>")
    cli("invoices", "hold", draft(url, "org-0005"), "--reason", "commitment?")
    cli("invoices", "release", draft(url, "org-0005"), "--reason", "looked fine")
    adjust = ("--amount", "-1.50", "--reason", "late start")
    cli("invoices", "adjust", draft(url, "org-0002"), "--description", "Goodwill", *adjust)
    scripted_draft = draft(url, SCRIPTED_ORG)
    manual = ("--amount=+2.00", "--reason", "manual")
    cli("invoices", "adjust", scripted_draft, "--meter", "duration", *manual)
    cancelled = one(url, "SELECT MAX(id) FROM invoice_adjustment")
    cli("invoices", "adjust", "--cancel", cancelled, "--reason", "entered twice")
    cli("finalize", "--period", str(OCTOBER))
    globex = number(url, "org-0002", str(OCTOBER))
    scripted = number(url, SCRIPTED_ORG, str(OCTOBER))
    cli("credit-notes", "create", globex, "--amount", "1.00", "--reason", "sorry")
    cli("credit-notes", "create", scripted, *second_credit(url, scripted))
    cli("void", number(url, "org-0001", str(SEPTEMBER)), "--reason", "wrong entity")
    cli("email", "resend", number(url, "org-0002", str(SEPTEMBER)), "--to", "ap@globex.example")
    cli("email", "send", "--period", str(OCTOBER))
