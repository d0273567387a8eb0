"""A statement with credit: Net total, the credit charge and Amount due in the totals block, never
in the usage table; a statement without credit or tax has its one Amount due row."""

from __future__ import annotations

import io
import re
from decimal import Decimal

import pytest
from pypdf import PdfReader

from billing.config import Settings
from billing.domain import StatementCharge, StatementLine
from billing.statements.pdf import StatementRenderer
from tests.support.factories import charge, line, statement


@pytest.fixture(scope="module")
def renderer() -> StatementRenderer:
    return StatementRenderer.from_settings(Settings(issuer_name="MKA1, Inc."))


def credit(description: str, amount: str, pricing: str) -> StatementCharge:
    return StatementCharge(
        meter="credit_balance",
        description=description,
        unit="credit",
        quantity=Decimal(1),
        included=Decimal(0),
        billable=Decimal(1),
        pricing=pricing,
        amount=Decimal(amount),
        charge_class="credit",
    )


def credit_line(amount: str) -> StatementLine:
    return StatementLine(
        "credit_balance", None, None, Decimal(1), "credit", Decimal(amount), charge_class="credit"
    )


def tbody(html: str, css_class: str) -> str:
    """The text of every <tbody class="css_class"> of the page."""
    return " ".join(re.findall(rf'<tbody class="{css_class}">(.*?)</tbody>', html, re.DOTALL))


def flat_pdf_text(pdf: bytes) -> str:
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return re.sub(r"\s+", " ", text.replace("\xa0", " "))


def test_credit_applied_sits_between_net_total_and_amount_due(renderer: StatementRenderer) -> None:
    applied = statement(
        charges=(
            charge("duration", "120.00", "0.10 / hour"),
            charge("memory", "30.50", "0.008 / gib_hour"),
            credit("Credit applied", "-100.25", "from a credit balance of 140.00, 39.75 left"),
        ),
        lines=(
            line("duration", "120.00", "key-1", None),
            line("memory", "30.50", "key-1", None),
            credit_line("-100.25"),
        ),
    )
    html = renderer.html(applied)
    assert "Credit applied" not in tbody(html, "usage")
    assert "Credit applied" in tbody(html, "credits")
    assert "Net total" in tbody(html, "subtotal net-total")
    text = flat_pdf_text(renderer.pdf(applied))
    assert "Net total $150.50" in text
    assert "Credit applied from a credit balance of $140.00, $39.75 left -$100.25" in text
    assert "Amount due $50.25" in text
    assert text.index("Net total") < text.index("Credit applied") < text.index("Amount due $")
    assert "Total due" not in text


def test_a_carried_negative_total_reads_as_zero_due(renderer: StatementRenderer) -> None:
    correction = StatementCharge(
        "duration",
        "Session time",
        "hour",
        Decimal(-154),
        Decimal(0),
        Decimal(-154),
        "corrects INV-2026-000002 (2026-09)",
        Decimal("-15.40"),
        charge_class="correction",
        corrects_invoice_id=2,
    )
    carried = statement(
        charges=(
            charge("duration", "3.00", "0.10 / hour"),
            correction,
            credit("Carried to credit balance", "12.40", "12.40 to the credit balance"),
        ),
        lines=(line("duration", "3.00", "key-1", None), credit_line("12.40")),
    )
    assert carried.total == 0
    text = flat_pdf_text(renderer.pdf(carried))
    assert "Net total -$12.40" in text
    assert "Carried to credit balance $12.40 to the credit balance $12.40" in text
    assert "Amount due $0.00" in text
    assert "Payment reference" not in text  # nothing to pay: no payment box


def test_without_credit_or_tax_the_amount_due_is_the_only_total(
    renderer: StatementRenderer,
) -> None:
    plain = statement(
        charges=(charge("duration", "120.00", "0.10 / hour"),),
        lines=(line("duration", "120.00", "key-1", None),),
    )
    html = renderer.html(plain)
    assert 'class="credits"' not in html
    text = flat_pdf_text(renderer.pdf(plain))
    assert "Amount due $120.00" in text
    assert "Net total" not in text
    assert "Total due" not in text
