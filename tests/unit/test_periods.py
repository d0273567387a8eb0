"""Billing periods: parsing, UTC bounds, and the month before."""

from datetime import UTC, datetime

import pytest

from billing.errors import PeriodError
from billing.periods import BillingPeriod


def test_parse_and_bounds() -> None:
    period = BillingPeriod.parse("2026-10")
    assert period.start == datetime(2026, 10, 1, tzinfo=UTC)
    assert period.end == datetime(2026, 11, 1, tzinfo=UTC)
    assert period.start_unix == 1790812800
    assert period.end_unix - period.start_unix == 31 * 86400
    assert period.days == 31
    assert str(period) == "2026-10"


def test_february_and_year_end() -> None:
    assert BillingPeriod.parse("2028-02").days == 29
    assert BillingPeriod.parse("2026-12").end == datetime(2027, 1, 1, tzinfo=UTC)
    assert BillingPeriod.parse("2026-01").previous() == BillingPeriod(2025, 12)


def test_previous_month_of_a_moment() -> None:
    assert BillingPeriod.previous_to(datetime(2026, 11, 25, 13, tzinfo=UTC)) == BillingPeriod(
        2026, 10
    )
    assert BillingPeriod.previous_to(datetime(2027, 1, 1, 0, 0, tzinfo=UTC)) == BillingPeriod(
        2026, 12
    )


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "26-10", "October", "", "2026-10-01"])
def test_bad_periods_name_the_input(text: str) -> None:
    with pytest.raises(PeriodError, match="period"):
        BillingPeriod.parse(text)
