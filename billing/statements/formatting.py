"""Numbers and money for people: Babel formats amounts for the currency and locale."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from babel.numbers import format_currency, format_decimal


def money(amount: Decimal, currency: str, locale: str) -> str:
    """$1,234.56, 1.234,56 €, ¥1,235; the amount is already on the currency's minor unit."""
    return str(format_currency(amount, currency, locale=locale))


def quantity(value: Decimal, locale: str, places: int = 4) -> str:
    """A quantity shown to `places` decimals (stored quantities keep 12)."""
    rounded = value.quantize(Decimal(1).scaleb(-places))
    return str(format_decimal(rounded, format="#,##0." + "0" * places, locale=locale))


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
