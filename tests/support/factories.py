"""Builders of statements for tests that render them without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from billing.domain import Statement, StatementCharge, StatementLine
from billing.periods import BillingPeriod

PERIOD = BillingPeriod.parse("2026-10")


def charge(meter: str, amount: str, pricing: str, unit: str = "hour") -> StatementCharge:
    return StatementCharge(
        meter=meter,
        description=meter.replace("_", " ").title(),
        unit=unit,
        quantity=Decimal("10"),
        included=Decimal(0),
        billable=Decimal("10"),
        pricing=pricing,
        amount=Decimal(amount),
    )


def line(
    meter: str, amount: str, key: str | None, user: str | None, unit: str = "hour"
) -> StatementLine:
    return StatementLine(meter, key, user, Decimal("3.250000000000"), unit, Decimal(amount))


def statement(
    *,
    invoice_number: str = "INV-2026-000001",
    org_id: str = "org-0001",
    org_name: str = "Acme Robotics",
    currency: str = "USD",
    charges: tuple[StatementCharge, ...] = (),
    lines: tuple[StatementLine, ...] = (),
    **extra: Any,
) -> Statement:
    """A statement of October 2026 whose total is the sum of its charges."""
    return Statement(
        invoice_id=1,
        invoice_number=invoice_number,
        org_id=org_id,
        org_name=org_name,
        emails=("billing@acme.example",),
        period=str(PERIOD),
        period_start=PERIOD.start,
        period_end=PERIOD.end,
        currency=currency,
        issued_at=datetime(2026, 11, 2, 6, 0, tzinfo=UTC),
        rate_card_id="standard",
        rate_card_version="2026-07-01",
        charges=charges,
        lines=lines,
        total=sum((item.amount for item in charges), Decimal(0)),
        **extra,
    )
