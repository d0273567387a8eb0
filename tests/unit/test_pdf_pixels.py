"""The optimised print path draws the same pixels as the plain one, page by page; its tree is
built by expat, the plain path's by WeasyPrint's HTML parser (tinyhtml5)."""

from __future__ import annotations

import io
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import tinyhtml5
from pypdf import PdfReader

from billing.statements.breakdown import BreakdownRule
from billing.statements.pdf import SHIPPED_TEMPLATES, StatementRenderer
from billing.statements.printed_html import without_block_whitespace
from tests.support.sample_statements import (
    SIZES,
    make_statement,
    sample_credit_note,
    sample_statement,
)

ISSUER = ("en_US", "MKA1, Inc.", "548 Market Street\nSan Francisco, CA 94104\nUSA")
# User text that is markup, references, controls and bidi, and names in other scripts.
HOSTILE = "<b>&amp;</b> \"q\" 's' & < > ]]> <!-- c --> &nbsp; <br>\x01\x1b\x85\u202e\u200b\t end"
SCRIPTS = (
    "شركة الرياض للتقنية",
    "רובוטיקה בע״מ",
    "深圳机器人有限公司 東京ロボティクス",
    "ООО «Акме»",
)
STRIPED_ROW = '<tr{% if loop.index is even %} class="even"{% endif %}>'
# The shipped files as they were before the same-look changes: rows striped by :nth-child and
# the chart styled as an inline <svg>.
BEFORE_CSS = {
    "table.lines tbody tr.even td": "table.lines tbody tr:nth-child(even) td",
    ".usage-chart .chart {": ".usage-chart svg {",
}


def before_changes(folder: Path) -> Path:
    """An override folder holding the statement template and stylesheet with the same-look
    changes undone: an override folder's own copies always print through the plain path."""
    template = (SHIPPED_TEMPLATES / "statement.html").read_text(encoding="utf-8")
    assert template.count(STRIPED_ROW) >= 1
    (folder / "assets").mkdir(parents=True)
    (folder / "statement.html").write_text(template.replace(STRIPED_ROW, "<tr>"), "utf-8")
    css = (SHIPPED_TEMPLATES / "assets" / "statement.css").read_text(encoding="utf-8")
    for now, before in BEFORE_CSS.items():
        assert css.count(now) == 1, now
        css = css.replace(now, before)
    (folder / "assets" / "statement.css").write_text(css, "utf-8")
    return folder


def pages(pdf: bytes, folder: Path, name: str) -> list[bytes]:
    """Every page rasterised by pdftoppm (100 dpi, greyscale PGM)."""
    (folder / f"{name}.pdf").write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-r", "100", "-gray", str(folder / f"{name}.pdf"), str(folder / name)],
        check=True,
        timeout=120,
    )
    return [image.read_bytes() for image in sorted(folder.glob(f"{name}-*.pgm"))]


def texts(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


@pytest.fixture
def html_parses(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The documents WeasyPrint hands its HTML parser (tinyhtml5) from now on: none for an
    optimised print, whose tree expat builds (printed_html.html_document)."""
    parsed: list[object] = []
    parse = tinyhtml5.parse

    def recorded(document: Any, **options: Any) -> Any:
        parsed.append(document)
        return parse(document, **options)

    monkeypatch.setattr(tinyhtml5, "parse", recorded)
    return parsed


@pytest.mark.parametrize(
    ("size", "detail"),
    [(size, "lines") for size in SIZES] + [("200 lines", "auto")],
)
def test_optimised_statement_has_the_plain_paths_pixels_and_text(
    size: str, detail: str, tmp_path: Path, html_parses: list[object]
) -> None:
    rule = BreakdownRule(detail)  # type: ignore[arg-type]
    optimised = StatementRenderer(None, *ISSUER, breakdown=rule)
    plain = StatementRenderer(before_changes(tmp_path / "before"), *ISSUER, breakdown=rule)
    statement = sample_statement(SIZES[size])
    assert optimised.optimised
    assert not plain.optimised
    fast = optimised.pdf(statement)
    assert html_parses == []
    slow = plain.pdf(statement)
    assert len(html_parses) == 1
    fast_pages, slow_pages = pages(fast, tmp_path, "optimised"), pages(slow, tmp_path, "plain")
    assert len(fast_pages) == len(slow_pages) >= 1
    for number, (fast_page, slow_page) in enumerate(zip(fast_pages, slow_pages, strict=True)):
        assert fast_page == slow_page, f"{size}: page {number + 1} differs"
    assert texts(fast) == texts(slow)
    assert "40 h" in "".join(texts(fast))  # the chart's scale, drawn from the SVG image


def test_optimised_switch_off_matches_too(tmp_path: Path) -> None:
    """`optimised=False` on shipped files: the chart inline, the whitespace kept, the tree
    parsed by WeasyPrint."""
    statement = sample_statement(SIZES["median"])
    renderers = StatementRenderer(None, *ISSUER), StatementRenderer(None, *ISSUER, optimised=False)
    assert [renderer.optimised for renderer in renderers] == [True, False]
    on, off = (renderer.pdf(statement) for renderer in renderers)
    assert pages(on, tmp_path, "on") == pages(off, tmp_path, "off")


@pytest.mark.parametrize("text", ["hostile", "scripts"])
def test_optimised_statement_of_hostile_or_other_script_text_has_the_plain_paths_pixels(
    text: str, tmp_path: Path, html_parses: list[object]
) -> None:
    names = [HOSTILE] * 4 if text == "hostile" else list(SCRIPTS)
    statement = make_statement(
        org_name=names[0],
        billing_address="\n".join(names),
        api_key_prefix=names[1],
        user_prefix=names[2],
        purchase_order=names[3],
        line_count=12,
        draft=True,
    )
    on = StatementRenderer(None, *ISSUER).pdf(statement)
    assert html_parses == []
    off = StatementRenderer(None, *ISSUER, optimised=False).pdf(statement)
    assert len(html_parses) == 1
    assert pages(on, tmp_path, "on") == pages(off, tmp_path, "off")
    assert texts(on) == texts(off)


@pytest.mark.parametrize("text", ["plain", "hostile", "scripts"])
def test_optimised_credit_note_has_the_plain_paths_pixels(
    text: str, tmp_path: Path, html_parses: list[object]
) -> None:
    note = sample_credit_note()
    if text != "plain":
        names = [HOSTILE] * 4 if text == "hostile" else list(SCRIPTS)
        note = replace(
            note,
            org_name=names[0],
            reason=names[1],
            billing_address="\n".join(names),
            purchase_order=names[3],
        )
    on = StatementRenderer(None, *ISSUER).credit_note_pdf(note)
    assert html_parses == []
    off = StatementRenderer(None, *ISSUER, optimised=False).credit_note_pdf(note)
    assert len(html_parses) == 1
    assert pages(on, tmp_path, "on") == pages(off, tmp_path, "off")
    assert texts(on) == texts(off)


def test_whitespace_is_removed_only_beside_block_tags() -> None:
    html = (
        "<table>\n  <tr>\n    <td class='num'>1.5 <span class='unit'>h</span>\n    </td>\n"
        "  </tr>\n</table>\n<p><b>a</b> <i>b</i></p>\n<pre>\n  <b>x</b>\n</pre>\n"
        "<svg><text>1</text> <text>2</text></svg>"
    )
    assert without_block_whitespace(html) == (
        "<table><tr><td class='num'>1.5 <span class='unit'>h</span></td></tr></table>"
        "<p><b>a</b> <i>b</i></p>\n<pre>\n  <b>x</b>\n</pre>\n"
        "<svg><text>1</text> <text>2</text></svg>"
    )
