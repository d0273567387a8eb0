"""The same close on SQLite and on PostgreSQL writes the same CSV files, byte for byte."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from billing.close.inline import close_period
from billing.config import Settings
from billing.periods import BillingPeriod
from billing.usage.emulator import running_emulator
from tests.support.agreement import assert_period_agrees, assert_same_csv_bytes, csv_files

MONTHS = (BillingPeriod.parse("2026-10"), BillingPeriod.parse("2026-11"))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TWO_PLACES = re.compile(r"-?\d+\.\d\d")
PLAIN_QUANTITY = re.compile(r"-?(0|[1-9]\d*)(\.\d*[1-9])?")


def after_both_months() -> datetime:
    """A clock past the last month's end: a month is closed once it has ended."""
    return max(datetime.now(UTC), MONTHS[-1].end + timedelta(hours=1))


def close_both_months(settings: Settings) -> Path:
    for period in MONTHS:
        close_period(settings, period, now=after_both_months)
    return settings.output_dir


@pytest.mark.postgres
def test_sqlite_and_postgresql_write_the_same_csv_bytes(
    make_settings: Callable[..., Settings], sqlite_url: str, pg_url: str, tmp_path: Path
) -> None:
    with running_emulator(orgs=6, seed=7, page_size=200) as base_url:
        common = {
            "mka1_base_url": base_url,
            "mka1_api_key": SecretStr("t"),
            "cost_centres": EXAMPLES / "cost_centres.yaml",
        }
        on_sqlite = close_both_months(
            make_settings(database_url=sqlite_url, output_dir=tmp_path / "sqlite", **common)
        )
        on_postgres = close_both_months(
            make_settings(database_url=pg_url, output_dir=tmp_path / "postgres", **common)
        )
    for period in map(str, MONTHS):
        assert_same_csv_bytes(on_sqlite / period, on_postgres / period)
        assert_period_agrees(pg_url, on_postgres / period, period)
    november = csv_files(on_postgres / "2026-11")
    summary = list(csv.DictReader(io.StringIO(november["summary.csv"].decode())))
    assert {row["currency"] for row in summary} == {"USD", "EUR"}  # both have two places
    assert all(TWO_PLACES.fullmatch(row["total"]) for row in summary), summary
    changes = list(csv.DictReader(io.StringIO(november["changes.csv"].decode())))
    for row in changes:
        for column in ("previous_total", "current_total", "change"):
            assert TWO_PLACES.fullmatch(row[column]), (column, row)
    allocation = csv.DictReader(io.StringIO(november["allocation.csv"].decode()))
    assert all(TWO_PLACES.fullmatch(row["billed_cost"]) for row in allocation)
    statement = list(csv.DictReader(io.StringIO(november["org-0001.csv"].decode())))
    for row in statement:
        assert TWO_PLACES.fullmatch(row["BilledCost"]), row
        if row["ChargeCategory"] == "Usage":  # FOCUS 1.2: no consumed quantity on the others
            assert PLAIN_QUANTITY.fullmatch(row["ConsumedQuantity"]), row
    assert any("." in row["ConsumedQuantity"] for row in statement)
