"""Adjustments of drafts: discounted once, split exactly over the chargeback lines, and the
minimum taken on usage plus adjustments (docs/LEDGER.md's worked example is asserted here)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.adjustments import (
    Adjustment,
    UsageCharge,
    UsageLine,
    adjust,
    adjustment_pricing,
    discounted_minor,
    minimum_of,
    split,
    stored_meter,
)
from billing.domain import OrgAccount, RateCard, RatedInvoice
from billing.rating import minimum_top_up

# The worked example of docs/LEDGER.md ("Adjustments"): an org with a 10% discount and a
# minimum of 40.00 USD per period.
DURATION = UsageCharge(
    "duration",
    "Session time",
    3000,
    (UsageLine("key-a", "alice", 2000), UsageLine("key-b", "bob", 1000)),
)
WORKSPACE_IN = UsageCharge(
    "workspace_in",
    "Workspace data in",
    400,
    (UsageLine("key-a", "alice", 100), UsageLine("key-c", None, 300)),
)
USAGE = (DURATION, WORKSPACE_IN)
GOODWILL = Adjustment(1, "duration", "", Decimal("-12.35"), "USD")
ONBOARDING = Adjustment(2, None, "Onboarding support", Decimal("20.00"), "USD")
DISCOUNT = Decimal("10")
MINIMUM = Decimal("40.00")


def amounts(lines: tuple[UsageLine, ...]) -> list[tuple[str | None, str | None, int]]:
    return [(line.api_key_id, line.user_id, line.amount_minor) for line in lines]


def test_worked_example_adjustments_discount_split_and_minimum() -> None:
    """Usage 34.00 (session time 30.00 = alice 20.00 + bob 10.00; data in 4.00 = alice 1.00 +
    key-c 3.00) rates with a top-up of 6.00 to the minimum of 40.00.

    Adjustment 1, -12.35 on session time: less 10% is -11.115, rounded half-up (away from zero)
    once to -11.12, split 2:1 over alice and bob: exact shares -7.413 and -3.706; floors -7.41
    and -3.70 leave one cent, which goes to the larger remainder (bob): -7.41, -3.71.

    Adjustment 2, +20.00 "Onboarding support" (free text): less 10% is 18.00, split over each
    line's usage across all meters, alice 21.00 : bob 10.00 : key-c 3.00 (of 34.00): exact
    11.1176, 5.2941, 1.5882; floors 11.11, 5.29, 1.58 leave two cents, to the two largest
    remainders (key-c .82, alice .76): 11.12, 5.29, 1.59.

    The minimum is taken on 34.00 - 11.12 + 18.00 = 40.88: met, so the top-up is gone and the
    draft totals 40.88."""
    rated_top_up = minimum_top_up(MINIMUM, "USD", 3400)
    assert rated_top_up is not None
    assert rated_top_up.amount_minor == 600

    adjusted = adjust(USAGE, [GOODWILL, ONBOARDING], "USD", DISCOUNT)

    goodwill, onboarding = adjusted.charges
    assert goodwill.amount_minor == -1112
    assert goodwill.meter == "duration#1"
    assert goodwill.description == "Adjustment: Session time"
    assert goodwill.pricing == "adjustment of -12.35, less 10%"
    assert amounts(goodwill.lines) == [("key-a", "alice", -741), ("key-b", "bob", -371)]
    assert onboarding.amount_minor == 1800
    assert onboarding.meter == "adjustment#2"
    assert onboarding.description == "Onboarding support"
    assert onboarding.pricing == "adjustment of 20.00, less 10%"
    assert amounts(onboarding.lines) == [
        ("key-a", "alice", 1112),
        ("key-b", "bob", 529),
        ("key-c", None, 159),
    ]
    assert adjusted.minimum_base_minor == 4088
    assert minimum_top_up(MINIMUM, "USD", adjusted.minimum_base_minor) is None

    # Without the onboarding line the base is 22.88, and the top-up 17.12 keeps 40.00.
    alone = adjust(USAGE, [GOODWILL], "USD", DISCOUNT)
    top_up = minimum_top_up(MINIMUM, "USD", alone.minimum_base_minor)
    assert top_up is not None
    assert top_up.amount_minor == 1712
    assert alone.minimum_base_minor + top_up.amount_minor == 4000


def test_every_split_adds_up_to_its_charge_and_charges_to_the_adjustments() -> None:
    adjusted = adjust(USAGE, [GOODWILL, ONBOARDING], "USD", DISCOUNT)
    for charge in adjusted.charges:
        assert sum(line.amount_minor for line in charge.lines) == charge.amount_minor
    assert adjusted.adjustments_minor == sum(c.amount_minor for c in adjusted.charges) == 688
    assert adjusted.usage_minor == 3400


@given(
    amount=st.integers(min_value=-(10**9), max_value=10**9),
    weights=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=12),
)
def test_a_split_is_exact_and_signed_whatever_the_weights(amount: int, weights: list[int]) -> None:
    lines = [UsageLine(f"key-{i:02d}", None, weight) for i, weight in enumerate(weights)]
    shares = split(amount, lines)
    assert sum(line.amount_minor for line in shares) == amount
    assert all(line.amount_minor * amount >= 0 for line in shares)  # never the other sign


def test_all_zero_weights_spread_evenly_and_no_lines_make_one_org_line() -> None:
    free = [UsageLine("key-a", "alice", 0), UsageLine("key-b", None, 0), UsageLine(None, None, 0)]
    assert amounts(split(100, free)) == [
        ("key-a", "alice", 34),
        ("key-b", None, 33),
        (None, None, 33),
    ]
    assert amounts(split(-100, free)) == [
        ("key-a", "alice", -34),
        ("key-b", None, -33),
        (None, None, -33),
    ]
    assert amounts(split(-250, [])) == [(None, None, -250)]
    # An adjustment of a meter without chargeback lines, and a free-text line on a draft
    # without usage, are one line without key or user.
    idle = UsageCharge("memory", "Memory", 0)
    adjusted = adjust([idle], [Adjustment(5, "memory", "", Decimal("3.00"), "USD")], "USD", None)
    assert amounts(adjusted.charges[0].lines) == [(None, None, 300)]
    alone = adjust([], [Adjustment(6, None, "Setup fee", Decimal("25.00"), "USD")], "USD", None)
    assert amounts(alone.charges[0].lines) == [(None, None, 2500)]


def test_free_text_weights_are_each_lines_usage_summed_over_meters() -> None:
    """The same (API key, user) on two meters weighs the sum of its amounts."""
    usage = [
        UsageCharge("duration", "Session time", 100, (UsageLine("k", "u", 100),)),
        UsageCharge("memory", "Memory", 300, (UsageLine("k", "u", 200), UsageLine("j", "v", 100))),
    ]
    adjusted = adjust(usage, [Adjustment(3, None, "Credit", Decimal("-4.00"), "USD")], "USD", None)
    assert amounts(adjusted.charges[0].lines) == [("j", "v", -100), ("k", "u", -300)]


@pytest.mark.parametrize(
    ("amount", "currency", "discount", "minor"),
    [
        (Decimal("0.05"), "USD", Decimal("50"), 3),  # 0.025 -> 0.03, half-up
        (Decimal("-0.05"), "USD", Decimal("50"), -3),  # -0.025 -> -0.03, away from zero
        (Decimal("-12.35"), "USD", Decimal("10"), -1112),
        (Decimal("-12.35"), "USD", None, -1235),
        (Decimal("-12.35"), "USD", Decimal("0"), -1235),
        (Decimal("999"), "JPY", Decimal("12.5"), 874),  # 874.125 -> 874
        (Decimal("1.005"), "BHD", Decimal("10"), 905),  # 0.9045 -> 0.905 (3 places)
        (Decimal("10.00"), "USD", Decimal("100"), 0),
    ],
)
def test_the_discount_is_taken_before_the_one_rounding(
    amount: Decimal, currency: str, discount: Decimal | None, minor: int
) -> None:
    assert discounted_minor(amount, currency, discount) == minor


def test_pricing_text_shows_the_amount_entered_and_the_discount() -> None:
    assert adjustment_pricing(Decimal("-12.35"), "USD", None) == "adjustment"
    assert adjustment_pricing(Decimal("-12.35"), "USD", Decimal("0")) == "adjustment"
    # As PostgreSQL reads a stored discount back (12 places): written plainly.
    assert (
        adjustment_pricing(Decimal("-12.350000000000"), "USD", Decimal("12.500000000000"))
        == "adjustment of -12.35, less 12.5%"
    )


def test_a_meter_the_draft_lacks_or_another_currency_is_refused() -> None:
    with pytest.raises(ValueError, match="meter 'gpu'"):
        adjust(USAGE, [Adjustment(9, "gpu", "", Decimal("1.00"), "USD")], "USD", None)
    with pytest.raises(ValueError, match="in EUR, the draft in USD"):
        adjust(USAGE, [Adjustment(9, None, "x", Decimal("1.00"), "EUR")], "USD", None)


def test_stored_meters_keep_two_adjustments_of_one_meter_apart() -> None:
    twice = adjust(
        USAGE,
        [
            Adjustment(11, "duration", "", Decimal("1.00"), "USD"),
            Adjustment(12, "duration", "Second look", Decimal("-2.00"), "USD"),
        ],
        "USD",
        None,
    )
    assert [c.meter for c in twice.charges] == ["duration#11", "duration#12"]
    assert [c.adjusted_meter for c in twice.charges] == ["duration", "duration"]
    assert stored_meter(7, "m" * 49) == "adjustment#7"  # the column holds 50 characters


def test_the_minimum_is_the_orgs_commitment_else_the_cards() -> None:
    card = RateCard("std", "USD", date(2026, 1, 1), (), minimum_charge=Decimal("5.00"))
    plain = RatedInvoice(OrgAccount("o", "O"), "USD", card, ())
    committed = RatedInvoice(
        OrgAccount("o", "O", minimum_commitment=Decimal("2500.00")), "USD", card, ()
    )
    assert minimum_of(plain) == Decimal("5.00")
    assert minimum_of(committed) == Decimal("2500.00")
