"""The month close in-process against the emulator over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from billing.cli.app import app
from billing.close.inline import close_period, quote_org
from billing.config import Settings
from billing.db.engine import normalise_url
from billing.errors import UpstreamAuthError, UpstreamUnavailable
from billing.money import minor_to_decimal
from billing.periods import BillingPeriod
from billing.statements.formatting import money
from billing.usage.emulator import running_emulator
from tests.support.agreement import assert_period_agrees, count
from tests.support.reference import cards_need_session_kind, expected_totals, fetch_raw_results

PERIOD = BillingPeriod.parse("2026-10")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_close_agrees_everywhere_and_matches_the_hand_computation(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with running_emulator(orgs=9, seed=7, page_size=150) as base_url:
        settings = make_settings(
            database_url=database_url, mka1_base_url=base_url, mka1_api_key=SecretStr("t")
        )
        result = close_period(settings, PERIOD)
        raw = fetch_raw_results(
            base_url,
            PERIOD.start_unix,
            PERIOD.end_unix,
            by_session_kind=cards_need_session_kind(EXAMPLES / "ratecards"),
        )
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
    by_number = {s.invoice_number: s for s in result.statements}
    written = sorted((result.folder / "emails").glob("*.eml"))
    assert [path.stem for path in written] == sorted(n for n, s in by_number.items() if s.emails)
    assert result.orgs_without_contact == sorted(o for o, s in by_org.items() if not s.emails)
    for path in written:
        message = email.message_from_bytes(path.read_bytes())
        statement = by_number[path.stem]
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


def stored_rows(database_url: str) -> list[tuple[object, ...]]:
    """Every charge and line of the ledger as exact Decimals, in a stable order."""
    engine = create_engine(normalise_url(database_url))
    with engine.connect() as connection:
        charges = connection.execute(
            text(
                "SELECT i.org_id, c.meter, c.quantity, c.billable, c.amount FROM invoice_charge c "
                "JOIN invoice i ON i.id = c.invoice_id"
            )
        ).all()
        lines = connection.execute(
            text(
                "SELECT i.org_id, l.meter, l.api_key_id, l.user_id, l.quantity, l.amount "
                "FROM invoice_line l JOIN invoice i ON i.id = l.invoice_id"
            )
        ).all()
    engine.dispose()
    # SQLite hands the exact columns back as text, PostgreSQL as Decimal: compare as Decimal.
    exact_charges = [(*row[:2], *(Decimal(value) for value in row[2:])) for row in charges]
    exact_lines = [(*row[:4], *(Decimal(value) for value in row[4:])) for row in lines]
    return sorted([*exact_charges, *exact_lines], key=repr)


@pytest.mark.postgres
def test_sqlite_and_postgres_store_identical_results(
    make_settings: Callable[..., Settings], sqlite_url: str, pg_url: str
) -> None:
    with running_emulator(orgs=6, seed=5) as base_url:
        for url in (sqlite_url, pg_url):
            close_period(
                make_settings(
                    database_url=url, mka1_base_url=base_url, mka1_api_key=SecretStr("t")
                ),
                PERIOD,
            )
    on_sqlite, on_postgres = stored_rows(sqlite_url), stored_rows(pg_url)
    assert len(on_sqlite) > 50
    assert on_sqlite == on_postgres


def test_quote_prices_one_org_without_storing(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    with running_emulator(orgs=4, seed=9) as base_url:
        settings = make_settings(mka1_base_url=base_url, mka1_api_key=SecretStr("t"))
        invoice, report = quote_org(settings, PERIOD, "org-0003")
        closed = close_period(settings, PERIOD)
    assert invoice is not None
    assert report.usage_results > 0
    by_org = {s.org_id: s for s in closed.statements}
    assert minor_to_decimal(invoice.total_minor, invoice.currency) == by_org["org-0003"].total
    assert invoice.rate_card.id == "platform"
    assert count(sqlite_url, "billing_run") == 1  # the quote stored nothing


def test_quote_shows_the_tax_the_close_charges(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    tax_rates = EXAMPLES / "tax_rates.yaml"  # org-0004 is French: TVA 20%
    with running_emulator(orgs=4, seed=9) as base_url:
        settings = make_settings(
            mka1_base_url=base_url, mka1_api_key=SecretStr("t"), tax_rates=tax_rates
        )
        invoice, _report = quote_org(settings, PERIOD, "org-0004")
        printed = CliRunner().invoke(
            app,
            ["quote", "--period", str(PERIOD), "--org", "org-0004"],
            env={
                "MKA1_BASE_URL": base_url,
                "MKA1_API_KEY": "t",
                "BILLING_TAX_RATES": str(tax_rates),
                "BILLING_DATABASE_URL": sqlite_url,
                "COLUMNS": "200",
            },
        )
        closed = close_period(settings, PERIOD)
    assert invoice is not None
    assert invoice.tax_rule is not None
    assert invoice.tax_rule.rate_id == "fr-vat-standard"
    statement = next(s for s in closed.statements if s.org_id == "org-0004")
    net = minor_to_decimal(invoice.total_minor, invoice.currency)
    assert statement.net_total == net  # no top-up: above the card's minimum
    by_hand = (net * Decimal("0.20")).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert statement.tax_total == by_hand
    assert printed.exit_code == 0, printed.output
    for shown in (
        "Net total",
        "TVA 20%",
        money(net, "USD", "en_US"),
        money(by_hand, "USD", "en_US"),
    ):
        assert shown in printed.output
    assert money(net + by_hand, "USD", "en_US") in printed.output
