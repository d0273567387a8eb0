"""Numbers and money for people: Babel formats amounts for the currency and locale."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from urllib.parse import quote, urlsplit

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
    """A quantity shown to `places` decimals (stored quantities keep 12), grouped."""
    rounded = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    pattern = "#,##0." + "0" * places if places else "#,##0"
    return str(format_decimal(rounded, format=pattern, locale=locale))


def day(moment: date, locale: str) -> str:
    """A calendar date for people in the locale: Nov 1, 2026 (en_US), 01.11.2026 (de_DE)."""
    return str(format_date(moment, format="medium", locale=locale))


def month(moment: date, locale: str) -> str:
    """A billing month for people in the locale: October 2026 (en_US), Oktober 2026 (de_DE)."""
    return str(format_date(moment, format="LLLL yyyy", locale=locale))


def utc_timestamp(moment: datetime) -> str:
    """2026-10-01T00:00:00Z: the one timestamp format of the CSV files."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# How a unit reads on the page: singular and plural words, and the decimals its quantities
# need there (whole requests, sessions and operations; the exact values are in the CSV).
UNIT_WORDS: dict[str, tuple[str, str, int]] = {
    "hour": ("hour", "hours", 2),
    "gib_hour": ("GiB-hour", "GiB-hours", 3),
    "gib": ("GiB", "GiB", 3),
    "session": ("session", "sessions", 0),
    "request": ("request", "requests", 0),
    "operation": ("operation", "operations", 0),
    "period": ("period", "periods", 0),
}
DEFAULT_PLACES = 3


def unit_places(unit: str) -> int:
    """The decimals a quantity of `unit` is printed with."""
    known = UNIT_WORDS.get(unit)
    return known[2] if known else DEFAULT_PLACES


def unit_words(unit: str, value: Decimal | None = None) -> str:
    """A unit in words, plural unless the quantity is exactly one: hour, 2 hours, GiB-hours."""
    known = UNIT_WORDS.get(unit)
    if known is None:
        return unit.replace("_", " ")
    return known[0] if value == 1 else known[1]


def unit_label(unit: str) -> str:
    """How a pricing unit reads on a statement: gib_hour -> GiB-hours (the plural)."""
    return unit_words(unit)


def measure(value: Decimal, unit: str, locale: str) -> str:
    """A quantity with its unit in words, to the decimals the unit needs: `6,096.33 hours`,
    `38,830 requests`. A quantity that rounds to zero but is not zero reads `< 0.001 GiB`."""
    places = unit_places(unit)
    number = quantity(value, locale, places)
    smallest = Decimal(1).scaleb(-places)
    if value and abs(value) < smallest / 2:
        number = "< " + quantity(smallest, locale, places)
    words = unit_words(unit, value)
    return f"{number} {words}" if words else number


def price(value: Decimal, currency: str, locale: str) -> str:
    """A unit price: the currency's decimals at least, every further digit the card gave
    ($0.12, $0.0125, ¥3)."""
    text = format_currency(value, currency, locale=locale, decimal_quantization=False)
    return _fold_fullwidth(str(text))


# The pricing texts billing.rating and billing.adjustments store (the CSV keeps them as they
# are); the page rewrites them with the currency and the unit in words.
_NUMBER = r"-?\d+(?:\.\d+)?"
_SUFFIXES = re.compile(rf",\s*(min|max|less)\s+({_NUMBER})%?")
_UNIT_PRICE = re.compile(rf"^({_NUMBER})\s*/\s*(\w+)$")
_PACKAGE = re.compile(rf"^({_NUMBER}) per ({_NUMBER}) (\w+)$")
_TIERS = re.compile(r"^(volume: )?(.+) / (\w+)$")
_TIER = re.compile(rf"^({_NUMBER}) (to|above) ({_NUMBER})$")
_MINIMUM = re.compile(rf"^minimum ({_NUMBER}) per period$")
_ADJUSTMENT = re.compile(rf"^adjustment(?: of ({_NUMBER}))?$")
_DISCOUNT = re.compile(rf",\s*less ({_NUMBER})%")
_CREDIT_USED = re.compile(rf"^from a credit balance of ({_NUMBER}), ({_NUMBER}) left$")
_CREDIT_CARRIED = re.compile(rf"^({_NUMBER}) to the credit balance(.*)$")


def _decimal(text: str) -> Decimal:
    return Decimal(text)


def discount_percent(pricing: str) -> Decimal | None:
    """The org's discount a stored pricing text names (`..., less 10%`), if any."""
    found = _DISCOUNT.search(pricing)
    return Decimal(found.group(1)) if found else None


def percent(value: Decimal, locale: str) -> str:
    """10%, 12.5%: a percentage without trailing zeros."""
    return str(format_decimal(value.normalize(), locale=locale)) + "%"


@lru_cache(maxsize=1024)
def display_pricing(text: str, currency: str, locale: str) -> str:
    """A stored pricing text as the customer reads it: `0.12 / hour` -> `$0.12 per hour`,
    tiers and packages likewise, `minimum 2500 per period` -> `$2,500.00 minimum per period`;
    the org's discount (`, less 10%`) is left out (the page shows it as its own row). A text
    it does not recognise (a correction's, a credit's, a tax's wording) is returned as is."""
    try:
        return _display_pricing(text.strip(), currency, locale)
    except (InvalidOperation, ValueError):
        return text


def _display_pricing(text: str, currency: str, locale: str) -> str:
    def money_of(number: str) -> str:
        return price(_decimal(number), currency, locale)

    def qty(number: str, unit: str) -> str:
        words = unit_words(unit, _decimal(number))
        written = str(format_decimal(_decimal(number).normalize(), locale=locale))
        return f"{written} {words}" if words else written

    if text.startswith("corrects "):
        return "Corrects " + text.removeprefix("corrects ")
    used = _CREDIT_USED.match(text)
    if used:
        available, left = (money(_decimal(n), currency, locale) for n in used.groups())
        return f"from a credit balance of {available}, {left} left"
    carried = _CREDIT_CARRIED.match(text)
    if carried:
        return f"{money(_decimal(carried.group(1)), currency, locale)} to the credit balance" + (
            carried.group(2)
        )
    minimum = _MINIMUM.match(text)
    if minimum:
        return f"{money(_decimal(minimum.group(1)), currency, locale)} minimum per period"
    adjustment = _ADJUSTMENT.match(_DISCOUNT.sub("", text))
    if adjustment:
        amount = adjustment.group(1)
        return (
            f"Adjustment of {money(_decimal(amount), currency, locale)}"
            if amount
            else ("Adjustment")
        )
    head, _, _rest = text.partition(",")
    limits = []
    for kind, number in _SUFFIXES.findall(text):
        if kind == "min":
            limits.append(f"minimum {money(_decimal(number), currency, locale)}")
        elif kind == "max":
            limits.append(f"maximum {money(_decimal(number), currency, locale)}")
    described = _model(head.strip(), money_of, qty)
    if described is None:
        return text
    return ", ".join([described, *limits])


def _model(text: str, money_of: Callable[[str], str], qty: Callable[[str, str], str]) -> str | None:
    """The charge model part of a pricing text (before any `, min`/`, max`/`, less`)."""
    unit_price = _UNIT_PRICE.match(text)
    if unit_price:
        number, unit = unit_price.groups()
        return f"{money_of(number)} per {unit_words(unit, Decimal(1))}"
    package = _PACKAGE.match(text)
    if package:
        number, size, unit = package.groups()
        size_value = _decimal(size)
        if size_value == 1:
            return f"{money_of(number)} per {unit_words(unit, Decimal(1))}"
        return f"{money_of(number)} per {qty(size, unit)}"
    tiers = _TIERS.match(text)
    if tiers:
        volume, body, unit = tiers.groups()
        parsed = [_TIER.match(part.strip()) for part in body.split(";")]
        if not all(parsed):
            return None
        per = unit_words(unit, Decimal(1))
        parts = []
        for index, tier in enumerate(parsed):
            assert tier is not None
            number, kind, bound = tier.groups()
            if kind == "above":
                parts.append(f"{money_of(number)} per {per} above {qty(bound, unit)}")
            elif index == 0:
                parts.append(f"{money_of(number)} per {per} up to {qty(bound, unit)}")
            else:
                parts.append(f"{money_of(number)} up to {qty(bound, unit)}")
        prefix = "volume pricing: " if volume else ""
        return prefix + "; ".join(parts)
    return None


def tax_id_label(tax_id: str) -> str:
    """`VAT ID` for an EU (or UK) VAT number by its country prefix, else `Tax ID`."""
    return "VAT ID" if tax_id[:2].upper() in VAT_PREFIXES else "Tax ID"


VAT_PREFIXES = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "EL",
        "ES",
        "FI",
        "FR",
        "HR",
        "HU",
        "IE",
        "IT",
        "LT",
        "LU",
        "LV",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
        "XI",
        "GB",
    ]
)


@dataclass(frozen=True, slots=True)
class PaymentInstructions:
    """How to pay, from BILLING_PAYMENT_BANK_DETAILS (lines separated by "; " or newlines)
    and BILLING_PAYMENT_LINK (`{invoice_number}` filled in, URL-quoted)."""

    bank_details: str = ""
    link: str = ""

    @property
    def bank_lines(self) -> tuple[str, ...]:
        parts = re.split(r";\s+|;$|\r?\n", self.bank_details)
        return tuple(part.strip() for part in parts if part.strip())

    def link_for(self, invoice_number: str) -> str:
        """The payment link of one invoice; "" when none is set."""
        if not self.link.strip():
            return ""
        return self.link.strip().replace("{invoice_number}", quote(invoice_number, safe=""))

    @staticmethod
    def clickable(url: str) -> bool:
        """Whether a link may be made clickable on the page (http or https only)."""
        return urlsplit(url).scheme in ("http", "https")

    @property
    def configured(self) -> bool:
        return bool(self.bank_lines or self.link.strip())
