"""Numbers and money for people: Babel formats amounts for the currency and locale."""

from __future__ import annotations

import unicodedata
from datetime import date, datetime
from decimal import Decimal

from babel.dates import format_date
from babel.numbers import format_currency, format_decimal


def money(amount: Decimal, currency: str, locale: str) -> str:
    """$1,234.56, 1.234,56 €, ¥1,235; the amount is already on the currency's minor unit.

    Fullwidth forms some locales use (ja_JP writes ￥) are folded to their usual characters,
    which the statement fonts have.
    """
    return _fold_fullwidth(str(format_currency(amount, currency, locale=locale)))


def _fold_fullwidth(text: str) -> str:
    """Halfwidth and fullwidth forms (U+FF01-U+FFEE) to their compatibility equivalents."""
    return "".join(
        unicodedata.normalize("NFKC", char) if "\uff01" <= char <= "\uffee" else char
        for char in text
    )


def quantity(value: Decimal, locale: str, places: int = 4) -> str:
    """A quantity shown to `places` decimals (stored quantities keep 12)."""
    rounded = value.quantize(Decimal(1).scaleb(-places))
    return str(format_decimal(rounded, format="#,##0." + "0" * places, locale=locale))


def day(moment: date, locale: str) -> str:
    """A calendar date for people in the locale: Nov 1, 2026 (en_US), 01.11.2026 (de_DE)."""
    return str(format_date(moment, format="medium", locale=locale))


def utc_timestamp(moment: datetime) -> str:
    """2026-10-01T00:00:00Z: the one timestamp format of the CSV files."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


UNIT_LABELS = {
    "hour": "h",
    "gib_hour": "GiB·h",
    "gib": "GiB",
    "period": "",
    "session": "sessions",
    "request": "requests",
    "operation": "operations",
}


def unit_label(unit: str) -> str:
    """How a pricing unit reads on a statement (gib_hour -> GiB·h)."""
    return UNIT_LABELS.get(unit, unit)
