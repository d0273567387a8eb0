"""Credit-balance arithmetic: grants left, expiries due, consumption oldest first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from billing.credits import (
    Draw,
    Entry,
    Grant,
    balance,
    expiries_due,
    grants_of,
    plan_consumption,
)
from billing.states import CreditEntryKind

DAY = datetime(2026, 12, 1, tzinfo=UTC)


def grant(
    grant_id: int,
    amount: str,
    *,
    remaining: str | None = None,
    days_ago: int = 0,
    expires_in: int | None = None,
) -> Grant:
    return Grant(
        grant_id,
        Decimal(amount),
        Decimal(remaining if remaining is not None else amount),
        DAY - timedelta(days=days_ago),
        DAY + timedelta(days=expires_in) if expires_in is not None else None,
    )


def test_consumption_takes_the_oldest_grant_first_and_never_more_than_is_due() -> None:
    grants = [
        grant(3, "10.00", days_ago=1),
        grant(1, "5.00", days_ago=9),
        grant(2, "7.50", days_ago=5),
    ]
    assert plan_consumption(grants, Decimal("8.25"), DAY) == [
        Draw(1, Decimal("5.00")),
        Draw(2, Decimal("3.25")),
    ]
    assert plan_consumption(grants, Decimal("100.00"), DAY) == [
        Draw(1, Decimal("5.00")),
        Draw(2, Decimal("7.50")),
        Draw(3, Decimal("10.00")),
    ]


def test_same_creation_time_falls_back_to_the_id() -> None:
    grants = [grant(9, "1.00"), grant(4, "1.00")]
    assert plan_consumption(grants, Decimal("1.50"), DAY) == [
        Draw(4, Decimal("1.00")),
        Draw(9, Decimal("0.50")),
    ]


def test_expired_and_used_up_grants_are_skipped() -> None:
    grants = [
        grant(1, "5.00", days_ago=9, expires_in=0),  # expires exactly at finalization
        grant(2, "5.00", days_ago=8, remaining="0.00"),
        grant(3, "5.00", days_ago=7, expires_in=1),
        grant(4, "5.00", days_ago=6, expires_in=-3),
    ]
    assert plan_consumption(grants, Decimal("20.00"), DAY) == [Draw(3, Decimal("5.00"))]
    assert expiries_due(grants, DAY) == [Draw(1, Decimal("5.00")), Draw(4, Decimal("5.00"))]


def test_nothing_due_or_a_negative_amount_draws_nothing() -> None:
    grants = [grant(1, "5.00")]
    assert plan_consumption(grants, Decimal(0), DAY) == []
    assert plan_consumption(grants, Decimal("-3.00"), DAY) == []
    assert plan_consumption([], Decimal("3.00"), DAY) == []


def test_partly_used_grant_expires_with_what_is_left() -> None:
    grants = [grant(1, "10.00", remaining="2.40", expires_in=-1)]
    assert expiries_due(grants, DAY) == [Draw(1, Decimal("2.40"))]
    spent = [grant(1, "10.00", remaining="0.00", expires_in=-1)]
    assert expiries_due(spent, DAY) == []


def test_remaining_is_the_grant_plus_the_entries_that_name_it() -> None:
    t = DAY - timedelta(days=10)
    entries = [
        Entry(1, CreditEntryKind.GRANT, Decimal("20.00"), t),
        Entry(2, CreditEntryKind.GRANT, Decimal("5.00"), t - timedelta(days=1), expires_at=DAY),
        Entry(3, CreditEntryKind.CONSUMPTION, Decimal("-12.00"), t, grant_id=1),
        Entry(4, CreditEntryKind.REVERSAL, Decimal("12.00"), t, grant_id=1),
        Entry(5, CreditEntryKind.CONSUMPTION, Decimal("-7.35"), t, grant_id=1),
        Entry(6, CreditEntryKind.EXPIRY, Decimal("-5.00"), t, grant_id=2),
    ]
    grants = grants_of(entries)
    assert [(g.id, g.remaining) for g in grants] == [
        (2, Decimal("0.00")),
        (1, Decimal("12.65")),
    ]
    assert grants[0].expires_at == DAY
    assert balance(entries) == sum((g.remaining for g in grants), Decimal(0)) == Decimal("12.65")


def test_yen_and_three_place_currencies_stay_exact() -> None:
    yen = [grant(1, "1000"), grant(2, "250", days_ago=-1)]
    assert plan_consumption(yen, Decimal("1100"), DAY) == [
        Draw(1, Decimal("1000")),
        Draw(2, Decimal("100")),
    ]
    dinar = [grant(1, "0.125")]
    assert plan_consumption(dinar, Decimal("0.100"), DAY) == [Draw(1, Decimal("0.100"))]
