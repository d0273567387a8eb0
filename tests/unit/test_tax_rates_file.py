"""The tax rates file and the org directory's tax fields: every problem named by file, line and
field, all at once, like rate cards; `billing ratecards check` reports them and warns when orgs
name tax rules but BILLING_TAX_RATES is unset."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.catalog.loader import check_catalog
from billing.catalog.schema import tax_id_problem
from billing.catalog.taxes import check_tax_rates, load_tax_rates
from billing.cli.app import app
from billing.close import pricing as pricing_module
from billing.close.pricing import load_pricing, warn_of_ignored_tax_rules
from billing.config import Settings
from billing.errors import ConfigError
from billing.periods import BillingPeriod

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BROKEN = """\
rates:
  - id: de-vat-standard
    name: VAT
    jurisdiction: DE
    percent: 19.0
    effective_from: 2007-01-01
  - id: de-vat-standard
    name: VAT
    jurisdiction: DE
    percent: "16"
    effective_from: 2020-07-01
  - id: Bad Id
    name: X
    jurisdiction: Germany
    percent: "120"
    effective_from: 2020-01-01
    colour: blue
defaults:
  US: none
"""

OVERLAPPING = """\
rates:
  - {id: de-vat-standard, name: VAT, jurisdiction: DE, percent: "19", effective_from: 2007-01-01}
  - id: de-vat-standard
    name: VAT
    jurisdiction: DE
    percent: "16"
    effective_from: 2020-07-01
    effective_until: 2020-12-31
defaults:
  US: none
  DE: de-vat-reduced
  usa: none
"""


def write(tmp_path: Path, text: str, name: str = "tax.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_every_field_problem_is_named_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, BROKEN)
    problems = check_tax_rates(path)
    expected = [
        (f"{path}:5: field rates.0.percent:", 'write 19.0 in quotes ("19.0")'),
        (f"{path}:12: field rates.2.id:", "a rate id is lower-case letters"),
        (f"{path}:14: field rates.2.jurisdiction:", "ISO 3166-1 alpha-2"),
        (f"{path}:15: field rates.2.percent:", "less than or equal to 100"),
        (f"{path}:17: field rates.2.colour:", "Extra inputs are not permitted"),
    ]
    assert len(problems) == len(expected), problems
    for (where, what), problem in zip(expected, problems, strict=True):
        assert problem.startswith(where), (where, problem)
        assert what in problem, (what, problem)
    with pytest.raises(ConfigError, match=r"tax\.yaml:5: field rates\.0\.percent: .*and 4 more"):
        load_tax_rates(path)


def test_overlapping_versions_and_defaults_naming_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, OVERLAPPING)
    problems = check_tax_rates(path)
    assert problems == [
        f"{path}:7: field rates.1.effective_from: rate 'de-vat-standard' version of 2020-07-01 "
        "overlaps the version of 2007-01-01 (give the earlier one an effective_until before it)",
        f"{path}:11: field defaults.DE: tax rate 'de-vat-reduced' does not exist "
        "(known: de-vat-standard, or none)",
        f"{path}:12: field defaults.usa: an issuer country is ISO 3166-1 alpha-2 in capitals "
        "(US, DE)",
    ]


def test_a_missing_file_and_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    assert check_tax_rates(tmp_path / "nope.yaml") == [
        f"{tmp_path / 'nope.yaml'}: tax rates file not found; fix BILLING_TAX_RATES or unset it"
    ]
    path = write(tmp_path, "- just a list\n")
    assert check_tax_rates(path) == [
        f"{path}:1: field (top level): must be a mapping with a rates: list"
    ]


def test_the_shipped_example_is_valid() -> None:
    assert check_tax_rates(EXAMPLES / "tax_rates.yaml") == []
    rates = load_tax_rates(EXAMPLES / "tax_rates.yaml")
    assert rates.ids() == ["de-vat-standard", "fr-vat-standard", "gb-zero-rated", "us-ny-sales"]


@pytest.mark.parametrize(
    ("tax_id", "country", "problem"),
    [
        ("DE123456789", "DE", None),
        ("DE 123 456 789", None, None),
        ("FR40303265045", "FR", None),
        ("NL123456789B01", "NL", None),
        ("EL123456789", "GR", None),
        ("ATU12345678", None, None),
        ("12-3456789", "US", None),  # a US EIN: any printable text outside the EU
        ("DE12345678", "DE", "not the format of a DE VAT number (e.g. DE123456789)"),
        ("FR123", None, "not the format of a FR VAT number (e.g. FRXX123456789)"),
        ("123456789", "DE", "a VAT number of DE starts with DE"),
        ("123456789", "GR", "a VAT number of GR starts with EL"),
        ("  ", None, "must not be empty (leave tax_id out instead)"),
        ("DE1\n23", None, "must not contain control characters (line breaks, tabs, ...)"),
    ],
)
def test_vat_number_formats(tax_id: str, country: str | None, problem: str | None) -> None:
    assert tax_id_problem(tax_id, country) == problem


DIRECTORY = """\
default_rate_card: standard
orgs:
  - org_id: org-1
    name: One
    country: Germany
    tax_id: DE12
    tax: reverse_charge
  - org_id: org-2
    name: Two
    tax: reverse_charge
  - org_id: org-3
    name: Three
    tax: {exempt: ""}
  - org_id: org-4
    name: Four
    tax: standard
  - org_id: org-5
    name: Five
    tax: {rate: it-vat}
    purchase_order: PO-77
"""


def test_directory_tax_fields_are_checked_entry_by_entry(tmp_path: Path) -> None:
    orgs = write(tmp_path, DIRECTORY, "orgs.yaml")
    problems = check_catalog(EXAMPLES / "ratecards", orgs)
    assert problems == [
        f"{orgs}:5: field orgs.0.country: must be an ISO 3166-1 alpha-2 country code in "
        "capitals (DE, FR, US)",
        f"{orgs}:8: field orgs.1: tax: reverse_charge needs the customer's tax_id (a "
        "reverse-charge invoice must carry the customer's VAT number)",
        f"{orgs}:13: field orgs.2.tax: an exemption needs its reason (printed on the invoice)",
        f"{orgs}:16: field orgs.3.tax: unknown tax rule 'standard': write {{rate: ID}}, "
        "reverse_charge or {exempt: REASON}",
    ]


def test_ratecards_check_reports_tax_problems_and_warns_when_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = write(
        tmp_path,
        "default_rate_card: standard\norgs:\n"
        "  - {org_id: org-5, name: Five, tax: {rate: it-vat}}\n",
        "orgs.yaml",
    )
    runner = CliRunner()
    monkeypatch.delenv("BILLING_TAX_RATES", raising=False)
    unset = runner.invoke(
        app, ["ratecards", "check", str(EXAMPLES / "ratecards"), "--orgs", str(directory)]
    )
    assert unset.exit_code == 0, unset.output
    assert (
        "warning: 1 org(s) name a tax rule (org-5) but BILLING_TAX_RATES is unset" in unset.output
    )
    monkeypatch.setenv("BILLING_TAX_RATES", str(EXAMPLES / "tax_rates.yaml"))
    taxed = runner.invoke(
        app, ["ratecards", "check", str(EXAMPLES / "ratecards"), "--orgs", str(directory)]
    )
    assert taxed.exit_code == 1
    assert (
        f"{directory}:3: field tax.rate: org org-5 names tax rate 'it-vat', which "
        f"{EXAMPLES / 'tax_rates.yaml'} does not have" in taxed.output.replace("\n", "")
    )
    assert "warning" not in taxed.output


def test_a_close_warns_once_after_its_preflight_when_orgs_name_ignored_tax_rules(
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The example directory names tax rules for org-0001 and org-0004; without
    BILLING_TAX_RATES they are not applied, and the run says so once (not per batch)."""
    pricing = load_pricing(make_settings(), BillingPeriod.parse("2026-10"))
    assert pricing.taxes is None
    assert pricing.ignored_tax_rules == ("org-0001", "org-0004")
    monkeypatch.setattr(pricing_module, "_warned", set())  # as in a fresh process
    with caplog.at_level(logging.WARNING, logger="billing.close.pricing"):
        warn_of_ignored_tax_rules(pricing)
        warn_of_ignored_tax_rules(pricing)
    warnings = [r.getMessage() for r in caplog.records if "name a tax rule" in r.getMessage()]
    assert warnings == [
        "warning: 2 org(s) name a tax rule (org-0001, org-0004) but BILLING_TAX_RATES is unset: "
        "no tax is charged; set BILLING_TAX_RATES to a tax rates file "
        "(see examples/tax_rates.yaml)"
    ]
    taxed = load_pricing(
        make_settings(tax_rates=EXAMPLES / "tax_rates.yaml"), BillingPeriod.parse("2026-10")
    )
    assert taxed.ignored_tax_rules == ()
    assert taxed.tax_rule(taxed.account_for("org-0004")) is not None
