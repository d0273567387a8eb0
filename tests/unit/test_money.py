"""Money: the one rounding rule, minor units, and exact largest-remainder splits."""

from decimal import Context, Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.money import (
    allocate_largest_remainder,
    decimal_to_minor,
    minor_to_decimal,
    minor_unit_exponent,
    round_half_up,
    round_quantity,
    round_to_minor_units,
)


def test_minor_units_follow_iso_4217() -> None:
    assert minor_unit_exponent("USD") == 2
    assert minor_unit_exponent("jpy") == 0
    assert minor_unit_exponent("BHD") == 3
    with pytest.raises(ValueError, match="unknown ISO 4217"):
        minor_unit_exponent("XYZ")


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        (Decimal("0.025"), "USD", 3),  # half-up, not banker's (which gives 2)
        (Decimal("0.015"), "USD", 2),
        (Decimal("0.0249999"), "USD", 2),
        (Decimal("-0.025"), "USD", -3),  # half away from zero for credits
        (Decimal("1234.5"), "JPY", 1235),
        (Decimal("1.0005"), "BHD", 1001),
        (Fraction(1, 3), "USD", 33),
        (Fraction(2, 3), "USD", 67),
    ],
)
def test_round_half_up_to_minor_units(
    amount: Decimal | Fraction, currency: str, minor: int
) -> None:
    assert round_to_minor_units(amount, currency) == minor


def test_round_refuses_float() -> None:
    with pytest.raises(TypeError, match="exact number"):
        round_to_minor_units(0.1, "USD")  # type: ignore[arg-type]


def test_minor_units_round_trip_as_decimal() -> None:
    assert minor_to_decimal(123456, "USD") == Decimal("1234.56")
    assert str(minor_to_decimal(5, "BHD")) == "0.005"
    assert str(minor_to_decimal(7, "JPY")) == "7"
    assert decimal_to_minor(Decimal("1234.56"), "USD") == 123456
    with pytest.raises(ValueError, match="more places"):
        decimal_to_minor(Decimal("1.005"), "USD")


def test_quantity_keeps_twelve_places_half_up() -> None:
    assert round_quantity(Fraction(1, 3)) == Decimal("0.333333333333")
    assert round_quantity(Fraction(2, 3)) == Decimal("0.666666666667")


def test_allocation_worked_example() -> None:
    # 54 cents by weights 3:40:100 -> floors 1, 15, 37; the leftover cent goes to .762.
    assert allocate_largest_remainder(54, [3, 40, 100]) == [1, 15, 38]


def test_allocation_ties_go_to_the_earlier_part() -> None:
    assert allocate_largest_remainder(1, [1, 1, 1]) == [1, 0, 0]
    assert allocate_largest_remainder(2, [1, 1, 1]) == [1, 1, 0]


def test_allocation_of_all_zero_weights_spreads_evenly() -> None:
    assert allocate_largest_remainder(5, [0, 0]) == [3, 2]


def test_zero_weight_parts_get_nothing() -> None:
    assert allocate_largest_remainder(10, [0, 1, 0, 1]) == [0, 5, 0, 5]


@given(
    total=st.integers(min_value=-(10**9), max_value=10**9),
    weights=st.lists(
        st.fractions(min_value=0, max_value=10**6, max_denominator=10**6), min_size=1, max_size=40
    ),
)
def test_allocation_always_sums_to_the_total(total: int, weights: list[Fraction]) -> None:
    parts = allocate_largest_remainder(total, weights)
    assert sum(parts) == total
    assert len(parts) == len(weights)
    weight_sum = sum(weights)
    if weight_sum:
        for part, weight in zip(parts, weights, strict=True):
            exact = Fraction(abs(total)) * weight / weight_sum
            assert (
                abs(abs(part) - exact) < 1
            )  # each part is its exact share, floored or raised by one


def quantized_reference(units: int, places: int) -> Decimal:
    """How amounts were built before: scaled and quantized in a wide context."""
    with localcontext(Context(prec=80)):
        quantum = Decimal(1).scaleb(-places)
        return (Decimal(units) * quantum).quantize(quantum)


@given(st.integers(min_value=-(10**30), max_value=10**30), st.sampled_from(["USD", "JPY", "BHD"]))
def test_minor_to_decimal_has_the_currency_places_exactly(units: int, currency: str) -> None:
    amount = minor_to_decimal(units, currency)
    expected = quantized_reference(units, minor_unit_exponent(currency))
    assert amount == expected
    assert amount.as_tuple() == expected.as_tuple()  # same digits and exponent, so same text


@given(
    st.one_of(
        st.integers(min_value=-(10**20), max_value=10**20),
        st.fractions(max_denominator=10**15),
        st.decimals(allow_nan=False, allow_infinity=False, places=15, max_value=10**12),
    )
)
def test_round_quantity_is_half_up_to_twelve_places(value: int | Fraction | Decimal) -> None:
    rounded = round_quantity(value)
    expected = quantized_reference(round_half_up(Fraction(value) * 10**12), 12)
    assert rounded.as_tuple() == expected.as_tuple()
    assert abs(Fraction(rounded) - Fraction(value)) <= Fraction(1, 2 * 10**12)


def fraction_allocation(total: int, weights: list[Fraction]) -> list[int]:
    """The split worked out in Fractions, share by share (how the service first computed it)."""
    weight_sum = sum(weights, Fraction(0))
    if weight_sum == 0:
        weights, weight_sum = [Fraction(1)] * len(weights), Fraction(len(weights))
    shares = [abs(total) * w / weight_sum for w in weights]
    parts = [share.numerator // share.denominator for share in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(shares[i] - parts[i]), i))
    for index in by_remainder[: abs(total) - sum(parts)]:
        parts[index] += 1
    return [-part if total < 0 else part for part in parts]


@given(
    total=st.integers(min_value=-(10**9), max_value=10**9),
    weights=st.lists(
        st.one_of(
            st.integers(min_value=0, max_value=10**12),
            st.fractions(min_value=0, max_value=10**6, max_denominator=10**6),
            st.decimals(min_value=0, max_value=10**6, places=4),
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_allocation_in_integers_is_the_allocation_in_fractions(
    total: int, weights: list[int | Fraction | Decimal]
) -> None:
    exact = [Fraction(w) for w in weights]
    assert allocate_largest_remainder(total, weights) == fraction_allocation(total, exact)
