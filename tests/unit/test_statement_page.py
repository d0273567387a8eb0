"""The customer's page: net, tax per rate, gross, credit and amount due; the discount as its own
row; quantities, units and prices for people; payment box, PO and tax ids; the credit note."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from decimal import Decimal

import pytest
from pypdf import PdfReader

from billing.config import Settings
from billing.credit_notes import CreditNoteDocumentLine
from billing.domain import Statement, StatementLine
from billing.statements.formatting import (
    PaymentInstructions,
    display_pricing,
    measure,
    tax_id_label,
)
from billing.statements.pdf import StatementRenderer, charge_table, printing_settings
from tests.support.sample_statements import (
    REVERSE_CHARGE,
    REVERSE_CHARGE_NOTE,
    SampleTax,
    make_statement,
    sample_credit_note,
)

BANK = "Bank: Commerzbank; IBAN: DE89 3704 0044 0532 0130 00\nBIC: COBADEFFXXX"
LINK = "https://pay.mka1.example/invoice/{invoice_number}?from=pdf"
ROW_AMOUNT = re.compile(r'<td class="num">(-?\$[\d,]+\.\d\d)</td>\s*</tr>')


def settings(**changes: object) -> Settings:
    values: dict[str, object] = {
        "issuer_name": "MKA1, Inc.",
        "issuer_address": "548 Market Street\nSan Francisco, CA 94104",
        "statement_detail": "lines",
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def renderer() -> StatementRenderer:
    return StatementRenderer.from_settings(
        settings(
            issuer_tax_id="US12-3456789",
            payment_bank_details=BANK,
            payment_link=LINK,
        )
    )


def text_of(pdf: bytes) -> str:
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return re.sub(r"\s+", " ", text.replace("\xa0", " ").replace("\u202f", " "))


def tbodies(html: str, *classes: str) -> str:
    return " ".join(
        body
        for css_class in classes
        for body in re.findall(rf'<tbody class="{css_class}">(.*?)</tbody>', html, re.DOTALL)
    )


def dollars(amounts: list[str]) -> Decimal:
    return sum(
        (Decimal(a.replace("$", "").replace(",", "")) for a in amounts),
        Decimal(0),
    )


def taxed_statement() -> Statement:
    return make_statement(
        discount_percent=Decimal(10),
        corrections=True,
        credit=Decimal("25.00"),
        taxes=(SampleTax(), SampleTax("us-ny-sales", "Sales tax 8.875%", Decimal("8.875"))),
        purchase_order="PO-4711/2026",
        customer_tax_id="DE811907980",
        invoice_number="INV-2026-000123",
    )


def test_printed_rows_add_up_to_net_gross_and_the_amount_due(
    renderer: StatementRenderer,
) -> None:
    statement = taxed_statement()
    # By hand: usage at list 731.56 + 402.78 + 0.22 = 1,134.56; less 10% each, rounded once:
    # 658.40 + 362.50 + 0.20 = 1,021.10, so the discount row is -113.46; top-up 100.00;
    # corrections 1.50 - 0.04. Net 1,122.56.
    table = charge_table(statement, "en_US")
    assert table["discount"] == Decimal("-113.46")
    assert table["discount_label"] == "Discount 10%"
    assert statement.net_total == Decimal("1122.56")
    vat, sales = statement.taxes
    assert vat.amount == Decimal("213.29")  # 19% of 1,122.56 = 213.2864
    assert sales.amount == Decimal("99.63")  # 8.875% of 1,122.56 = 99.6272
    assert statement.gross_total == Decimal("1435.48")
    assert statement.total == Decimal("1410.48")

    html = renderer.html(statement)
    net_rows = ROW_AMOUNT.findall(tbodies(html, "usage", "discount", "top-ups", "corrections"))
    assert dollars(net_rows) == statement.net_total
    tax_rows = ROW_AMOUNT.findall(tbodies(html, "taxes"))
    assert tax_rows == ["$213.29", "$99.63"]
    credit_rows = ROW_AMOUNT.findall(tbodies(html, "credits"))
    assert statement.net_total + dollars(tax_rows) + dollars(credit_rows) == statement.total

    text = text_of(renderer.pdf(statement))
    for expected in (
        "Session time 6,096.33 hours $0.12 per hour $731.56",  # at list amount
        "Discount 10% -$113.46",
        "Net total $1,122.56",
        "VAT 19% on $1,122.56 $213.29",
        "Sales tax 8.875% on $1,122.56 $99.63",
        "Total $1,435.48",
        "Credit applied from a credit balance of $500.00, $375.00 left -$25.00",
        "Amount due $1,410.48",
        "Corrections to earlier invoices",
        "Session time 12.50 hours Corrects INV-2026-000007 (2026-09) $1.50",
        "Workspace data out -0.750 GiB Corrects INV-2026-000007 (2026-09) -$0.04",
    ):
        assert expected in text, expected
    assert text.index("Net total") < text.index("VAT 19%") < text.index("Total $1,435.48")
    assert (
        text.index("Total $1,435.48") < text.index("Credit applied") < text.index("Amount due $1")
    )
    assert "less 10%" not in text  # the discount is its own row, not a note in a price
    assert "731.56, less" not in html


def test_breakdown_leaves_tax_out_and_closes_on_total_less_tax() -> None:
    sample = taxed_statement()
    assert isinstance(sample, Statement)
    # One line per charge, as stored: usage on an API key, the rest without (tax too).
    statement = replace(
        sample,
        lines=tuple(
            StatementLine(
                c.meter,
                "key-1"
                if c.charge_class in ("usage", "correction") and c.meter != "minimum_charge"
                else None,
                None,
                c.quantity,
                c.unit,
                c.amount,
                c.charge_class,
                c.corrects_invoice_id,
            )
            for c in sample.charges
        ),
    )
    untaxed = statement.total - statement.tax_total
    for detail, label in (("lines", "Total of lines"), ("keys", "Total of subtotals")):
        renderer = StatementRenderer.from_settings(settings(statement_detail=detail))
        html = renderer.html(statement)
        lines_total = re.search(
            rf"{label}</td><td class=\"num\">(-?\$[\d,.]+)</td>", html.replace("\n", "")
        )
        assert lines_total is not None, detail
        assert dollars([lines_total.group(1)]) == untaxed, detail
        breakdown = html.split('class="breakdown-title"', 1)[1]
        assert "VAT 19%" not in breakdown, detail


def test_payment_box_po_and_tax_ids(renderer: StatementRenderer) -> None:
    statement = taxed_statement()
    html = renderer.html(statement)
    assert 'href="https://pay.mka1.example/invoice/INV-2026-000123?from=pdf"' in html
    text = text_of(renderer.pdf(statement))
    for expected in (
        "PO number PO-4711/2026",
        "Tax ID US12-3456789",  # the issuer's
        "VAT ID DE811907980",  # the customer's
        "Bank: Commerzbank",
        "IBAN: DE89 3704 0044 0532 0130 00",
        "BIC: COBADEFFXXX",
        "Payment reference: INV-2026-000123",
    ):
        assert expected in text, expected
    # A void invoice asks for no payment; an untaxed one without PO prints neither row.
    void = replace(statement, status="void")
    assert "Payment reference" not in renderer.html(void)
    plain = renderer.html(make_statement())
    assert "PO number" not in plain
    assert "VAT ID" not in plain


def test_the_payment_link_quotes_the_invoice_number() -> None:
    payment = PaymentInstructions("", "https://pay.example/i/{invoice_number}")
    assert payment.link_for("INV/2026 1&x") == "https://pay.example/i/INV%2F2026%201%26x"
    assert PaymentInstructions("", "").link_for("INV-1") == ""
    assert not PaymentInstructions.clickable("javascript:alert(1)")
    assert PaymentInstructions("a; b\nc").bank_lines == ("a", "b", "c")


def test_markup_in_a_purchase_order_prints_literally(renderer: StatementRenderer) -> None:
    hostile = '<img src="file:///etc/passwd">PO"1'
    statement = make_statement(purchase_order=hostile, customer_tax_id="<b>DE1</b>")
    html = renderer.html(statement)
    assert hostile not in html
    assert "<b>DE1</b>" not in html
    text = text_of(renderer.pdf(statement))
    assert re.sub(r"\s+", "", hostile) in re.sub(r"\s+", "", text)


def test_reverse_charge_and_exempt_print_their_wording(renderer: StatementRenderer) -> None:
    reverse = make_statement(
        currency="EUR",
        taxes=(REVERSE_CHARGE,),
        customer_tax_id="DE811907980",
    )
    text = text_of(renderer.pdf(reverse))
    assert "Net total €1,234.56 Reverse charge on €1,234.56" in text
    assert f"{REVERSE_CHARGE_NOTE} €0.00 Total €1,234.56" in text
    assert "VAT ID DE811907980" in text
    exempt = make_statement(
        taxes=(SampleTax("exempt", "Exempt", Decimal(0), "exempt", "Exempt: charity (501(c)(3))"),)
    )
    text = text_of(renderer.pdf(exempt))
    assert "Exempt on $1,234.56 Exempt: charity (501(c)(3)) $0.00" in text


def test_credit_note_prints_net_tax_and_total_credited(renderer: StatementRenderer) -> None:
    base = sample_credit_note()
    note = replace(
        base,
        total=Decimal("3.57"),
        purchase_order="PO-77",
        customer_tax_id="FR40303265045",
        lines=(
            *base.lines,
            CreditNoteDocumentLine(
                "de-vat-standard", "VAT 19%", "", "tax", None, None, Decimal("0.57")
            ),
        ),
    )
    text = text_of(renderer.credit_note_pdf(note))
    assert "Net credited $3.00" in text
    assert "VAT 19% $0.57" in text
    assert "Total credited $3.57" in text
    assert "PO number PO-77" in text
    assert "VAT ID FR40303265045" in text
    lines_table = text.split("Lines credited", 1)[1]
    assert lines_table.count("VAT 19%") == 1  # a tax row, not a credited line with a key


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("0.12 / hour", "$0.12 per hour"),
        ("0.0125 / gib_hour, less 10%", "$0.0125 per GiB-hour"),
        (
            "0.09 to 20; 0.05 above 20 / gib",
            "$0.09 per GiB up to 20 GiB; $0.05 per GiB above 20 GiB",
        ),
        (
            "volume: 0.002 to 1000000; 0.001 above 1000000 / request, min 2.00, max 500",
            "volume pricing: $0.002 per request up to 1,000,000 requests; $0.001 per request "
            "above 1,000,000 requests, minimum $2.00, maximum $500.00",
        ),
        ("5.00 per 1000 request", "$5.00 per 1,000 requests"),
        ("minimum 2500.00 per period", "$2,500.00 minimum per period"),
        ("adjustment of -12.50, less 10%", "Adjustment of -$12.50"),
        ("corrects INV-2026-000001 (2026-09)", "Corrects INV-2026-000001 (2026-09)"),
        ("a wording it does not know", "a wording it does not know"),
    ],
)
def test_stored_pricing_reads_for_people(stored: str, shown: str) -> None:
    assert display_pricing(stored, "USD", "en_US") == shown


def test_quantities_take_the_precision_and_words_of_their_unit() -> None:
    assert measure(Decimal("38830"), "request", "en_US") == "38,830 requests"
    assert measure(Decimal("1"), "session", "en_US") == "1 session"
    assert measure(Decimal("6096.333333333333"), "hour", "en_US") == "6,096.33 hours"
    assert measure(Decimal("32322.4"), "gib_hour", "en_US") == "32,322.400 GiB-hours"
    assert measure(Decimal("0.0001"), "gib", "en_US") == "< 0.001 GiB"
    assert measure(Decimal("4.5"), "gib", "de_DE") == "4,500 GiB"
    assert display_pricing("0.12 / hour", "EUR", "de_DE") == "0,12\xa0€ per hour"
    assert tax_id_label("DE811907980") == "VAT ID"
    assert tax_id_label("12-3456789") == "Tax ID"


def test_payment_and_tax_settings_are_part_of_the_render_key() -> None:
    base = printing_settings(settings())
    assert printing_settings(settings(payment_link=LINK)) != base
    assert printing_settings(settings(payment_bank_details=BANK)) != base
    assert printing_settings(settings(issuer_tax_id="DE123456789")) != base
