"""The month close in-process against the emulator over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from billing.config import Settings
from billing.db.engine import normalise_url
from billing.errors import UpstreamAuthError, UpstreamUnavailable
from billing.periods import BillingPeriod
from billing.services import close_period
from billing.usage.emulator import running_emulator
from tests.agreement import assert_period_agrees
from tests.reference import expected_totals, fetch_raw_results

PERIOD = BillingPeriod.parse("2026-10")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def count(database_url: str, table: str) -> int:
    engine = create_engine(normalise_url(database_url))
    with engine.connect() as connection:
        value = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608
    engine.dispose()
    return int(value)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("pg_url"))


def test_close_agrees_everywhere_and_matches_the_hand_computation(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with running_emulator(orgs=9, seed=7, page_size=150) as base_url:
        settings = make_settings(
            database_url=database_url, mka1_base_url=base_url, mka1_api_key=SecretStr("t")
        )
        result = close_period(settings, PERIOD)
        raw = fetch_raw_results(base_url, PERIOD.start_unix, PERIOD.end_unix)
    assert result.pages_fetched > 3
    assert len(result.statements) == 9
    totals = assert_period_agrees(database_url, result.folder, str(PERIOD))
    expected = expected_totals(
        raw, EXAMPLES / "ratecards", EXAMPLES / "orgs.yaml", PERIOD.first_day
    )
    assert totals == expected
    assert result.report.usage_results == len(raw)


def test_rerun_replaces_without_duplicates_and_keeps_numbers(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with running_emulator(orgs=4, seed=3) as base_url:
        settings = make_settings(
            database_url=database_url, mka1_base_url=base_url, mka1_api_key=SecretStr("t")
        )
        first = close_period(settings, PERIOD)
        counts = {
            table: count(database_url, table)
            for table in ("invoice", "invoice_charge", "invoice_line")
        }
        second = close_period(settings, PERIOD)
    assert {table: count(database_url, table) for table in counts} == counts
    assert [(s.org_id, s.invoice_number, s.total) for s in first.statements] == [
        (s.org_id, s.invoice_number, s.total) for s in second.statements
    ]
    assert count(database_url, "billing_run") == 2


def test_emails_carry_their_own_statement(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    with running_emulator(orgs=6, seed=2) as base_url:
        settings = make_settings(mka1_base_url=base_url, mka1_api_key=SecretStr("t"))
        result = close_period(settings, PERIOD)
    by_org = {s.org_id: s for s in result.statements}
    written = sorted((result.folder / "emails").glob("*.eml"))
    assert [path.stem for path in written] == sorted(o for o, s in by_org.items() if s.emails)
    assert result.orgs_without_contact == sorted(o for o, s in by_org.items() if not s.emails)
    for path in written:
        message = email.message_from_bytes(path.read_bytes())
        statement = by_org[path.stem]
        assert message["To"] == ", ".join(statement.emails)
        assert statement.invoice_number in message["Subject"]
        names = sorted(part.get_filename() for part in message.walk() if part.get_filename())
        assert names == [f"{path.stem}.csv", f"{path.stem}.pdf"]


def test_unreachable_upstream_leaves_no_invoices(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(
        database_url=database_url, mka1_base_url="http://127.0.0.1:9", mka1_max_attempts=2
    )
    with pytest.raises(UpstreamUnavailable, match="page 1"):
        close_period(settings, PERIOD)
    assert count(database_url, "invoice") == 0
    engine = create_engine(normalise_url(database_url))
    with engine.connect() as connection:
        status, error = connection.execute(text("SELECT status, error FROM billing_run")).one()
    engine.dispose()
    assert status == "failed"
    assert "page 1" in error


def test_wrong_api_key_stops_the_close(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    with running_emulator(orgs=2, api_key="right") as base_url:
        settings = make_settings(mka1_base_url=base_url, mka1_api_key=SecretStr("wrong"))
        with pytest.raises(UpstreamAuthError, match="MKA1_API_KEY"):
            close_period(settings, PERIOD)
    assert count(sqlite_url, "invoice") == 0
