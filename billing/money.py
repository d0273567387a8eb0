"""Exact money: currency minor units, the one rounding rule, and splits by largest remainder.

The rounding rule of the whole service: quantities and prices stay exact (Fraction/Decimal);
each org's charge for a meter is rounded once, half-up, to the currency's minor unit; splits of
a rounded charge use largest remainder, so the parts always add up to the whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Context, Decimal, localcontext
from fractions import Fraction
from functools import cache

from babel.numbers import get_currency_precision, list_currencies

Exact = Fraction | Decimal | int

# Wide enough that no amount or quantity this service meets is ever rounded by the context.
WIDE = Context(prec=80)


@cache
def minor_unit_exponent(currency: str) -> int:
    """Digits after the decimal point for an ISO 4217 currency (USD 2, JPY 0, BHD 3)."""
    code = currency.upper()
    if code not in list_currencies():
        raise ValueError(f"unknown ISO 4217 currency {currency!r}")
    return int(get_currency_precision(code))


def to_fraction(value: Exact) -> Fraction:
    """An exact rational for an int, Decimal or Fraction (never a float)."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int | Decimal):
        return Fraction(value)
    raise TypeError(f"exact number expected, got {type(value).__name__}")


def round_half_up(value: Fraction) -> int:
    """Half-up (away from zero) rounding of an exact rational to the nearest integer."""
    sign = -1 if value < 0 else 1
    magnitude = abs(value)
    whole, remainder = divmod(magnitude.numerator, magnitude.denominator)
    if 2 * remainder >= magnitude.denominator:
        whole += 1
    return sign * whole


def round_to_minor_units(amount: Exact, currency: str) -> int:
    """The one rounding rule: half-up to an integer count of the currency's minor units."""
    return round_half_up(to_fraction(amount) * 10 ** minor_unit_exponent(currency))


def minor_to_decimal(minor_units: int, currency: str) -> Decimal:
    """Minor units as a Decimal with exactly the currency's number of places (1234 -> 12.34)."""
    # Built from its digits and exponent: exact, whatever the context (and cheap: it runs for
    # every stored amount).
    return Decimal(f"{minor_units}e-{minor_unit_exponent(currency)}")


def decimal_to_minor(amount: Decimal, currency: str) -> int:
    """A Decimal amount already on the minor unit back to an integer count; refuses sub-units."""
    with localcontext(WIDE):
        scaled = amount.scaleb(minor_unit_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more places than {currency} allows")
    return int(scaled)


def format_minor(amount: Decimal, currency: str) -> str:
    """The one text form of an amount: exactly the currency's minor-unit digits, never an
    exponent (USD 108.37 and 0.00, JPY 1234, BHD 1.250); refuses an amount with sub-units."""
    return format(at_minor_units(amount, currency), "f")


def at_minor_units(amount: Decimal, currency: str) -> Decimal:
    """A stored amount with exactly the currency's places, whatever scale the database read it
    back with (PostgreSQL's NUMERIC keeps 12); refuses an amount with sub-units."""
    return minor_to_decimal(decimal_to_minor(amount, currency), currency)


def format_quantity(value: Decimal) -> str:
    """The one text form of a quantity or rate: no trailing zeros, never an exponent
    (60.4057175, 100, 0)."""
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite quantity")
    if value.is_zero():
        return "0"
    return format(value.normalize(WIDE), "f")


QUANTITY_PLACES = 12


def round_quantity(value: Exact, places: int = QUANTITY_PLACES) -> Decimal:
    """A quantity for storage and display, half-up to `places` decimals (charges stay exact)."""
    scaled = value * 10**places if isinstance(value, int) else to_fraction(value) * 10**places
    units = scaled if isinstance(scaled, int) else round_half_up(scaled)
    return Decimal(f"{units}e-{places}")


def allocate_largest_remainder(total: int, weights: Sequence[Exact]) -> list[int]:
    """Split an integer total in proportion to weights so the parts sum exactly to the total.

    Each part gets the floor of its exact share; the units left over go one each to the parts
    with the largest remainders, ties to the earlier part. Zero weights get nothing unless all
    weights are zero, in which case the total is spread evenly by the same rule.
    """
    if not weights:
        if total:
            raise ValueError("cannot allocate a non-zero total over no parts")
        return []
    numerators = _over_common_denominator(weights)
    if any(n < 0 for n in numerators):
        raise ValueError("allocation weights must not be negative")
    weight_sum = sum(numerators)
    if weight_sum == 0:
        numerators = [1] * len(weights)
        weight_sum = len(weights)
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    # Share i is magnitude * n_i / weight_sum: its floor and remainder in integers (every
    # remainder is over the same weight_sum, so they order as the exact fractions do).
    divided = [divmod(magnitude * n, weight_sum) for n in numerators]
    parts = [part for part, _ in divided]
    leftover = magnitude - sum(parts)
    by_remainder = sorted(range(len(divided)), key=lambda i: (-divided[i][1], i))
    for index in by_remainder[:leftover]:
        parts[index] += 1
    return [sign * part for part in parts]


def _over_common_denominator(weights: Sequence[Exact]) -> list[int]:
    """Integer numerators of exact weights over their least common denominator."""
    ratios = [
        (weight, 1) if isinstance(weight, int) else _as_ratio(to_fraction(weight))
        for weight in weights
    ]
    common = math.lcm(*(denominator for _, denominator in ratios))
    return [numerator * (common // denominator) for numerator, denominator in ratios]


def _as_ratio(value: Fraction) -> tuple[int, int]:
    """A fraction as (numerator, denominator)."""
    return value.numerator, value.denominator
