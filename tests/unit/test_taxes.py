"""Taxes by hand: the tax of an invoice's net per rate (half-up once per rate per invoice),
reverse charge and exemption at 0.00 with their wording, three rates in two currencies (the
worked example of docs/RATING.md), and the tax a credit note credits."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from billing.catalog.loader import load_org_directory
from billing.catalog.taxes import load_tax_rates
from billing.domain import MeterPrice, OrgAccount, OrgTax, TaxRule
from billing.errors import ConfigError
from billing.periods import BillingPeriod
from billing.rating import Totals, TotalsKey, rate_meter
from billing.states import TaxTreatment
from billing.taxes import DEFAULT_REVERSE_CHARGE_NOTE, credited_tax, tax_charge, tax_charges

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OCTOBER = BillingPeriod.parse("2026-10")


def _rule(rate_id: str, name: str, jurisdiction: str, percent: str) -> TaxRule:
    return TaxRule(rate_id, name, jurisdiction, Decimal(percent), TaxTreatment.STANDARD)


DE = _rule("de-vat-standard", "VAT", "DE", "19")
FR = _rule("fr-vat-standard", "TVA", "FR", "20")
NY = _rule("us-ny-sales", "Sales tax", "US-NY", "8.875")
REVERSE = TaxRule(
    "reverse-charge",
    "Reverse charge",
    "DE",
    Decimal(0),
    TaxTreatment.REVERSE_CHARGE,
    DEFAULT_REVERSE_CHARGE_NOTE,
)
EXEMPT = TaxRule(
    "exempt", "Exempt", "US", Decimal(0), TaxTreatment.EXEMPT, "Registered charity, 501(c)(3)"
)


def test_worked_example_three_rates_in_two_currencies() -> None:
    """docs/RATING.md "Taxes": every figure by hand."""
    # DE 19% on EUR 1,234.50: 234.555, half-up once to 234.56; gross 1,469.06.
    de = tax_charge(DE, 123450, "EUR")
    assert (de.amount_minor, de.net_minor) == (23456, 123450)
    assert (de.description, de.pricing, de.meter) == ("VAT 19%", "19% of 1234.50", DE.rate_id)
    assert de.net_minor + de.amount_minor == 146906
    # FR 20% on EUR 987.65: 197.53 exactly; gross 1,185.18.
    fr = tax_charge(FR, 98765, "EUR")
    assert (fr.amount_minor, fr.description, fr.pricing) == (19753, "TVA 20%", "20% of 987.65")
    assert fr.net_minor + fr.amount_minor == 118518
    # US-NY 8.875% on USD 2,500.00: 221.875, half-up to 221.88; gross 2,721.88.
    ny = tax_charge(NY, 250000, "USD")
    assert (ny.amount_minor, ny.description) == (22188, "Sales tax 8.875%")
    assert ny.pricing == "8.875% of 2500.00"
    assert ny.net_minor + ny.amount_minor == 272188
    assert (ny.percent, ny.treatment) == (Decimal("8.875"), TaxTreatment.STANDARD)


def test_reverse_charge_is_zero_with_the_legal_note() -> None:
    charge = tax_charge(REVERSE, 50000, "EUR")
    assert charge.amount_minor == 0
    assert charge.net_minor == 50000
    assert charge.description == "Reverse charge"
    assert charge.pricing == DEFAULT_REVERSE_CHARGE_NOTE
    assert "Article 196" in charge.pricing
    assert (charge.meter, charge.treatment) == ("reverse-charge", TaxTreatment.REVERSE_CHARGE)


def test_exempt_is_zero_with_its_reason() -> None:
    charge = tax_charge(EXEMPT, 30000, "USD")
    assert (charge.amount_minor, charge.description) == (0, "Exempt")
    assert charge.pricing == "Registered charity, 501(c)(3)"
    assert charge.meter == "exempt"


def test_zero_rated_prints_its_rate() -> None:
    zero = TaxRule("gb-zero-rated", "VAT", "GB", Decimal(0), TaxTreatment.ZERO_RATED)
    charge = tax_charge(zero, 12345, "GBP")
    assert (charge.amount_minor, charge.description, charge.pricing) == (
        0,
        "VAT 0%",
        "0% of 123.45",
    )


def test_half_up_at_the_half_cent() -> None:
    # 1.50 × 19% = 0.285: half-up gives 0.29 (banker's rounding would give 0.28).
    assert tax_charge(DE, 150, "EUR").amount_minor == 29
    # 0.05 × 19% = 0.0095 -> 0.01; 0.02 × 19% = 0.0038 -> 0.00.
    assert tax_charge(DE, 5, "EUR").amount_minor == 1
    assert tax_charge(DE, 2, "EUR").amount_minor == 0
    # JPY has no minor unit: 1,005 × 10% = 100.5 -> 101 yen.
    jp = _rule("jp-consumption", "Consumption tax", "JP", "10")
    assert tax_charge(jp, 1005, "JPY").amount_minor == 101


def test_each_rate_is_rounded_once_per_invoice() -> None:
    # Three nets of 0.03 at 19%: 0.0057 each would round to 0.01 apiece (0.03 in all); summed
    # first, 0.09 × 19% = 0.0171 rounds once to 0.02.
    (charge,) = tax_charges([(DE, 3), (DE, 3), (DE, 3)], "EUR")
    assert (charge.net_minor, charge.amount_minor) == (9, 2)
    # Two rates stay apart, in the order they first appear.
    both = tax_charges([(FR, 1000), (DE, 150), (FR, 5)], "EUR")
    assert [(c.meter, c.net_minor, c.amount_minor) for c in both] == [
        ("fr-vat-standard", 1005, 201),
        ("de-vat-standard", 150, 29),
    ]


def test_a_negative_net_from_a_correction_is_taxed_away_from_zero() -> None:
    # Corrections lowered the net to -1.50: -0.285 rounds half away from zero to -0.29.
    charge = tax_charge(DE, -150, "EUR")
    assert charge.amount_minor == -29
    assert charge.pricing == "19% of -1.50"
    assert tax_charge(NY, -250000, "USD").amount_minor == -22188


def test_credit_note_tax_and_the_remaining_tax_rule() -> None:
    # Invoice: net 100.00 at 19%, tax 19.00. Three notes of a third each.
    first = credited_tax(Decimal(19), 3333, 10000, 1900)
    assert first == 633  # 33.33 × 19% = 6.3327
    second = credited_tax(Decimal(19), 3333, 10000 - 3333, 1900 - first)
    assert second == 633
    # The last note brings the net to zero: it credits exactly what is left, 19.00 - 12.66 =
    # 6.34, although 33.34 × 19% = 6.3346 would round to 6.33.
    last = credited_tax(Decimal(19), 3334, 10000 - 6666, 1900 - 1266)
    assert last == 634
    assert first + second + last == 1900
    # A note of part of the net on a reverse-charge invoice credits no tax.
    assert credited_tax(Decimal(0), 5000, 50000, 0) == 0


def test_the_shipped_tax_file_and_directory_resolve_each_treatment() -> None:
    rates = load_tax_rates(EXAMPLES / "tax_rates.yaml")
    directory = load_org_directory(EXAMPLES / "orgs.yaml")
    acme = directory.account_for("org-0001")
    assert (acme.country, acme.tax_id, acme.tax) == ("DE", "DE123456789", OrgTax("reverse_charge"))
    rule = rates.rule_for(acme, OCTOBER, "US")
    assert rule is not None
    assert (rule.treatment, rule.percent, rule.note) == (
        TaxTreatment.REVERSE_CHARGE,
        Decimal(0),
        rates.reverse_charge_note,
    )
    umbrella = rates.rule_for(directory.account_for("org-0004"), OCTOBER, "US")
    assert umbrella is not None
    assert (umbrella.rate_id, umbrella.percent) == ("fr-vat-standard", Decimal(20))
    assert directory.account_for("org-0002").purchase_order == "PO-4500012345"
    # No rule of its own: the issuer country's default; US: none (no tax line), DE: 19%.
    assert rates.rule_for(directory.account_for("org-0003"), OCTOBER, "US") is None
    default = rates.rule_for(directory.account_for("org-0003"), OCTOBER, "DE")
    assert default is not None
    assert (default.rate_id, default.percent) == ("de-vat-standard", Decimal(19))
    exempt = OrgAccount("org-x", "X", tax=OrgTax("exempt", "Diplomatic mission"))
    rule = rates.rule_for(exempt, OCTOBER, "US")
    assert rule is not None
    assert (rule.treatment, rule.note) == (TaxTreatment.EXEMPT, "Diplomatic mission")
    # The stored snapshot round-trips.
    assert TaxRule.from_json(umbrella.to_json()) == umbrella


def test_an_unknown_rate_or_one_not_in_force_names_the_org() -> None:
    rates = load_tax_rates(EXAMPLES / "tax_rates.yaml")
    unknown = OrgAccount("org-7", "Seven", tax=OrgTax("rate", "it-vat"))
    with pytest.raises(ConfigError, match=r"org org-7: tax rate 'it-vat' does not exist"):
        rates.rule_for(unknown, OCTOBER, "US")
    early = OrgAccount("org-8", "Eight", tax=OrgTax("rate", "us-ny-sales"))
    with pytest.raises(ConfigError, match=r"org org-8: tax rate 'us-ny-sales' is not in force"):
        rates.rule_for(early, BillingPeriod.parse("2019-12"), "US")
    with pytest.raises(ConfigError, match=r"no default for the issuer's country 'GB'"):
        rates.rule_for(OrgAccount("org-9", "Nine"), OCTOBER, "GB")


def test_rating_keeps_the_list_amount_of_a_discounted_charge() -> None:
    # 61.5 h at 0.12 = 7.38; less 10% = 6.642 -> 6.64. The list amount, 7.38, is rounded on
    # its own; without a discount there is none.
    price = MeterPrice(name="duration", meter="duration", unit="hour", unit_price=Decimal("0.12"))
    usage: dict[TotalsKey, Totals] = {("k1", "u1", None): [221_400_000, 0, 0, 0, 0, 0, 0, 0]}
    discounted = rate_meter(price, usage, "USD", discount_percent=Decimal(10))
    assert (discounted.amount_minor, discounted.list_amount_minor) == (664, 738)
    plain = rate_meter(price, usage, "USD")
    assert (plain.amount_minor, plain.list_amount_minor) == (738, None)
