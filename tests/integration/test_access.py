"""Users, tokens, sessions and slowed sign-ins, on SQLite and PostgreSQL, and the commands."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from billing.config import Settings
from billing.db.engine import ledger
from billing.errors import AccessError, SignInThrottled
from billing.finance.access import (
    add_user,
    create_token,
    csrf_matches,
    principal_for_session,
    principal_for_token,
    revoke,
    sign_in,
    sign_out,
)
from billing.states import Role
from tests.support.processes import billing_command

START = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"


def at(seconds: float) -> Callable[[], datetime]:
    return lambda: START + timedelta(seconds=seconds)


def test_users_are_hashed_the_first_is_an_admin_and_sessions_carry_a_csrf_token(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    with pytest.raises(AccessError, match="the first user must be an admin"):
        add_user(settings, "vera", Role.VIEWER, PASSWORD, actor="test", now=at(0))
    add_user(settings, "ada", Role.ADMIN, PASSWORD, actor="test", now=at(0))
    add_user(settings, "<b>vera</b>", Role.VIEWER, PASSWORD, actor="ada", now=at(1))
    with pytest.raises(AccessError, match="at least 12 characters"):
        add_user(settings, "short", Role.VIEWER, "pw", actor="test", now=at(2))
    with pytest.raises(AccessError, match="there is a user named 'ada' already"):
        add_user(settings, "ada", Role.VIEWER, PASSWORD, actor="test", now=at(2))
    with ledger(settings) as engine:
        with engine.connect() as connection:
            stored = dict(
                connection.execute(text("SELECT name, password_hash FROM console_user")).all()
            )
        assert set(stored) == {"ada", "<b>vera</b>"}
        assert all(value.startswith("$argon2id$") for value in stored.values())
        assert PASSWORD not in "".join(stored.values())

        principal, cookie, csrf = sign_in(engine, "<b>vera</b>", PASSWORD, "10.0.0.1", START)
        assert (principal.name, principal.role, principal.actor) == (
            "<b>vera</b>",
            Role.VIEWER,
            "<b>vera</b> (console)",
        )
        assert not principal.may(Role.APPROVER)
        found = principal_for_session(engine, cookie, START + timedelta(hours=1))
        assert found == (principal, csrf)
        assert csrf_matches(csrf, csrf)
        assert not csrf_matches(csrf, None)
        assert not csrf_matches(csrf, csrf[:-1] + ("A" if csrf[-1] != "A" else "B"))
        with engine.connect() as connection:
            kept = connection.execute(text("SELECT token_hash FROM web_session")).scalar_one()
        assert cookie not in kept
        assert principal_for_session(engine, cookie, START + timedelta(hours=13)) is None
        sign_out(engine, cookie)
        assert principal_for_session(engine, cookie, START + timedelta(hours=1)) is None


def test_failed_sign_ins_are_slowed_by_name_and_by_address(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    add_user(settings, "ada", Role.ADMIN, PASSWORD, actor="test", now=at(0))
    with ledger(settings) as engine:
        for second in range(3):
            with pytest.raises(AccessError, match="wrong name or password"):
                sign_in(
                    engine, "ada", "wrong password!", "10.0.0.9", START + timedelta(seconds=second)
                )
        # The fourth failure in a row must wait 1 s after the third; the right password too.
        with pytest.raises(SignInThrottled) as slowed:
            sign_in(engine, "ada", PASSWORD, "10.0.0.7", START + timedelta(seconds=2.5))
        assert slowed.value.retry_after_seconds == 1
        # The address that failed three times is slowed for any name too.
        with pytest.raises(SignInThrottled):
            sign_in(
                engine, "nobody", "whatever you like", "10.0.0.9", START + timedelta(seconds=2.5)
            )
        with pytest.raises(AccessError, match="wrong name or password"):
            sign_in(engine, "ada", "wrong again!!", "10.0.0.7", START + timedelta(seconds=3))
        # Four failures now: the next waits 2 s after the fourth, from any address.
        with pytest.raises(SignInThrottled) as longer:
            sign_in(engine, "ada", PASSWORD, "10.0.0.8", START + timedelta(seconds=4))
        assert longer.value.retry_after_seconds == 1
        principal, _cookie, _csrf = sign_in(
            engine, "ada", PASSWORD, "10.0.0.8", START + timedelta(seconds=5)
        )
        assert principal.role is Role.ADMIN
        # A success clears the name's count: a wrong password is not slowed at once.
        with pytest.raises(AccessError, match="wrong name or password"):
            sign_in(engine, "ada", "wrong password!", "10.0.0.5", START + timedelta(seconds=6))
        with engine.connect() as connection:
            attempts = connection.execute(
                text("SELECT count(*) FROM login_attempt WHERE succeeded = :yes"), {"yes": False}
            ).scalar_one()
        assert attempts == 5


def test_tokens_are_stored_hashed_and_revoked_tokens_are_refused(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    raw = create_token(settings, "ci-bot", Role.APPROVER, actor="test", now=at(0))
    assert raw.startswith("bk_")
    assert len(raw) > 40
    with ledger(settings) as engine:
        principal = principal_for_token(engine, raw, START + timedelta(minutes=5))
        assert principal is not None
        assert (principal.role, principal.actor) == (Role.APPROVER, "ci-bot (api token)")
        assert principal_for_token(engine, raw + "x", START) is None
        assert principal_for_token(engine, "Bearer " + raw, START) is None
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT id, token_hash, token_prefix, last_used_at FROM api_token")
            ).one()
        assert raw not in row.token_hash
        assert row.token_prefix == raw[:10]
        assert row.last_used_at is not None
        revoke(settings, int(row.id), now=at(60))
        assert principal_for_token(engine, raw, START + timedelta(minutes=6)) is None
    with pytest.raises(AccessError, match="no live token with id"):
        revoke(settings, int(row.id), now=at(61))


def test_users_and_tokens_through_the_billing_command(database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "BILLING_DATABASE_URL": database_url, "BILLING_BROKER_URL": ""}

    def billing(*args: str, given: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            billing_command(*args),
            env=env,
            cwd=tmp_path,
            input=given,
            capture_output=True,
            text=True,
            timeout=120,
        )

    refused = billing("users", "add", "vera", "--role", "viewer", given=PASSWORD + "\n")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "error: the first user must be an admin (billing users add NAME --role admin): "
        "only an admin can manage users and tokens"
    ]
    added = billing("users", "add", "ada", "--role", "admin", given=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "user ada added as admin"

    created = billing("tokens", "create", "ci-bot", "--role", "approver")
    assert created.returncode == 0, created.stderr
    raw = created.stdout.strip()
    assert raw.startswith("bk_")
    listed = json.loads(billing("tokens", "list", "--format", "json").stdout)
    assert [(t["name"], t["role"], t["prefix"], t["revoked"]) for t in listed] == [
        ("ci-bot", "approver", raw[:10], None)
    ]
    assert raw not in billing("tokens", "list").stdout
    revoked = billing("tokens", "revoke", str(listed[0]["id"]))
    assert revoked.returncode == 0, revoked.stderr
    again = billing("tokens", "revoke", str(listed[0]["id"]))
    assert again.returncode == 1
    assert "no live token with id" in again.stderr
