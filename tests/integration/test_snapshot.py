"""The usage snapshot, the offline re-rate, the completeness check and the migration path."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from alembic import command
from billing.close.inline import close_period, rerate_period
from billing.config import Settings
from billing.db.engine import alembic_config, normalise_url
from billing.errors import BillingError, IncompleteUsage
from billing.periods import BillingPeriod
from billing.usage.emulator import running_emulator
from billing.usage.faults import FaultPlan, PageFault
from tests.support.agreement import assert_period_agrees, database_totals, query_one

PERIOD = BillingPeriod.parse("2026-10")


def test_close_keeps_a_snapshot_and_rerates_offline_to_the_same_totals(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with running_emulator(orgs=6, seed=8, page_size=120) as base_url:
        settings = make_settings(
            database_url=database_url, mka1_base_url=base_url, mka1_api_key=SecretStr("sk-9")
        )
        closed = close_period(settings, PERIOD)
    before = database_totals(database_url, str(PERIOD))
    snapshot_rows, checksum, params, completeness = query_one(
        database_url,
        "SELECT (SELECT count(*) FROM usage_snapshot), usage_checksum, request_params, "
        "completeness FROM billing_run",
    )
    assert snapshot_rows == closed.report.usage_results
    assert isinstance(checksum, str)
    assert len(checksum) == 64
    assert completeness == "passed"
    assert isinstance(params, str)
    request = json.loads(params)
    assert request["group_by"].startswith("org_id,api_key_id,user_id")
    assert "sk-9" not in params
    # The emulator is gone: the re-rate reads only the snapshot.
    rerated = rerate_period(settings, PERIOD)
    assert database_totals(database_url, str(PERIOD)) == before
    assert [(s.org_id, s.total) for s in rerated.statements] == [
        (s.org_id, s.total) for s in closed.statements
    ]
    assert_period_agrees(database_url, rerated.folder, str(PERIOD))
    source, trigger, rerate_checksum = query_one(
        database_url,
        "SELECT rerated_from_run_id, trigger, usage_checksum FROM billing_run "
        "WHERE rerated_from_run_id IS NOT NULL",
    )
    assert (source, trigger, rerate_checksum) == (closed.run_id, "rerate:cli", checksum)


def test_rerate_without_a_snapshot_says_what_to_do(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(
        BillingError, match="no usage snapshot of 2026-10 to re-rate: run billing close"
    ):
        rerate_period(make_settings(), PERIOD)


def test_same_usage_gives_the_same_checksum(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    checksums = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / name}.db"
        with running_emulator(orgs=3, seed=2) as base_url:
            close_period(make_settings(database_url=url, mka1_base_url=base_url), PERIOD)
        checksums.append(query_one(url, "SELECT usage_checksum FROM billing_run")[0])
    assert checksums[0] == checksums[1]


def test_usage_that_does_not_add_up_stops_the_close_before_any_invoice(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    plan = FaultPlan(page_faults=(PageFault("lose-result", 2),))
    with running_emulator(orgs=5, seed=3, page_size=100, faults=plan) as base_url:
        settings = make_settings(database_url=database_url, mka1_base_url=base_url)
        with pytest.raises(IncompleteUsage, match=r"usage of 1 org\(s\) does not add up") as raised:
            close_period(settings, PERIOD)
    assert "nothing was billed" in str(raised.value)
    assert query_one(database_url, "SELECT count(*) FROM invoice") == (0,)
    status, completeness, error = query_one(
        database_url, "SELECT status, completeness, error FROM billing_run"
    )
    assert (status, completeness) == ("failed", "failed")
    assert isinstance(error, str)
    assert "duration_ms" in error


def test_the_check_can_be_switched_off(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    with running_emulator(orgs=3, seed=3) as base_url:
        close_period(make_settings(mka1_base_url=base_url, completeness_check=False), PERIOD)
    assert query_one(sqlite_url, "SELECT completeness FROM billing_run") == ("skipped",)


def test_migrations_upgrade_the_skeleton_schema_without_loss_and_downgrade(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "0001_initial")
    engine = create_engine(normalise_url(database_url))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO billing_run (period, status, trigger, started_at, upstream_url, "
                "pages_fetched, usage_results, invoice_count, results_without_memory) VALUES "
                "('2026-09', 'succeeded', 'cli', '2026-10-02 06:00:00+00', 'http://x', 3, 9, 1, 0)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO invoice (run_id, number, org_id, org_name, contact_emails, period, "
                "currency, rate_card_id, rate_card_version, rate_card_hash, total, issued_at) "
                "VALUES (1, 'INV-2026-000001', 'org-1', 'One', '', '2026-09', 'USD', 'standard', "
                "'2026-01-01', 'h', '1234.567890123456', '2026-10-02 06:00:00+00')"
            )
        )
    engine.dispose()
    command.upgrade(config, "head")
    number, total = query_one(database_url, "SELECT number, total FROM invoice")
    assert number == "INV-2026-000001"
    assert str(total).rstrip("0") == "1234.567890123456"
    assert query_one(database_url, "SELECT duplicate_results FROM billing_run") == (0,)
    command.downgrade(config, "-1")
    assert query_one(database_url, "SELECT count(*) FROM invoice") == (1,)
    command.upgrade(config, "head")


def test_a_partial_close_replaces_only_the_named_orgs(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with running_emulator(orgs=5, seed=6) as base_url:
        settings = make_settings(database_url=database_url, mka1_base_url=base_url)
        full = close_period(settings, PERIOD)
        before = database_totals(database_url, str(PERIOD))
        partial = close_period(settings, PERIOD, org_ids=("org-0002", "org-0004"))
    assert database_totals(database_url, str(PERIOD)) == before
    assert len(full.statements) == 5
    assert len(partial.statements) == 5  # the summary still covers the whole period
    params = query_one(
        database_url, "SELECT request_params FROM billing_run ORDER BY id DESC LIMIT 1"
    )[0]
    assert isinstance(params, str)
    assert json.loads(params)["org_ids"] == "org-0002,org-0004"


def test_hourly_buckets_bill_exactly_like_daily_buckets(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    totals = []
    for width in ("1d", "1h"):
        url = f"sqlite:///{tmp_path / width}.db"
        with running_emulator(orgs=3, seed=12, page_size=2000) as base_url:
            close_period(
                make_settings(database_url=url, mka1_base_url=base_url, mka1_bucket_width=width),
                PERIOD,
            )
        totals.append({org: values[1] for org, values in database_totals(url, str(PERIOD)).items()})
    assert totals[0] == totals[1]


def test_daily_usage_of_each_invoice_adds_up_to_its_session_time(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with running_emulator(orgs=4, seed=10) as base_url:
        closed = close_period(
            make_settings(database_url=database_url, mka1_base_url=base_url), PERIOD
        )
    for statement in closed.statements:
        assert statement.daily_usage, statement.org_id
        assert all(
            PERIOD.start.date() <= day.day < PERIOD.end.date() for day in statement.daily_usage
        )
        hours = sum(day.duration_ms for day in statement.daily_usage) / Decimal(3_600_000)
        session_time = [c for c in statement.charges if c.meter == "duration"]
        if statement.org_id != "org-0003":  # the platform card splits time by session kind
            assert hours.quantize(Decimal("1e-9")) == session_time[0].quantity.quantize(
                Decimal("1e-9")
            )
        assert statement.due_at is not None
        assert (statement.due_at - statement.issued_at).days == 30
    by_org = {s.org_id: s for s in closed.statements}
    assert by_org["org-0001"].billing_address.startswith("Acme Robotics GmbH\n")


def test_rerate_refuses_the_snapshot_of_a_partial_close(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    with running_emulator(orgs=3, seed=6) as base_url:
        settings = make_settings(mka1_base_url=base_url)
        close_period(settings, PERIOD)
        close_period(settings, PERIOD, org_ids=("org-0002",))
    before = database_totals(sqlite_url, str(PERIOD))
    with pytest.raises(BillingError, match=r"was a partial close of org-0002; run a full close"):
        rerate_period(settings, PERIOD)
    assert database_totals(sqlite_url, str(PERIOD)) == before
