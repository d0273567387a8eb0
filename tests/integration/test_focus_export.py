"""focus.csv from a closed ledger: the statements read back on SQLite and on PostgreSQL give the
same bytes, pass the FOCUS 1.2 conformance check and reconcile with summary.csv per currency."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine

from billing.close.inline import close_period
from billing.config import Settings
from billing.db.period_reads import iter_statements
from billing.periods import BillingPeriod
from billing.statements.focus import FocusExportWriter
from billing.usage.emulator import running_emulator
from tests.support.focus_spec_check import billed_by, focus_problems, read_rows

OCTOBER = BillingPeriod.parse("2026-10")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def closed_focus_csv(settings: Settings, folder: Path) -> bytes:
    """Close October, then write focus.csv from the live statements read back."""
    close_period(settings, OCTOBER, now=lambda: max(datetime.now(UTC), OCTOBER.end + timedelta(1)))
    engine = create_engine(settings.database_url)
    try:
        target = folder / "focus.csv"
        with FocusExportWriter(folder / "focus.work", issuer_name=settings.issuer_name) as writer:
            for statement in iter_statements(engine, OCTOBER):
                writer.add(statement)
            writer.finish(target)
    finally:
        engine.dispose()
    return target.read_bytes()


@pytest.mark.postgres
def test_focus_csv_of_a_closed_period_conforms_and_reconciles(
    make_settings: Callable[..., Settings], sqlite_url: str, pg_url: str, tmp_path: Path
) -> None:
    written = {}
    with running_emulator(orgs=6, seed=7, page_size=200) as base_url:
        for name, url in (("sqlite", sqlite_url), ("postgres", pg_url)):
            settings = make_settings(
                database_url=url,
                output_dir=tmp_path / name,
                mka1_base_url=base_url,
                mka1_api_key=SecretStr("t"),
                cost_centres=EXAMPLES / "cost_centres.yaml",
                issuer_name="=Issuer, Inc.",
            )
            written[name] = closed_focus_csv(settings, tmp_path)
            summary_bytes = (tmp_path / name / str(OCTOBER) / "summary.csv").read_bytes()
    assert written["sqlite"] == written["postgres"]
    content = written["postgres"]
    assert focus_problems(content) == []
    _, rows = read_rows(content)
    assert {row["InvoiceIssuerName"] for row in rows} == {"'=Issuer, Inc."}  # neutralised
    summary = list(csv.DictReader(io.StringIO(summary_bytes.decode())))
    totals: dict[str, Decimal] = {}
    for row in summary:
        totals[row["currency"]] = totals.get(row["currency"], Decimal(0)) + Decimal(row["total"])
    assert billed_by(rows, "BillingCurrency") == totals  # to the cent
    assert billed_by(rows, "InvoiceId") == {
        row["invoice_number"]: Decimal(row["total"]) for row in summary
    }
    assert {row["BillingAccountId"] for row in rows} == {row["org_id"] for row in summary}
