"""Upstream data on the terminal: printed literally (never as console markup), control
characters escaped, CSV and JSON cells exact; and how counts and ranges read."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from rich.console import Console

from billing.cli.console import csv_cell, literal, plain, shown
from billing.wording import plural, span

HOSTILE = ("[bold red]x[/]", "acme[/b]", "evil\x1b[2J", "rtl\u202egpj.exe", "a\nb", "smile :smile:")


def printed(markup: str) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200, emoji=False, highlight=False).print(markup)
    return buffer.getvalue()


@pytest.mark.parametrize("text", HOSTILE)
def test_data_in_markup_prints_as_stored_with_controls_escaped(text: str) -> None:
    line = printed(f"org {literal(text)}: already finalized")
    assert line == f"org {shown(text)}: already finalized\n"
    assert "\x1b" not in line
    assert "\u202e" not in line


def test_control_characters_are_written_as_their_escapes() -> None:
    assert shown("evil\x1b[2J") == "evil\\x1b[2J"
    assert shown("a\nb\tc") == "a\\nb\\tc"
    assert shown("rtl\u202egpj") == "rtl\\u202egpj"
    assert shown("Friedrichstraße 68") == "Friedrichstraße 68"


def test_csv_cells_keep_amounts_exact_and_defuse_formulas() -> None:
    assert csv_cell(Decimal("712.020")) == "712.020"
    assert csv_cell(Decimal("-5.38")) == "-5.38"
    assert csv_cell(7) == "7"
    assert csv_cell(None) == ""
    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert csv_cell("evil\x1b[2J") == "evil\\x1b[2J"


def test_json_values_carry_money_as_decimal_strings() -> None:
    encoded = json.dumps(plain({"total": Decimal("0.10"), "rows": [Decimal("1E+2")]}))
    assert json.loads(encoded) == {"total": "0.10", "rows": ["100"]}


def test_counts_and_ranges_read_correctly() -> None:
    assert plural(1, "invoice") == "1 invoice"
    assert plural(0, "invoice") == "0 invoices"
    assert plural(3, "delivery", "deliveries") == "3 deliveries"
    assert span("INV-2026-000004", "INV-2026-000004") == "INV-2026-000004"
    assert span("INV-2026-000001", "INV-2026-000003") == "INV-2026-000001 to INV-2026-000003"
