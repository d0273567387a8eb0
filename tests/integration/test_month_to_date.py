"""A month is numbered only once it has ended: month-to-date drafts stay drafts, on both
databases and through both drivers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from billing.close import distributed
from billing.close.inline import close_period, finalize_period, rerate_period
from billing.close.steps import CloseOptions
from billing.config import Settings
from billing.errors import InvoiceStateError, PeriodError
from billing.periods import BillingPeriod
from billing.usage.emulator import running_emulator
from tests.support.agreement import rows

NOVEMBER = BillingPeriod.parse("2026-11")
DURING = NOVEMBER.start + timedelta(days=14)
AFTER = NOVEMBER.end + timedelta(days=1)


def clock(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def test_month_to_date_drafts_are_never_numbered_after_the_month_ends(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    with running_emulator(orgs=3, seed=4, page_size=200) as base_url:
        settings = make_settings(
            database_url=database_url, mka1_base_url=base_url, mka1_api_key=SecretStr("t")
        )
        said: list[str] = []
        close_period(
            settings,
            NOVEMBER,
            now=clock(DURING),
            options=CloseOptions(draft=True),
            progress=said.append,
        )
        assert any("these drafts are month-to-date" in line for line in said)
        drafts = rows(database_url, "SELECT id, number, status FROM invoice ORDER BY id")
        assert [(number, status) for _id, number, status in drafts] == [(None, "draft")] * 3
        with pytest.raises(PeriodError, match="2026-11 has not ended"):
            finalize_period(settings, NOVEMBER, now=clock(DURING))
        with pytest.raises(InvoiceStateError, match="drafts of 2026-11 are month-to-date"):
            finalize_period(settings, NOVEMBER, now=clock(AFTER))
        with pytest.raises(PeriodError, match="fetched on 2026-11-15 00:00 UTC, before the month"):
            rerate_period(settings, NOVEMBER, now=clock(AFTER))
        assert rows(database_url, "SELECT id, number, status FROM invoice ORDER BY id") == drafts
        assert rows(database_url, "SELECT count(*) FROM billing_run") == [(1,)]
        final = close_period(settings, NOVEMBER, now=clock(AFTER))
    assert [s.invoice_number for s in final.statements] == [
        f"INV-{AFTER.year}-{n:06d}" for n in (1, 2, 3)
    ]


def test_the_distributed_close_refuses_a_month_that_has_not_ended(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url, mka1_api_key=SecretStr("t"))
    with pytest.raises(PeriodError, match="2026-11 has not ended"):
        distributed.begin_close(settings, NOVEMBER, trigger="test", now=clock(DURING))
    with pytest.raises(PeriodError, match="2027-01 has not begun"):
        distributed.begin_close(
            settings, BillingPeriod.parse("2027-01"), trigger="beat", now=clock(AFTER)
        )
    if database_url.startswith("sqlite"):
        assert not Path(database_url.removeprefix("sqlite:///")).exists()
    else:
        public = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        assert rows(database_url, public) == []  # refused before the ledger was even migrated
