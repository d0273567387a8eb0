"""The statement typeface: Inter with tabular figures, and fallbacks so that org names in Greek,
Cyrillic, Arabic and CJK print in real glyphs, never as empty boxes (.notdef)."""

from __future__ import annotations

import io
import re
import subprocess
import unicodedata
from functools import cache
from pathlib import Path

import pytest
from fontTools.ttLib import TTFont
from pypdf import PdfReader

from billing.statements.pdf import SHIPPED_TEMPLATES, StatementRenderer
from tests.support.sample_statements import make_statement

STYLESHEET = SHIPPED_TEMPLATES / "assets" / "statement.css"
# An org name per script, and the family whose embedded subset must hold its glyphs.
NAMES = {
    "greek": ("Ακμή Ρομποτική Α.Ε.", "Inter"),
    "cyrillic": ("ООО «Акме Роботикс»", "Inter"),
    "arabic": ("شركة الرياض للتقنية", "DejaVu"),
    "cjk": ("深圳机器人有限公司 東京ロボティクス 로보틱스", "WenQuanYi"),
}


@cache
def forms(char: str) -> frozenset[int]:
    """A character and its Arabic presentation forms (what shaping may draw it as)."""
    shaped = (
        code
        for block in (range(0xFB50, 0xFE00), range(0xFE70, 0xFF00))
        for code in block
        if unicodedata.normalize("NFKC", chr(code)) == char
    )
    return frozenset({ord(char), *shaped})


@pytest.fixture(scope="module")
def renderer() -> StatementRenderer:
    return StatementRenderer(None, "en_US", "MKA1, Inc.")


def embedded_fonts(pdf: bytes) -> dict[str, set[int]]:
    """Each embedded font's name (subset prefix dropped) and the code points its program maps
    to a glyph: a character no embedded font maps was drawn as .notdef, an empty box."""
    fonts: dict[str, set[int]] = {}
    for page in PdfReader(io.BytesIO(pdf)).pages:
        for reference in page["/Resources"]["/Font"].values():
            font = reference.get_object()
            name = str(font["/BaseFont"]).split("+", 1)[-1]
            if name in fonts:
                continue
            described = (
                font["/DescendantFonts"][0].get_object() if "/DescendantFonts" in font else font
            )
            descriptor = described["/FontDescriptor"].get_object()
            key = next(k for k in ("/FontFile2", "/FontFile3", "/FontFile") if k in descriptor)
            program = TTFont(io.BytesIO(descriptor[key].get_object().get_data()))
            fonts[name] = {
                code for code, glyph in (program.getBestCmap() or {}).items() if glyph != ".notdef"
            }
    return fonts


@pytest.mark.parametrize("script", list(NAMES))
def test_org_names_in_other_scripts_print_in_real_glyphs(
    renderer: StatementRenderer, script: str, tmp_path: Path
) -> None:
    name, family = NAMES[script]
    pdf = renderer.pdf(make_statement(org_name=name, line_count=2))
    fonts = embedded_fonts(pdf)
    covering = [font for font in fonts if font.startswith(family)]
    assert covering, (script, sorted(fonts))
    for char in name:
        if char.isspace():
            continue
        holders = [font for font, codes in fonts.items() if codes & forms(char)]
        assert holders, f"{script}: {char!r} (U+{ord(char):04X}) has no glyph in {sorted(fonts)}"
    # pdftotext (poppler) reads the name back: the glyphs carry their characters.
    path = tmp_path / "statement.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    if script == "arabic":  # extracted in visual order by some poppler versions
        assert set(name.replace(" ", "")) <= set(text), script
    else:
        assert re.sub(r"\s+", "", name) in re.sub(r"\s+", "", text), script


def test_latin_text_and_amounts_are_set_in_inter_with_tabular_figures(
    renderer: StatementRenderer,
) -> None:
    fonts = embedded_fonts(renderer.pdf(make_statement()))
    assert any(font.startswith("Inter") for font in fonts), sorted(fonts)
    css = STYLESHEET.read_text(encoding="utf-8")
    assert re.search(r'html \{ font-family: "Inter", "DejaVu Sans", "WenQuanYi Micro Hei"', css)
    assert re.search(r"td\.num \{[^}]*font-variant-numeric: tabular-nums", css)
    inter = Path("/usr/share/fonts/opentype/inter/Inter-Regular.otf")
    if inter.is_file():  # the packaged font has the feature the stylesheet asks for
        features = {
            record.FeatureTag for record in TTFont(inter)["GSUB"].table.FeatureList.FeatureRecord
        }
        assert "tnum" in features
