"""PDF statements: content, pagination, locales, page sizes, watermark, chart, overrides, safety."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from billing.config import Settings
from billing.domain import DailyUsage
from billing.statements import pdf as pdf_module
from billing.statements.chart import CHART_TITLE, daily_hours_svg, nice_step
from billing.statements.formatting import day, money
from billing.statements.pdf import SHIPPED_TEMPLATES, StatementRenderer, asset_fetcher
from tests.support.sample_statements import make_statement

ASSETS = SHIPPED_TEMPLATES / "assets"
ISSUER_ADDRESS = "548 Market Street\nSan Francisco, CA 94104\nUSA"
SVG = "{http://www.w3.org/2000/svg}"


def renderer_for(
    locale: str = "en_US",
    page_size: str = "A4",
    override: Path | None = None,
    detail: str = "auto",
) -> StatementRenderer:
    settings = Settings(
        statement_detail=detail,  # type: ignore[arg-type]
        templates_dir=override,
        locale=locale,
        issuer_name="MKA1, Inc.",
        issuer_address=ISSUER_ADDRESS,
        payment_terms_days=30,
        page_size=page_size,  # type: ignore[arg-type]
    )
    return StatementRenderer.from_settings(settings)


@pytest.fixture(scope="module")
def renderer() -> StatementRenderer:
    return renderer_for()


@pytest.fixture(scope="module")
def lines_renderer() -> StatementRenderer:
    """BILLING_STATEMENT_DETAIL=lines: every line printed however many there are."""
    return renderer_for(detail="lines")


def page_texts(pdf: bytes) -> list[str]:
    """Each page's text with non-breaking and thin spaces read as plain spaces."""
    reader = PdfReader(io.BytesIO(pdf))
    return [spaces(page.extract_text()) for page in reader.pages]


def spaces(text: str) -> str:
    return text.replace("\xa0", " ").replace("\u202f", " ")


def flat(text: str) -> str:
    """Text with every whitespace run removed, to compare strings that may wrap."""
    return re.sub(r"\s+", "", text)


def ink_per_page(pdf: bytes, folder: Path) -> list[float]:
    """The share of non-white pixels of each page, rasterised by pdftoppm to greyscale PGM."""
    (folder / "statement.pdf").write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-r", "30", "-gray", str(folder / "statement.pdf"), str(folder / "page")],
        check=True,
        timeout=60,
    )
    shares = []
    for image in sorted(folder.glob("page-*.pgm")):
        data = image.read_bytes()
        header = re.match(rb"P5\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
        assert header is not None, image
        width, height, _maxval = (int(value) for value in header.groups())
        pixels = data[header.end() : header.end() + width * height]
        assert len(pixels) == width * height
        shares.append(sum(1 for value in pixels if value < 200) / (width * height))
    return shares


@pytest.fixture
def recorded_fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every URL any renderer built in the test asks its fetcher for."""
    urls: list[str] = []
    real_fetcher = asset_fetcher

    def recording_fetcher(asset_roots: list[Path]) -> Any:
        fetcher = real_fetcher(asset_roots)
        fetch = fetcher.fetch

        def record(url: str, headers: Any = None) -> Any:
            urls.append(url)
            return fetch(url, headers)

        fetcher.fetch = record
        return fetcher

    monkeypatch.setattr(pdf_module, "asset_fetcher", recording_fetcher)
    return urls


def test_pdf_shows_parties_number_period_dates_meters_and_totals(
    renderer: StatementRenderer,
) -> None:
    statement = make_statement()
    texts = page_texts(renderer.pdf(statement))
    text = flat("\n".join(texts))
    for expected in (
        "MKA1, Inc.",
        "San Francisco, CA 94104",
        "Acme Robotics",
        "Attn: Accounts Payable",
        "Boston, MA",
        "MKA1-2026-10-0042",
        "2026-10",
        day(date(2026, 10, 1), "en_US"),
        day(date(2026, 10, 31), "en_US"),
        "Issue date " + day(date(2026, 11, 2), "en_US"),
        "Due date " + day(date(2026, 12, 2), "en_US"),
        "USD",
        "Session time 6,096.33 hours $0.12 per hour $731.56",
        "Reserved memory 32,322.400 GiB-hours",
        "$0.0125 per GiB-hour",
        "$402.78",
        "100.000 GiB-hours included",
        "$0.09 per GiB up to 20 GiB; $0.05 per GiB above 20 GiB",
        "$0.22",
        "Minimum charge top-up",
        "$1,234.56 minimum per period $100.00",
        money(statement.total, "USD", "en_US"),
        "Amount due $1,234.56",
        "Payment reference: MKA1-2026-10-0042",
        "key_live_0001",
    ):
        assert flat(expected) in text, expected
    assert f"Page {len(texts)} of {len(texts)}" in texts[-1]
    assert "DRAFT" not in text
    # Internal notes stay off the customer's copy; no four-decimal noise, no engineers' units.
    for absent in ("largest", "remainder", "rounded half-up", "0.0000", "gib_hour", "GiB·h"):
        assert absent not in "\n".join(texts), absent
    # Untaxed and without credit: no net/gross rows, only the amount due.
    assert "Net total" not in text


def test_due_date_falls_back_to_payment_terms(renderer: StatementRenderer) -> None:
    statement = replace(make_statement(), due_at=None)
    text = "\n".join(page_texts(renderer.pdf(statement)))
    assert "Due date " + day(date(2026, 12, 2), "en_US") in text  # issued Nov 2 + 30 days


def test_every_page_has_ink_and_nothing_is_broken(
    lines_renderer: StatementRenderer, tmp_path: Path
) -> None:
    shares = ink_per_page(lines_renderer.pdf(make_statement(line_count=120)), tmp_path)
    assert len(shares) >= 3
    assert all(share > 0.01 for share in shares), shares
    assert all(share < 0.6 for share in shares), shares


@pytest.mark.parametrize(
    "payload",
    [
        '<img src="file:///etc/passwd">',
        '<link rel=attachment href="file:///etc/passwd">',
        '"><style>body{display:none}</style><script>alert(1)</script>',
    ],
)
def test_markup_in_user_text_prints_literally_and_fetches_only_assets(
    payload: str, recorded_fetches: list[str]
) -> None:
    renderer = renderer_for()
    statement = make_statement(
        org_name=payload,
        billing_address=payload + "\n" + "url(file:///etc/shadow)",
        api_key_prefix=payload,
        user_prefix=payload,
        line_count=4,
    )
    html = renderer.html(statement)
    assert payload not in html
    pdf = renderer.pdf(statement)
    text = flat("\n".join(page_texts(pdf)))
    assert flat(payload) in text
    assert flat("url(file:///etc/shadow)") in text
    assert recorded_fetches, "the logo and stylesheet come through the fetcher"
    for url in recorded_fetches:
        assert url.startswith("file://"), url
        assert Path(url.removeprefix("file://")).resolve().is_relative_to(ASSETS.resolve()), url
    assert not any(url.endswith(".css") for url in recorded_fetches)  # compiled beforehand
    assert b"/EmbeddedFile" not in pdf


def test_fetcher_refuses_everything_outside_the_assets() -> None:
    fetcher = asset_fetcher([ASSETS])
    for url in (
        "file:///etc/passwd",
        (ASSETS / ".." / ".." / "pyproject.toml").as_uri(),
        ASSETS.as_uri() + "/../statement.html",
        "file://example.com" + str(ASSETS / "logo.svg"),
        "http://127.0.0.1:9/logo.svg",
        "https://example.com/x.css",
        "data:image/svg+xml,<svg xmlns='http://www.w3.org/2000/svg'/>",
        "ftp://example.com/x",
        "assets/logo.svg",
    ):
        with pytest.raises(ValueError, match="refuses"):
            fetcher.fetch(url)
    served = fetcher.fetch((ASSETS / "logo.svg").as_uri())
    assert served.content_type == "image/svg+xml"
    assert b"<svg" in served.read()


def test_control_bidi_zero_width_and_very_long_text_render_safely(
    renderer: StatementRenderer, tmp_path: Path
) -> None:
    long_name = "Very" + "Long" * 150 + "Organisation"
    org_name = (
        "Ac\x00me\x07 \u202eevil\u202c \u05e9\u05dc\u05d5\u05dd "
        "\u0645\u0631\u062d\u0628\u0627 Zero\u200bWidth\ufeff"
    )
    statement = make_statement(
        org_name=org_name + " " + long_name,
        api_key_prefix="key_" + "x" * 300 + "\x1b[31m",
        user_prefix="\u202euser\u2066",
        billing_address="Line one\x0b\x0c\nרחוב הרצל 1\n" + "A" * 400,
        line_count=12,
    )
    html = renderer.html(statement)
    for hidden in ("\x00", "\x07", "\x1b", "\x0b", "\x0c", "\u202e", "\u202c", "\u2066"):
        assert hidden not in html
    pdf = renderer.pdf(statement)
    texts = page_texts(pdf)
    text = flat("\n".join(texts))
    assert "Acme" in text
    assert "MKA1-2026-10-0042" in text
    assert money(statement.total, "USD", "en_US") in spaces("\n".join(texts))
    assert flat(long_name)[:200] in text
    shares = ink_per_page(pdf, tmp_path)
    assert all(share > 0.01 for share in shares), shares


def test_two_thousand_lines_paginate_with_repeated_headers(
    lines_renderer: StatementRenderer,
) -> None:
    statement = make_statement(line_count=2000)
    texts = page_texts(lines_renderer.pdf(statement))
    pages = len(texts)
    assert pages >= 20
    breakdown_pages = [i for i, text in enumerate(texts) if "key_live_" in text]
    assert breakdown_pages == list(range(breakdown_pages[0], pages))
    for index in breakdown_pages:
        assert "API KEY" in texts[index], index
        assert "QUANTITY" in texts[index], index
        assert f"Page {index + 1} of {pages}" in texts[index]
    assert f"Page {pages} of {pages}" in texts[-1]
    assert "Total of lines" in texts[-1]
    assert "key_live_0499" in texts[-1]  # the last API key closes the breakdown
    listed = sum(len(re.findall(r"key_live_\d{4}", text)) for text in texts)
    assert listed == 2000


@pytest.mark.parametrize(
    ("locale", "currency", "expected"),
    [
        ("en_US", "USD", ["$1,234.56", "$731.56"]),
        ("de_DE", "EUR", ["1.234,56 €", "731,56 €"]),
        ("ja_JP", "JPY", ["¥123,456", "¥73,156"]),
    ],
)
def test_amounts_follow_currency_and_locale(
    locale: str, currency: str, expected: list[str]
) -> None:
    statement = make_statement(currency=currency)
    text = "\n".join(page_texts(renderer_for(locale=locale).pdf(statement)))
    assert spaces(money(statement.total, currency, locale)) == expected[0]
    for amount in expected:
        assert amount in text, (amount, locale)
    assert day(date(2026, 11, 2), locale) in text


def test_money_formats_the_three_reference_amounts() -> None:
    assert money(Decimal("1234.56"), "USD", "en_US") == "$1,234.56"
    assert money(Decimal("1234.56"), "EUR", "de_DE") == "1.234,56\xa0€"
    assert money(Decimal("1235"), "JPY", "ja_JP") == "¥1,235"


@pytest.mark.parametrize(
    ("page_size", "width", "height"), [("A4", 595.28, 841.89), ("Letter", 612, 792)]
)
def test_page_size_setting(page_size: str, width: float, height: float) -> None:
    pdf = renderer_for(page_size=page_size).pdf(make_statement())
    for page in PdfReader(io.BytesIO(pdf)).pages:
        assert float(page.mediabox.width) == pytest.approx(width, abs=1)
        assert float(page.mediabox.height) == pytest.approx(height, abs=1)


def test_draft_watermark_on_every_page_only_for_drafts(lines_renderer: StatementRenderer) -> None:
    draft_pages = page_texts(lines_renderer.pdf(make_statement(draft=True, line_count=150)))
    assert len(draft_pages) >= 3
    assert all("DRAFT" in text for text in draft_pages)
    final_pages = page_texts(lines_renderer.pdf(make_statement(draft=False, line_count=150)))
    assert not any("DRAFT" in text for text in final_pages)


def test_chart_has_one_bar_per_day_with_proportional_heights() -> None:
    usage = [
        DailyUsage(date(2026, 2, 3), 10 * 3_600_000),
        DailyUsage(date(2026, 2, 1), 5 * 3_600_000),
        DailyUsage(date(2026, 2, 28), 2_700_000),
    ]
    svg = daily_hours_svg(usage, date(2026, 2, 1), date(2026, 3, 1))
    root = ElementTree.fromstring(svg)  # noqa: S314 - our own SVG
    assert root.findtext(f"{SVG}title") == CHART_TITLE
    bars = root.findall(f".//{SVG}rect[@class='bar']")
    assert [bar.get("data-day") for bar in bars] == [
        date(2026, 2, d).isoformat() for d in range(1, 29)
    ]
    heights = {bar.get("data-day"): Decimal(bar.get("height", "")) for bar in bars}
    assert heights["2026-02-03"] == 2 * heights["2026-02-01"] > 0
    assert heights["2026-02-28"] == pytest.approx(
        heights["2026-02-01"] * Decimal("0.15"), abs=Decimal("0.02")
    )
    assert heights["2026-02-02"] == 0
    labels = [text.text for text in root.findall(f".//{SVG}text[@class='scale']")]
    assert labels == ["0 h", "5 h", "10 h", "15 h", "20 h"]
    days = [text.text for text in root.findall(f".//{SVG}text[@class='day']")]
    assert days == [str(d) for d in range(1, 29)]


def test_chart_of_an_idle_month_has_zero_bars_and_a_scale() -> None:
    svg = daily_hours_svg([], date(2026, 10, 1), date(2026, 11, 1))
    root = ElementTree.fromstring(svg)  # noqa: S314 - our own SVG
    bars = root.findall(f".//{SVG}rect[@class='bar']")
    assert len(bars) == 31
    assert all(Decimal(bar.get("height", "")) == 0 for bar in bars)
    assert nice_step(Decimal(0)) == 1
    assert nice_step(Decimal(37)) == 10
    assert nice_step(Decimal("0.3")) == Decimal("0.1")


def test_chart_is_embedded_in_the_pdf(renderer: StatementRenderer) -> None:
    statement = make_statement()
    html = renderer.html(statement)
    assert html.count('<rect class="bar"') == 31
    text = "\n".join(page_texts(renderer.pdf(statement)))
    assert CHART_TITLE in text
    assert "40 h" in text  # the scale's top label (peak day is 39 h)


def test_override_folder_replaces_template_stylesheet_and_logo(
    tmp_path: Path, recorded_fetches: list[str]
) -> None:
    override = tmp_path / "override"
    (override / "assets").mkdir(parents=True)
    shipped_template = (SHIPPED_TEMPLATES / "statement.html").read_text(encoding="utf-8")
    (override / "statement.html").write_text(
        shipped_template.replace("Sandbox usage statement", "Custom override layout"),
        encoding="utf-8",
    )
    shipped_css = (ASSETS / "statement.css").read_text(encoding="utf-8")
    (override / "assets" / "statement.css").write_text(
        shipped_css + '\n@page { @top-center { content: "Override stylesheet in use"; } }\n',
        encoding="utf-8",
    )
    shutil.copy(ASSETS / "logo.svg", override / "assets" / "logo.svg")
    renderer = renderer_for(override=override)
    text = "\n".join(page_texts(renderer.pdf(make_statement())))
    assert "Custom override layout" in text
    assert "Sandbox usage statement" not in text
    assert "Override stylesheet in use" in text
    override_assets = (override / "assets").resolve()
    assert [Path(url.removeprefix("file://")).name for url in recorded_fetches] == ["logo.svg"]
    for url in recorded_fetches:
        assert Path(url.removeprefix("file://")).resolve().is_relative_to(override_assets), url


def test_override_folder_without_assets_falls_back_to_shipped_ones(tmp_path: Path) -> None:
    text = "\n".join(page_texts(renderer_for(override=tmp_path).pdf(make_statement())))
    assert "Sandbox usage statement" in text
    assert "MKA1-2026-10-0042" in text
