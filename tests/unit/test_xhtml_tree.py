"""The optimised print path's tree, built by expat, is the tree WeasyPrint's HTML parser
(tinyhtml5) builds from the same printed HTML; anything expat cannot build the same way, and any
other WeasyPrint release, goes to the HTML parser and still prints."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from functools import cache, partial
from typing import Any
from xml.etree import ElementTree

import pytest
import tinyhtml5
import weasyprint

from billing.credit_notes import CreditNoteDocument, CreditNoteDocumentLine
from billing.domain import Statement
from billing.statements import pdf as pdf_module
from billing.statements.breakdown import BreakdownRule
from billing.statements.formatting import PaymentInstructions
from billing.statements.pdf import StatementRenderer, printable
from billing.statements.printed_html import (
    CHECKED_WEASYPRINT,
    html_document,
    without_block_whitespace,
    xhtml_tree,
)
from tests.support.factories import statement as bare_statement
from tests.support.sample_statements import (
    REVERSE_CHARGE,
    SIZES,
    SampleTax,
    make_statement,
    sample_credit_note,
    sample_statement,
)

ISSUER = ("en_US", "MKA1, Inc.", "548 Market Street\nSan Francisco, CA 94104\nUSA")
# User text that is markup, references, XML's own syntax, controls, bidi, tabs and newlines.
HOSTILE = (
    "<b>&amp;</b> \"q\" 's' & < > ]]> <!-- c --> <![CDATA[x]]> &nbsp; &#128; <br> <p/>"
    "\x00\x01\x0b\x0c\x1b\x7f\x85\x9f\u202e\u2066\u200b\ufeff\t\r\n tab"
)
NAMES = {
    "greek": "Ακμή Ρομποτική Α.Ε.",
    "arabic": "شركة الرياض للتقنية",
    "hebrew": "רובוטיקה בע״מ",
    "cjk": "深圳机器人有限公司 東京ロボティクス 로보틱스",
    "astral": "𝔄𝔠𝔪𝔢 🤖 \U0010fffd \ufdd0",
}
PAYMENT = PaymentInstructions(
    "IBAN DE89 3704 0044 0532 0130 00; BIC COBADEFFXXX",
    "https://pay.example/{invoice_number}?a=1&b=2",
)


class Handed(Exception):
    """Raised by the stand-in for html_document with the HTML a print hands it."""

    def __init__(self, html: str) -> None:
        super().__init__("handed")
        self.html = html


def handed_html(print_one: Callable[[], bytes]) -> str:
    """The HTML the optimised path hands `html_document` for one print (the print stops there)."""

    def stop(html: str, base_url: str, url_fetcher: Any) -> Any:
        raise Handed(html)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pdf_module, "html_document", stop)
        with pytest.raises(Handed) as handed:
            print_one()
    return handed.value.html


def renderer(**options: Any) -> StatementRenderer:
    made = StatementRenderer(None, *options.pop("issuer", ISSUER), **options)
    assert made.optimised
    return made


@cache
def renderers(kind: str) -> StatementRenderer:
    """The renderers the documents print with, built once, on first use."""
    return {
        "auto": lambda: renderer(),
        "lines": lambda: renderer(breakdown=BreakdownRule("lines")),
        "paying": lambda: renderer(payment=PAYMENT, issuer_tax_id="DE987654321"),
        "unclickable": lambda: renderer(
            payment=PaymentInstructions("", "pay.example/{invoice_number}")
        ),
        "french": lambda: renderer(
            issuer=("fr_FR", "MKA1 SAS", "1 rue de la Paix\nParis"), payment=PAYMENT
        ),
        "hostile issuer": lambda: renderer(
            issuer=("en_US", HOSTILE, HOSTILE), issuer_tax_id=HOSTILE
        ),
    }[kind]()


def statement_print(kind: str, make: Callable[[], Statement]) -> Callable[[], bytes]:
    return lambda: renderers(kind).pdf(make())


def note_print(make: Callable[[], CreditNoteDocument]) -> Callable[[], bytes]:
    return lambda: renderers("auto").credit_note_pdf(make())


def statements() -> Iterator[tuple[str, Callable[[], bytes]]]:
    """Statement prints of every shape the template has a branch for."""
    for size, count in SIZES.items():
        yield size, statement_print("lines", partial(sample_statement, count))
    yield "200 lines by key", statement_print("auto", partial(sample_statement, 200))
    yield "draft", statement_print("lines", partial(sample_statement, 6, draft=True))
    yield "void", statement_print("lines", lambda: replace(make_statement(), status="void"))
    yield (
        "replaces",
        statement_print("lines", lambda: replace(make_statement(), replaces="INV-2026-000000")),
    )
    everything = partial(
        make_statement,
        discount_percent=Decimal(10),
        corrections=True,
        credit=Decimal(25),
        taxes=(SampleTax(), REVERSE_CHARGE),
        purchase_order="PO-7",
        customer_tax_id="DE123456789",
        customer_country="DE",
    )
    yield "discount, corrections, taxes, credit", statement_print("paying", everything)
    yield "JPY", statement_print("paying", partial(make_statement, currency="JPY"))
    yield "no usage", statement_print("lines", bare_statement)
    yield "unclickable link", statement_print("unclickable", make_statement)
    yield "fr_FR", statement_print("french", partial(make_statement, taxes=(SampleTax(),)))
    hostile = partial(
        make_statement,
        org_name=HOSTILE,
        billing_address=HOSTILE + "\n" + HOSTILE,
        api_key_prefix=HOSTILE,
        user_prefix=HOSTILE,
        line_count=4,
        purchase_order=HOSTILE,
        customer_tax_id=HOSTILE,
        invoice_number=HOSTILE,
    )
    yield "hostile", statement_print("paying", hostile)
    yield "hostile issuer", statement_print("hostile issuer", make_statement)
    for script, name in NAMES.items():
        yield script, statement_print("lines", partial(make_statement, org_name=name))


def credit_notes() -> Iterator[tuple[str, Callable[[], bytes]]]:
    yield "credit note", note_print(sample_credit_note)
    taxed = partial(
        sample_credit_note,
        settlement="credit",
        purchase_order="PO-7",
        customer_tax_id="DE123456789",
        lines=(
            *sample_credit_note().lines,
            CreditNoteDocumentLine(
                "duration", "Session time", "hour", "correction", "k", None, Decimal(1)
            ),
            CreditNoteDocumentLine("de-vat", "VAT 19%", "", "tax", None, None, Decimal("0.57")),
        ),
    )
    yield "taxed credit note", note_print(taxed)
    hostile = partial(
        sample_credit_note,
        org_name=HOSTILE,
        reason=HOSTILE,
        billing_address=HOSTILE,
        number=HOSTILE,
        emails=(HOSTILE,),
        lines=(
            CreditNoteDocumentLine("m", HOSTILE, "hour", "usage", HOSTILE, HOSTILE, Decimal(3)),
        ),
    )
    yield "hostile credit note", note_print(hostile)
    yield "arabic credit note", note_print(partial(sample_credit_note, org_name=NAMES["arabic"]))


DOCUMENTS = dict([*statements(), *credit_notes()])


def difference(html: ElementTree.Element, xml: ElementTree.Element, path: str) -> str | None:
    """Where the two trees first differ (tag, attributes, text, tail, children), else None."""
    if html.tag != xml.tag:
        return f"{path}: <{html.tag}> from HTML, <{xml.tag}> from XML"
    for part in ("attrib", "text", "tail"):
        ours, theirs = getattr(html, part), getattr(xml, part)
        if ours != theirs:
            return f"{path}: {part} {ours!r} from HTML, {theirs!r} from XML"
    if len(html) != len(xml):
        return (
            f"{path}: children {[c.tag for c in html]} from HTML, {[c.tag for c in xml]} from XML"
        )
    for index, (a, b) in enumerate(zip(html, xml, strict=True)):
        found = difference(a, b, f"{path}/{a.tag}[{index}]")
        if found:
            return found
    return None


@pytest.mark.parametrize("name", list(DOCUMENTS))
def test_expat_builds_the_html_parsers_tree(name: str) -> None:
    html = handed_html(DOCUMENTS[name])
    assert html == without_block_whitespace(html)  # what the optimised path hands over
    tree = xhtml_tree(html)
    assert tree is not None, f"{name}: the printed HTML is not well-formed XML"
    parsed = tinyhtml5.parse(html, namespace_html_elements=False)
    assert difference(parsed, tree, "html") is None
    assert len(list(tree.iter())) > 50


def test_hostile_text_stays_text() -> None:
    tree = xhtml_tree(handed_html(DOCUMENTS["hostile"]))
    assert tree is not None
    names = [e.text for e in tree.iter("div") if e.get("class") == "org-name"]
    assert names == [printable(HOSTILE)]
    assert tree.find(".//b") is None
    assert tree.find(".//br") is None


def test_the_checked_release_is_the_installed_one() -> None:
    """A WeasyPrint upgrade turns the expat path off silently; this says so. Check the new
    release's HTML.__init__ against printed_html._document_of_tree, run this file and
    test_pdf_pixels.py, then move CHECKED_WEASYPRINT (and uv.lock's pin) together."""
    assert weasyprint.__version__ == CHECKED_WEASYPRINT


@pytest.fixture
def html_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The documents WeasyPrint hands its HTML parser (tinyhtml5) from now on."""
    parsed: list[str] = []
    parse = tinyhtml5.parse

    def recorded(document: Any, **options: Any) -> Any:
        parsed.append(document.getvalue() if hasattr(document, "getvalue") else document)
        return parse(document, **options)

    monkeypatch.setattr(tinyhtml5, "parse", recorded)
    return parsed


def test_the_document_is_what_weasyprints_own_parse_makes(html_parses: list[str]) -> None:
    html = handed_html(DOCUMENTS["median"])
    base_url, fetcher = "file:///work/templates/", object()
    ours = html_document(html, base_url, fetcher)
    assert html_parses == []
    theirs = weasyprint.HTML(string=html, base_url=base_url, url_fetcher=fetcher)
    assert html_parses == [html]
    assert type(ours) is type(theirs)
    assert sorted(vars(ours)) == sorted(vars(theirs))
    for name in ("base_url", "url_fetcher", "media_type"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.wrapper_element.etree_element is ours.etree_element
    assert ours.wrapper_element.in_html_document == theirs.wrapper_element.in_html_document
    assert difference(theirs.etree_element, ours.etree_element, "html") is None


def test_another_weasyprint_release_parses_with_its_own_parser(
    html_parses: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prints = renderer()
    statement = make_statement()
    before = prints.pdf(statement)
    assert html_parses == []
    monkeypatch.setattr(weasyprint, "__version__", "71.0")
    after = prints.pdf(statement)
    assert len(html_parses) == 1
    assert len(after) > 1000
    assert after.startswith(b"%PDF")
    assert len(before) > 1000


@pytest.mark.parametrize(
    "html",
    [
        # Not well-formed: HTML's void and unclosed elements, entities XML does not know.
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body><p>a<br>b</p></body></html>",
        "<html><body><p>a&nbsp;b</p></body></html>",
        "<!doctype html><html><body><p>a</p></body></html>",
        "<html><body><p>a \ufffe b</p></body></html>",
        "<html><body><p>a \ud800 b</p></body></html>",
        # Well-formed, but XML would turn the tab or newline in the attribute into a space.
        '<html><body><a href="https://pay.example/\tx">pay</a></body></html>',
        '<html><body><div class="a\nb">x</div></body></html>',
    ],
)
def test_what_expat_would_build_otherwise_goes_to_the_html_parser(
    html: str, html_parses: list[str]
) -> None:
    assert xhtml_tree(html) is None
    document = html_document(html, "file:///work/templates/", None)
    assert html_parses == [html]
    assert document.etree_element.tag == "html"
    assert document.etree_element.find("body") is not None


def test_a_payment_link_with_a_tab_prints_through_the_html_parser(
    html_parses: list[str],
) -> None:
    prints = renderer(payment=PaymentInstructions("", "https://pay.example/\t{invoice_number}"))
    statement = make_statement()
    html = handed_html(lambda: prints.pdf(statement))
    assert "https://pay.example/\tMKA1-2026-10-0042" in html
    assert prints.pdf(statement).startswith(b"%PDF")
    assert len(html_parses) == 1
    href = tinyhtml5.parse(html_parses[0], namespace_html_elements=False).find(".//a")
    assert href is not None
    assert href.get("href", "").startswith("https://pay.example/\t")


def test_text_xml_refuses_prints_through_the_html_parser(html_parses: list[str]) -> None:
    pdf = renderer().pdf(make_statement(org_name="Acme \ufffe Robotics"))
    assert pdf.startswith(b"%PDF")
    assert len(html_parses) == 1
