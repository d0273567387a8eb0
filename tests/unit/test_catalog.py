"""Rate cards and the org directory: versions, validation messages that name file and field."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.catalog import check_catalog, load_org_directory, load_rate_card, load_rate_cards
from billing.cli.app import app
from billing.errors import ConfigError, RateCardError
from billing.periods import BillingPeriod

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


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
        (
            "meters:\n  duration: {unit: hour}\n",
            "exactly one of unit_price, tiers, or package_size",
        ),
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


CORPUS = Path(__file__).resolve().parents[1] / "corpus"

EXPECTED_CORPUS_PROBLEMS = [
    ("duplicate_b.yaml:1:", "version 2026-01-01 is also defined in"),
    ("float_price.yaml:5:", 'field meters.duration.unit_price: write 0.1 in quotes ("0.1")'),
    (
        "negative_price.yaml:6:",
        "field meters.memory.unit_price: Input should be greater than or equal to 0",
    ),
    (
        "tiers_out_of_order.yaml:7:",
        "field meters.workspace_out.tiers: tier up_to bounds must be strictly",
    ),
    (
        "unbounded_not_last.yaml:7:",
        "field meters.workspace_out.tiers: only the last tier may have up_to",
    ),
    ("unknown_currency.yaml:2:", "field currency: unknown ISO 4217 currency 'ZZZ'"),
    ("unknown_meter.yaml:6:", "field meters.gpu_hours: unknown meter 'gpu_hours'"),
    (
        "unknown_unit.yaml:5:",
        "field meters.duration: meter 'duration' is priced per 'hour', not 'minute'",
    ),
    ("bad_orgs.yaml:9:", "field orgs.1.email: 'not-an-address' is not a plain email address"),
    (
        "bad_orgs.yaml:6:",
        "field rate_card: org org-1 points to rate card 'premium', which does not exist",
    ),
    ("bad_orgs.yaml:12:", "org org-3: override of 'memory', which rate card 'standard'"),
]


def test_ratecards_check_names_file_line_and_field_of_every_problem() -> None:
    problems = check_catalog(CORPUS / "bad_cards", CORPUS / "bad_orgs.yaml")
    assert len(problems) == len(EXPECTED_CORPUS_PROBLEMS)
    for where, what in EXPECTED_CORPUS_PROBLEMS:
        assert any(where in problem and what in problem for problem in problems), (where, problems)


def test_ratecards_check_command_exits_1_on_the_corpus_and_0_on_the_examples() -> None:
    runner = CliRunner()
    bad = runner.invoke(
        app,
        ["ratecards", "check", str(CORPUS / "bad_cards"), "--orgs", str(CORPUS / "bad_orgs.yaml")],
    )
    assert bad.exit_code == 1
    good = runner.invoke(app, ["ratecards", "check"])
    assert good.exit_code == 0, good.output
    assert "ok: 4 rate-card versions of 3 cards" in good.output


def test_ratecards_show_prints_the_applicable_version() -> None:
    shown = CliRunner().invoke(app, ["ratecards", "show", "standard", "--period", "2026-06"])
    assert shown.exit_code == 0, shown.output
    assert "version 2026-01-01" in shown.output
    assert "0.12 / hour" in shown.output


def test_effective_until_stops_a_version(tmp_path: Path) -> None:
    write(
        tmp_path,
        GOOD_HEAD
        + "effective_until: 2026-06-30\nmeters:\n  duration: {unit: hour, unit_price: '1'}\n",
    )
    catalog = load_rate_cards(tmp_path)
    assert catalog.card_for("c", BillingPeriod.parse("2026-06"), "o").effective_until is not None
    with pytest.raises(
        RateCardError, match=r"org o: rate card 'c' version 2026-01-01 ended on 2026-06-30"
    ):
        catalog.card_for("c", BillingPeriod.parse("2026-07"), "o")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("{gpu: {unit_price: '1'}}", "override of 'gpu', which rate card 'standard'"),
        ("{duration: {unit_price: '-1'}}", "orgs.0.overrides.duration.unit_price"),
        (
            "{duration: {tiers: [{up_to: null, unit_price: '1'}], package_price: '1'}}",
            "override of 'duration'",
        ),
    ],
)
def test_bad_overrides_are_named(tmp_path: Path, override: str, message: str) -> None:
    orgs = write(
        tmp_path,
        "default_rate_card: standard\norgs:\n  - org_id: a\n    name: A\n"
        f"    overrides: {override}\n",
        "orgs.yaml",
    )
    problems = check_catalog(EXAMPLES / "ratecards", orgs)
    assert any(message in problem and "orgs.yaml:" in problem for problem in problems), problems
