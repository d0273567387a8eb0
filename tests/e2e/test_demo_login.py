"""`billing demo` leaves a way into the console: an admin `finance` with a random password,
printed once, that signs in through the login form; a ledger with console users keeps them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from billing.config import Settings
from billing.db.engine import ledger
from billing.web.app import create_app
from tests.support.agreement import rows
from tests.support.api_server import settings_env
from tests.support.console import USERS, add_console_users, sign_in
from tests.support.processes import run_billing

PRINTED = re.compile(
    r"^console: billing serve, then sign in at http://127\.0\.0\.1:8000/ "
    r"as finance with password (\S{12,})$",
    re.MULTILINE,
)
USERS_SQL = "SELECT name, role, created_by FROM console_user ORDER BY name"


def test_demo_adds_an_admin_whose_printed_password_signs_in(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()

    done = run_billing(
        "demo", "--orgs", "2", "--period", "2026-10", env=settings_env(settings), cwd=tmp_path
    )

    assert done.returncode == 0, done.stderr[-2000:]
    found = PRINTED.search(done.stdout)
    assert found, done.stdout[-2000:]
    password = found.group(1)
    assert rows(settings.database_url, USERS_SQL) == [("finance", "admin", "billing demo")]
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        sign_in(client, "finance", password)
        periods = client.get("/periods")
        assert periods.status_code == 200
        assert 'data-period="2026-10"' in periods.text
        assert "finance" in periods.text
        assert ">admin<" in periods.text


def test_demo_keeps_the_console_users_a_ledger_has(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    with ledger(settings):
        pass
    add_console_users(settings)
    before = rows(settings.database_url, USERS_SQL)

    done = run_billing(
        "demo",
        "--orgs",
        "2",
        "--period",
        "2026-10",
        "--format",
        "json",
        env=settings_env(settings),
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["period"] == "2026-10"  # the line did not spoil the JSON
    assert (
        "console: billing serve, then sign in at http://127.0.0.1:8000/ as one of the ledger's "
        "3 console users, kept as they are (billing users add NAME --role ROLE adds one)"
    ) in done.stderr
    assert "password" not in done.stdout + done.stderr
    assert rows(settings.database_url, USERS_SQL) == before
    assert sorted(str(name) for name, _, _ in before) == sorted(USERS.values())
