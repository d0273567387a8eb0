"""Statements of a chosen number of lines for render tests and the render benchmark."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

from billing.credit_notes import CreditNoteDocument, CreditNoteDocumentLine
from billing.domain import DailyUsage, Statement, StatementCharge, StatementLine
from tests.support.factories import statement

# The three sizes the render benchmark and the pixel test compare: a small org, the median org
# of the 1,000-org close (36 lines) and a large one.
SIZES = {"small": 4, "median": 36, "200 lines": 200}

REVERSE_CHARGE_NOTE = (
    "Reverse charge: VAT to be accounted for by the recipient "
    "(Article 196, Council Directive 2006/112/EC)."
)


@dataclass(frozen=True)
class SampleTax:
    """A tax rule for make_statement: the printed name, percent, treatment and wording (the
    standard treatment's wording is made from the percent and the net, as rating stores it)."""

    rate_id: str = "de-vat-standard"
    name: str = "VAT 19%"
    percent: Decimal = Decimal(19)
    treatment: str = "standard"
    wording: str = ""


REVERSE_CHARGE = SampleTax(
    "reverse-charge", "Reverse charge", Decimal(0), "reverse_charge", REVERSE_CHARGE_NOTE
)


def _minor(currency: str) -> Decimal:
    return Decimal(1) if currency == "JPY" else Decimal("0.01")


def _half_up(value: Decimal, currency: str) -> Decimal:
    return value.quantize(_minor(currency), rounding=ROUND_HALF_UP)


def make_statement(
    *,
    org_name: str = "Acme Robotics",
    currency: str = "USD",
    line_count: int = 6,
    draft: bool = False,
    api_key_prefix: str = "key_live_",
    user_prefix: str = "user-",
    billing_address: str = "Acme Robotics Inc.\nAttn: Accounts Payable\n12 Harbor Way\nBoston, MA",
    discount_percent: Decimal | None = None,
    corrections: bool = False,
    credit: Decimal | None = None,
    taxes: tuple[SampleTax, ...] = (),
    purchase_order: str = "",
    customer_tax_id: str = "",
    customer_country: str = "",
    invoice_number: str = "MKA1-2026-10-0042",
) -> Statement:
    """A realistic statement: three usage meters, a minimum top-up, lines and daily usage.

    Optionally the org's discount (usage at list amount, each charge discounted and rounded
    half-up once, pricing `..., less N%`), corrections of an earlier invoice, credit balance
    applied (`credit`, positive: what is taken off), tax charges on the net (one per rule,
    rounded half-up once, with its line without key or user), a PO and a customer tax id.
    The total is the sum of the charges, as stored."""
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
            f"{Decimal('0.12') * scale} / hour",
            usage_amounts[0],
        ),
        StatementCharge(
            "memory",
            "Reserved memory",
            "gib_hour",
            Decimal("32322.4"),
            Decimal(100),
            Decimal("32222.4"),
            f"{Decimal('0.0125') * scale} / gib_hour",
            usage_amounts[1],
        ),
        StatementCharge(
            "workspace_out",
            "Workspace data out",
            "gib",
            Decimal("4.5"),
            Decimal(2),
            Decimal("2.5"),
            "0.09 to 20; 0.05 above 20 / gib",
            usage_amounts[2],
        ),
        StatementCharge(
            "minimum_charge",
            "Minimum charge top-up",
            "period",
            Decimal(1),
            Decimal(0),
            Decimal(1),
            f"minimum {Decimal('1234.56') * scale} per period",
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
    if discount_percent is not None:
        kept = (100 - discount_percent) / 100
        charges = tuple(
            replace(
                charge,
                amount=_half_up(charge.amount * kept, currency),
                list_amount=charge.amount,
                pricing=f"{charge.pricing}, less {discount_percent}%",
            )
            if charge.meter != "minimum_charge"
            else charge
            for charge in charges
        )
    if corrections:
        charges += (
            StatementCharge(
                "duration",
                "Session time",
                "hour",
                Decimal("12.5"),
                Decimal(0),
                Decimal("12.5"),
                "corrects INV-2026-000007 (2026-09)",
                Decimal("1.50") * scale,
                charge_class="correction",
                corrects_invoice_id=7,
            ),
            StatementCharge(
                "workspace_out",
                "Workspace data out",
                "gib",
                Decimal("-0.75"),
                Decimal(0),
                Decimal("-0.75"),
                "corrects INV-2026-000007 (2026-09)",
                Decimal("-0.04") * scale,
                charge_class="correction",
                corrects_invoice_id=7,
            ),
        )
        lines += (
            StatementLine(
                "duration",
                f"{api_key_prefix}0000",
                None,
                Decimal("12.5"),
                "hour",
                Decimal("1.50") * scale,
                "correction",
                7,
            ),
            StatementLine(
                "workspace_out",
                f"{api_key_prefix}0000",
                None,
                Decimal("-0.75"),
                "gib",
                Decimal("-0.04") * scale,
                "correction",
                7,
            ),
        )
    net = sum((charge.amount for charge in charges), Decimal(0))
    for rule in taxes:
        amount = _half_up(net * rule.percent / 100, currency)
        wording = rule.wording or f"{rule.percent}% of {net}"
        charges += (
            StatementCharge(
                rule.rate_id,
                rule.name,
                "",
                net,
                Decimal(0),
                net,
                wording,
                amount,
                charge_class="tax",
                tax_percent=rule.percent,
                tax_treatment=rule.treatment,
            ),
        )
        lines += (StatementLine(rule.rate_id, None, None, net, "", amount, "tax"),)
    if credit is not None:
        charges += (
            StatementCharge(
                "credit_balance",
                "Credit applied",
                "credit",
                Decimal(1),
                Decimal(0),
                Decimal(1),
                "from a credit balance of 500.00, 375.00 left",
                -credit,
                charge_class="credit",
            ),
        )
        lines += (
            StatementLine("credit_balance", None, None, Decimal(1), "credit", -credit, "credit"),
        )
    return statement(
        invoice_number=invoice_number,
        org_id="org-0042",
        org_name=org_name,
        currency=currency,
        charges=charges,
        lines=lines,
        billing_address=billing_address,
        due_at=datetime(2026, 12, 2, tzinfo=UTC),
        daily_usage=daily,
        draft=draft,
        purchase_order=purchase_order,
        customer_tax_id=customer_tax_id,
        customer_country=customer_country,
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
