"""Rate cards and the org directory: versions, validation messages that name file and field."""

from pathlib import Path

import pytest

from billing.catalog import load_org_directory, load_rate_card, load_rate_cards
from billing.errors import ConfigError, RateCardError
from billing.periods import BillingPeriod

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_shipped_examples_load_and_versions_apply_by_period() -> None:
    catalog = load_rate_cards(EXAMPLES / "ratecards")
    assert catalog.card_for("standard", BillingPeriod.parse("2026-06"), "o").version == "2026-01-01"
    assert catalog.card_for("standard", BillingPeriod.parse("2026-07"), "o").version == "2026-07-01"
    assert catalog.card_for("enterprise-eur", BillingPeriod.parse("2026-10"), "o").currency == "EUR"
    directory = load_org_directory(EXAMPLES / "orgs.yaml")
    assert directory.account_for("org-0001").name == "Acme Robotics"
    unlisted = directory.account_for("org-9999")
    assert (unlisted.name, unlisted.listed, unlisted.emails) == ("org-9999", False, ())


def test_no_version_before_the_first_is_an_error_naming_org_and_card() -> None:
    catalog = load_rate_cards(EXAMPLES / "ratecards")
    with pytest.raises(RateCardError, match=r"org org-7: no version of rate card 'standard'"):
        catalog.card_for("standard", BillingPeriod.parse("2025-12"), "org-7")
    with pytest.raises(RateCardError, match=r"org org-7: rate card 'nope' does not exist"):
        catalog.card_for("nope", BillingPeriod.parse("2026-10"), "org-7")


def write(tmp_path: Path, text: str, name: str = "card.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD_HEAD = "id: c\ncurrency: USD\neffective_from: 2026-01-01\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("meters:\n  duration: {unit: hour, unit_price: '-1'}\n", "meters.duration.unit_price"),
        ("meters:\n  cpu: {unit: hour, unit_price: '1'}\n", "unknown meter 'cpu'"),
        ("meters:\n  duration: {unit: minute, unit_price: '1'}\n", "priced per 'hour'"),
        ("meters:\n  duration: {unit: hour}\n", "exactly one of unit_price or tiers"),
        (
            "meters:\n  duration:\n    unit: hour\n    tiers:\n"
            "      - {up_to: '20', unit_price: '1'}\n      - {up_to: '10', unit_price: '1'}\n"
            "      - {up_to: null, unit_price: '1'}\n",
            "strictly increasing",
        ),
        (
            "meters:\n  duration:\n    unit: hour\n    tiers:\n"
            "      - {up_to: null, unit_price: '1'}\n      - {up_to: '10', unit_price: '1'}\n",
            "only the last tier",
        ),
        ("meters:\n  duration: {unit: hour, unit_price: '1', colour: red}\n", "colour"),
    ],
)
def test_malformed_cards_name_file_and_field(tmp_path: Path, body: str, message: str) -> None:
    path = write(tmp_path, GOOD_HEAD + body)
    with pytest.raises(RateCardError) as raised:
        load_rate_card(path)
    assert str(path) in str(raised.value)
    assert message in str(raised.value)


def test_unknown_currency_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "id: c\ncurrency: ABC\neffective_from: 2026-01-01\n"
        "meters:\n  duration: {unit: hour, unit_price: '1'}\n",
    )
    with pytest.raises(RateCardError, match=r"field currency: .*unknown ISO 4217 currency"):
        load_rate_card(path)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_HEAD + "meters:\n  duration: {unit: hour\n")
    with pytest.raises(ConfigError, match=r"card.yaml:\d+: not valid YAML"):
        load_rate_card(path)


def test_duplicate_versions_are_rejected(tmp_path: Path) -> None:
    body = GOOD_HEAD + "meters:\n  duration: {unit: hour, unit_price: '1'}\n"
    write(tmp_path, body, "a.yaml")
    write(tmp_path, body, "b.yaml")
    with pytest.raises(RateCardError, match="version 2026-01-01 is also defined in"):
        load_rate_cards(tmp_path)


def test_org_listed_twice_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "default_rate_card: standard\norgs:\n  - {org_id: a, name: A}\n  - {org_id: a, name: B}\n",
        "orgs.yaml",
    )
    with pytest.raises(ConfigError, match=r"orgs.1.org_id: org 'a' is listed twice"):
        load_org_directory(path)
