"""Every charge model priced as docs/RATING.md's worked examples say, plus their invariants."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.catalog import load_org_directory, load_rate_cards
from billing.catalog.loader import card_for_account
from billing.domain import MeterPrice, OrgAccount, RateCard, Tier, UsageRecord
from billing.errors import RateCardError
from billing.periods import BillingPeriod
from billing.rating import (
    UsageAggregate,
    graduated_charge,
    rate_org,
    volume_charge,
)

HOUR_MS = 3_600_000
D = Decimal
TIERS = (Tier(D(100), D("0.10")), Tier(D(1000), D("0.08")), Tier(None, D("0.05")))


def usage(*records: UsageRecord) -> UsageAggregate:
    aggregate = UsageAggregate()
    aggregate.add_all(records)
    return aggregate


def rec(
    key: str = "k1", user: str | None = "u1", kind: str | None = None, **values: object
) -> UsageRecord:
    return UsageRecord(0, 86400, "org-a", key, user, session_kind=kind, **values)  # type: ignore[arg-type]


def card(*prices: MeterPrice, currency: str = "USD", minimum: Decimal | None = None) -> RateCard:
    return RateCard("c", currency, date(2026, 1, 1), prices, minimum_charge=minimum)


def charge_of(
    price: MeterPrice, aggregate: UsageAggregate, account: OrgAccount | None = None
) -> int:
    invoice = rate_org(account or OrgAccount("org-a", "A"), card(price), aggregate.by_org["org-a"])
    return invoice.charges[0].amount_minor


def test_volume_tiers_price_the_whole_quantity_at_the_tier_reached() -> None:
    # 250 requests reach the second tier: 250 x 0.08 = 20.00 (graduated would be 22.00).
    price = MeterPrice("requests", "requests", "request", tiers=TIERS, tier_mode="volume")
    assert charge_of(price, usage(rec(request_count=250))) == 2000
    graduated = MeterPrice("requests", "requests", "request", tiers=TIERS)
    assert charge_of(graduated, usage(rec(request_count=250))) == 2200
    # A bound belongs to its tier: exactly 100 is 100 x 0.10.
    assert charge_of(price, usage(rec(request_count=100))) == 1000


def test_package_pricing_rounds_up_to_whole_packages() -> None:
    # 2,500 requests in packages of 1,000 at 0.50: 3 packages = 1.50.
    price = MeterPrice(
        "requests", "requests", "request", package_size=D(1000), package_price=D("0.50")
    )
    assert charge_of(price, usage(rec(request_count=2500))) == 150
    # 500 included leave 2,000: exactly 2 packages = 1.00.
    with_included = MeterPrice(
        "requests",
        "requests",
        "request",
        package_size=D(1000),
        package_price=D("0.50"),
        included=D(500),
    )
    assert charge_of(with_included, usage(rec(request_count=2500))) == 100
    assert charge_of(with_included, usage(rec(request_count=400))) == 0


def test_meter_minimum_and_maximum() -> None:
    # Sessions at 0.01 with a 1.00 minimum and a 2.00 cap: 40 -> 1.00, 150 -> 1.50, 500 -> 2.00.
    price = MeterPrice(
        "sessions",
        "sessions",
        "session",
        unit_price=D("0.01"),
        minimum=D("1.00"),
        maximum=D("2.00"),
    )
    assert charge_of(price, usage(rec(num_sessions=40))) == 100
    assert charge_of(price, usage(rec(num_sessions=150))) == 150
    assert charge_of(price, usage(rec(num_sessions=500))) == 200


def test_meter_minimum_without_usage_is_one_unattributed_line() -> None:
    price = MeterPrice("sessions", "sessions", "session", unit_price=D("0.01"), minimum=D("1.00"))
    invoice = rate_org(
        OrgAccount("org-a", "A"), card(price), usage(rec(duration_ms=1)).by_org["org-a"]
    )
    (line,) = invoice.charges[0].lines
    assert (line.key.api_key_id, line.key.user_id, line.amount_minor) == (None, None, 100)


def test_discount_applies_to_each_charge_before_its_one_rounding() -> None:
    # 61.5 h x 0.12 = 7.38, less 10% = 6.642 -> 6.64.
    price = MeterPrice("duration", "duration", "hour", unit_price=D("0.12"))
    account = OrgAccount("org-a", "A", discount_percent=D(10))
    assert charge_of(price, usage(rec(duration_ms=221_400_000)), account) == 664


def test_org_minimum_commitment_replaces_the_card_minimum() -> None:
    price = MeterPrice("duration", "duration", "hour", unit_price=D("0.12"))
    account = OrgAccount("org-a", "A", minimum_commitment=D("50.00"))
    invoice = rate_org(
        account, card(price, minimum=D("5.00")), usage(rec(duration_ms=HOUR_MS)).by_org["org-a"]
    )
    assert invoice.total_minor == 5000
    assert invoice.charges[-1].meter == "minimum_charge"
    assert invoice.charges[-1].amount_minor == 5000 - 12


def test_session_kind_meters_price_browser_and_standard_apart() -> None:
    # 2 h standard at 0.12 = 0.24; 1 h browser at 0.30 = 0.30.
    standard = MeterPrice(
        "duration", "duration", "hour", unit_price=D("0.12"), session_kind="standard"
    )
    browser = MeterPrice(
        "browser_duration", "duration", "hour", unit_price=D("0.30"), session_kind="browser"
    )
    aggregate = usage(
        rec(kind="standard", duration_ms=2 * HOUR_MS), rec(kind="browser", duration_ms=HOUR_MS)
    )
    invoice = rate_org(OrgAccount("org-a", "A"), card(standard, browser), aggregate.by_org["org-a"])
    assert {c.meter: c.amount_minor for c in invoice.charges} == {
        "duration": 24,
        "browser_duration": 30,
    }
    assert invoice.charges[1].description == "Session time (browser)"


def test_session_kind_meter_without_kind_in_the_usage_is_an_error() -> None:
    browser = MeterPrice(
        "browser_duration", "duration", "hour", unit_price=D("0.30"), session_kind="browser"
    )
    with pytest.raises(RateCardError, match="fetched without session_kind"):
        rate_org(
            OrgAccount("org-a", "A"), card(browser), usage(rec(duration_ms=HOUR_MS)).by_org["org-a"]
        )


def test_peak_memory_meter_uses_peak_and_falls_back_to_reserved() -> None:
    # 1536 MiB peak for 2 h = 3 GiB-h; a row without peak uses its 1024 MiB reservation for 1 h = 1.
    price = MeterPrice("peak_memory", "peak_memory", "gib_hour", unit_price=D("0.02"))
    aggregate = usage(
        rec(duration_ms=2 * HOUR_MS, reserved_memory_mib=4096, peak_memory_mib=D(1536)),
        rec(duration_ms=HOUR_MS, reserved_memory_mib=1024),
    )
    invoice = rate_org(OrgAccount("org-a", "A"), card(price), aggregate.by_org["org-a"])
    assert invoice.charges[0].quantity == 4
    assert invoice.charges[0].amount_minor == 8


def test_currency_sets_the_minor_unit() -> None:
    price = MeterPrice("requests", "requests", "request", unit_price=D("0.4"))
    jpy = rate_org(
        OrgAccount("org-a", "A"),
        card(price, currency="JPY"),
        usage(rec(request_count=3)).by_org["org-a"],
    )
    assert jpy.total_minor == 1  # 1.2 yen -> 1
    bhd = rate_org(
        OrgAccount("org-a", "A"),
        card(MeterPrice("requests", "requests", "request", unit_price=D("0.0005")), currency="BHD"),
        usage(rec(request_count=3)).by_org["org-a"],
    )
    assert bhd.total_minor == 2  # 0.0015 BHD -> 0.002


def test_org_overrides_replace_single_prices(tmp_path: Path) -> None:
    # memory at 0.008 instead of 0.0125 for one org: 43 billable GiB-h x 0.008 = 0.344 -> 0.34.
    orgs = tmp_path / "orgs.yaml"
    orgs.write_text(
        "default_rate_card: standard\norgs:\n"
        '  - org_id: org-a\n    name: A\n    overrides: {memory: {unit_price: "0.008"},'
        ' workspace_out: {unit_price: "0.01"}}\n',
        encoding="utf-8",
    )
    examples = Path(__file__).resolve().parents[2] / "examples"
    catalog = load_rate_cards(examples / "ratecards")
    directory = load_org_directory(orgs)
    account = directory.account_for("org-a")
    priced = card_for_account(catalog, directory, account, BillingPeriod.parse("2026-10"))
    prices = {p.name: p for p in priced.meters}
    assert prices["memory"].unit_price == D("0.008")
    assert prices["memory"].included == D(100)  # the rest of the card's price stays
    assert prices["workspace_out"].tiers == ()  # a model given replaces the card's model
    assert (
        priced.content_hash
        != catalog.card_for("standard", BillingPeriod.parse("2026-10"), "x").content_hash
    )
    aggregate = usage(rec(duration_ms=143 * HOUR_MS, reserved_memory_mib=1024))
    invoice = rate_org(account, priced, aggregate.by_org["org-a"])
    assert {c.meter: c.amount_minor for c in invoice.charges}["memory"] == 34


@given(quantity=st.fractions(min_value=0, max_value=100, max_denominator=10**6))
def test_volume_and_graduated_agree_below_the_first_boundary(quantity: Fraction) -> None:
    assert volume_charge(TIERS, quantity) == graduated_charge(TIERS, quantity)


@given(
    quantity=st.fractions(min_value=0, max_value=10**6, max_denominator=1000),
    step=st.fractions(min_value=0, max_value=1, max_denominator=1000),
)
def test_graduated_charge_is_continuous(quantity: Fraction, step: Fraction) -> None:
    # No jumps: a small step in quantity moves the charge by at most step x the highest price.
    assert graduated_charge(TIERS, quantity + step) - graduated_charge(
        TIERS, quantity
    ) <= step * Fraction("0.10")
