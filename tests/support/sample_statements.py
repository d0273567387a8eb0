"""Statements of a chosen number of lines for render tests and the render benchmark."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

from billing.credit_notes import CreditNoteDocument, CreditNoteDocumentLine
from billing.domain import DailyUsage, Statement, StatementCharge, StatementLine
from tests.support.factories import statement

# The three sizes the render benchmark and the pixel test compare: a small org, the median org
# of the 1,000-org close (36 lines) and a large one.
SIZES = {"small": 4, "median": 36, "200 lines": 200}


def make_statement(
    *,
    org_name: str = "Acme Robotics",
    currency: str = "USD",
    line_count: int = 6,
    draft: bool = False,
    api_key_prefix: str = "key_live_",
    user_prefix: str = "user-",
    billing_address: str = "Acme Robotics Inc.\nAttn: Accounts Payable\n12 Harbor Way\nBoston, MA",
) -> Statement:
    """A realistic statement: three usage meters, a minimum top-up, lines and daily usage."""
    zero_decimals = currency == "JPY"
    scale = Decimal(100) if zero_decimals else Decimal(1)
    usage_amounts = [Decimal("731.56"), Decimal("402.78"), Decimal("0.22")]
    if zero_decimals:
        usage_amounts = [Decimal("73156"), Decimal("40278"), Decimal("22")]
    charges = (
        StatementCharge(
            "duration",
            "Session time",
            "hour",
            Decimal("6096.333333333333"),
            Decimal(0),
            Decimal("6096.333333333333"),
            f"{Decimal('0.12') * scale} per hour",
            usage_amounts[0],
        ),
        StatementCharge(
            "memory",
            "Reserved memory",
            "gib_hour",
            Decimal("32322.4"),
            Decimal(100),
            Decimal("32222.4"),
            f"{Decimal('0.0125') * scale} per GiB·h",
            usage_amounts[1],
        ),
        StatementCharge(
            "workspace_out",
            "Workspace data out",
            "gib",
            Decimal("4.5"),
            Decimal(2),
            Decimal("2.5"),
            "first 20 GiB at 0.09, then 0.05 per GiB",
            usage_amounts[2],
        ),
        StatementCharge(
            "minimum_charge",
            "Minimum charge",
            "period",
            Decimal(1),
            Decimal(0),
            Decimal(1),
            "minimum commitment per period",
            Decimal("100.00") * scale,
        ),
    )
    meters = [("duration", "hour"), ("memory", "gib_hour"), ("workspace_out", "gib")]
    lines = tuple(
        StatementLine(
            meter=meters[index % 3][0],
            api_key_id=f"{api_key_prefix}{index // 4:04d}",
            user_id=None if index % 5 == 0 else f"{user_prefix}{index % 4}",
            quantity=Decimal(index + 1) / 3,
            unit=meters[index % 3][1],
            amount=Decimal(index % 7) + Decimal("0.25"),
        )
        for index in range(line_count)
    )
    daily = tuple(
        DailyUsage(date(2026, 10, d), 0 if d % 6 == 0 else (d * 7919 % 40) * 3_600_000)
        for d in range(1, 32)
        if d != 13
    )
    return statement(
        invoice_number="MKA1-2026-10-0042",
        org_id="org-0042",
        org_name=org_name,
        currency=currency,
        charges=charges,
        lines=lines,
        billing_address=billing_address,
        due_at=datetime(2026, 12, 2, tzinfo=UTC),
        daily_usage=daily,
        draft=draft,
    )


def sample_statement(line_count: int, *, draft: bool = False) -> Statement:
    """A realistic USD statement with `line_count` lines (make_statement's defaults)."""
    return make_statement(line_count=line_count, draft=draft)


def sample_credit_note(**changes: object) -> CreditNoteDocument:
    """A refund note of 3.00 USD on INV-2026-000001 over two lines (one without key or user)."""
    note = CreditNoteDocument(
        credit_note_id=1,
        number="CN-2026-000003",
        org_id="org-0042",
        org_name="Acme Robotics",
        emails=("ap@acme.example",),
        billing_address="Acme Robotics Inc.\n12 Harbor Way\nBoston, MA",
        period="2026-10",
        currency="USD",
        total=Decimal("3.00"),
        reason="outage",
        settlement="refund",
        created_by="finance@host",
        created_at=datetime(2026, 11, 5, tzinfo=UTC),
        invoice_number="INV-2026-000001",
        invoice_issued_at=datetime(2026, 11, 2, tzinfo=UTC),
        invoice_total=Decimal("20.00"),
        rate_card="standard@2026-07-01",
        lines=(
            CreditNoteDocumentLine(
                "duration", "Session time", "hour", "usage", "k", "u", Decimal("2.25")
            ),
            CreditNoteDocumentLine(
                "memory", "Reserved memory", "gib_hour", "usage", None, None, Decimal("0.75")
            ),
        ),
    )
    return replace(note, **changes)  # type: ignore[arg-type]
