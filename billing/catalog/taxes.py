"""The tax rates file (BILLING_TAX_RATES): validated like rate cards (every problem as
`file:line: field a.b: message`, all at once), and an org's tax rule resolved for a period."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from billing.catalog.loader import load_org_directory
from billing.catalog.schema import ExactNumber
from billing.catalog.yamlsource import YamlSource, file_problems, loaded, read_yaml
from billing.config import Settings
from billing.domain import OrgAccount, TaxRule
from billing.errors import ConfigError
from billing.periods import BillingPeriod
from billing.states import TaxTreatment
from billing.taxes import DEFAULT_REVERSE_CHARGE_NOTE, EXEMPT_METER, REVERSE_CHARGE_METER

WhereOf = Callable[..., str]  # (org_id, *field) -> "file:line" of the org's entry
NO_TAX = "none"  # a default that means: no tax line at all
RATE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
JURISDICTION = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")
COUNTRY = re.compile(r"^[A-Z]{2}$")
# The stored columns: invoice_charge.meter holds 50, description 200, pricing 500.
RATE_ID_LENGTH = 50
NAME_LENGTH = 100
NOTE_LENGTH = 400


def _printable(value: str) -> str:
    if any(not ch.isprintable() for ch in value):
        raise ValueError("must not contain control characters (line breaks, tabs, ...)")
    return value


class TaxRateSpec(BaseModel):
    """One version of a named rate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=RATE_ID_LENGTH)]
    name: Annotated[str, Field(min_length=1, max_length=NAME_LENGTH)]
    jurisdiction: str
    percent: Annotated[ExactNumber, Field(ge=0, le=100)]
    effective_from: date
    effective_until: date | None = None

    @field_validator("id")
    @classmethod
    def _plain_id(cls, value: str) -> str:
        if not RATE_ID.match(value):
            raise ValueError(
                "a rate id is lower-case letters, digits, '.', '_' and '-' (e.g. de-vat-standard)"
            )
        if value in (NO_TAX, REVERSE_CHARGE_METER, EXEMPT_METER):
            raise ValueError(f"{value!r} is reserved; choose another id")
        return value

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return _printable(value)

    @field_validator("jurisdiction")
    @classmethod
    def _jurisdiction(cls, value: str) -> str:
        if not JURISDICTION.match(value):
            raise ValueError(
                "must be an ISO 3166-1 alpha-2 country (DE) or a country and region (US-NY)"
            )
        return value

    @field_validator("effective_until")
    @classmethod
    def _after_start(cls, value: date | None, info: Any) -> date | None:
        start = info.data.get("effective_from")
        if value is not None and start is not None and value < start:
            raise ValueError("effective_until is before effective_from")
        return value


class TaxRatesSpec(BaseModel):
    """The file: rates, the default rule per issuer country, the reverse-charge wording."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rates: Annotated[list[TaxRateSpec], Field(min_length=1)]
    defaults: dict[str, str] = Field(default_factory=dict)
    reverse_charge_note: Annotated[str, Field(min_length=1, max_length=NOTE_LENGTH)] = (
        DEFAULT_REVERSE_CHARGE_NOTE
    )

    @field_validator("reverse_charge_note")
    @classmethod
    def _plain_note(cls, value: str) -> str:
        return _printable(value.strip())


@dataclass(frozen=True)
class TaxRates:
    """Every version of every rate, the defaults and the reverse-charge wording."""

    rates: tuple[TaxRateSpec, ...]
    defaults: dict[str, str]
    reverse_charge_note: str
    source: str = ""

    def ids(self) -> list[str]:
        return sorted({rate.id for rate in self.rates})

    def in_force(self, rate_id: str, day: date) -> TaxRateSpec | None:
        """The version of a rate in force on a day (None: none is)."""
        for rate in self.rates:
            if rate.id != rate_id or rate.effective_from > day:
                continue
            if rate.effective_until is None or rate.effective_until >= day:
                return rate
        return None

    def rate_rule(self, rate_id: str, period: BillingPeriod, who: str) -> TaxRule:
        """The rule of a named rate for a period: the version in force on its first day."""
        day = period.first_day
        if rate_id not in self.ids():
            raise ConfigError(
                f"{who}: tax rate {rate_id!r} does not exist in {self.source or 'the tax file'} "
                f"(known: {', '.join(self.ids())})"
            )
        rate = self.in_force(rate_id, day)
        if rate is None:
            raise ConfigError(
                f"{who}: tax rate {rate_id!r} is not in force on {day} (the first day of "
                f"{period}); add a version of it in {self.source or 'the tax file'}"
            )
        treatment = TaxTreatment.ZERO_RATED if rate.percent == 0 else TaxTreatment.STANDARD
        return TaxRule(
            rate_id=rate.id,
            name=rate.name,
            jurisdiction=rate.jurisdiction,
            percent=rate.percent,
            treatment=treatment,
        )

    def rule_for(
        self, account: OrgAccount, period: BillingPeriod, issuer_country: str
    ) -> TaxRule | None:
        """An org's rule for a period: its own `tax`, else the issuer country's default
        (`none`: no tax at all, None). A ConfigError names the org and what to fix."""
        who = f"org {account.org_id}"
        tax = account.tax
        if tax is not None:
            if tax.kind == "rate":
                return self.rate_rule(tax.value, period, who)
            if tax.kind == "reverse_charge":
                return TaxRule(
                    rate_id=REVERSE_CHARGE_METER,
                    name="Reverse charge",
                    jurisdiction=account.country,
                    percent=Decimal(0),
                    treatment=TaxTreatment.REVERSE_CHARGE,
                    note=self.reverse_charge_note,
                )
            return TaxRule(
                rate_id=EXEMPT_METER,
                name="Exempt",
                jurisdiction=account.country,
                percent=Decimal(0),
                treatment=TaxTreatment.EXEMPT,
                note=tax.value,
            )
        default = self.defaults.get(issuer_country.upper())
        if default is None:
            raise ConfigError(
                f"{who} names no tax rule and {self.source or 'the tax file'} has no default "
                f"for the issuer's country {issuer_country!r} (BILLING_ISSUER_COUNTRY): add "
                f"defaults: {{{issuer_country.upper()}: none}} or a rate id"
            )
        if default == NO_TAX:
            return None
        return self.rate_rule(default, period, f"{who} (default of {issuer_country.upper()})")


def _cross_checks(source: YamlSource, spec: TaxRatesSpec) -> list[str]:
    """What one entry cannot see: versions of an id that overlap, defaults naming nothing."""
    problems: list[str] = []
    by_id: dict[str, list[tuple[int, TaxRateSpec]]] = {}
    for index, rate in enumerate(spec.rates):
        by_id.setdefault(rate.id, []).append((index, rate))
    for rate_id, versions in by_id.items():
        ordered = sorted(versions, key=lambda item: item[1].effective_from)
        for (_, earlier), (index, later) in pairwise(ordered):
            if earlier.effective_until is None or earlier.effective_until >= later.effective_from:
                where = source.where(("rates", index, "effective_from"))
                problems.append(
                    f"{where}: field rates.{index}.effective_from: rate {rate_id!r} version of "
                    f"{later.effective_from} overlaps the version of {earlier.effective_from} "
                    "(give the earlier one an effective_until before it)"
                )
    known = set(by_id)
    for country, rule in spec.defaults.items():
        where = source.where(("defaults", country))
        if not COUNTRY.match(str(country)):
            problems.append(
                f"{where}: field defaults.{country}: an issuer country is ISO 3166-1 alpha-2 "
                "in capitals (US, DE)"
            )
        if rule != NO_TAX and rule not in known:
            problems.append(
                f"{where}: field defaults.{country}: tax rate {rule!r} does not exist "
                f"(known: {', '.join(sorted(known))}, or none)"
            )
    return problems


def _read(path: Path) -> tuple[TaxRates | None, list[str]]:
    if not path.is_file():
        raise ConfigError(f"{path}: tax rates file not found; fix BILLING_TAX_RATES or unset it")
    source = read_yaml(path)
    if not isinstance(source.data, dict):
        return None, [f"{path}:1: field (top level): must be a mapping with a rates: list"]
    try:
        spec = TaxRatesSpec.model_validate(source.data)
    except ValidationError as error:
        return None, source.problems(error)
    problems = _cross_checks(source, spec)
    rates = TaxRates(
        rates=tuple(spec.rates),
        defaults={str(country): rule for country, rule in spec.defaults.items()},
        reverse_charge_note=spec.reverse_charge_note,
        source=str(path),
    )
    return rates, problems


def check_tax_rates(path: Path) -> list[str]:
    """Every problem of the tax rates file, each as `file:line: field a.b: message`."""
    return file_problems(_read, path)


def load_tax_rates(path: Path) -> TaxRates:
    """The rates of a BILLING_TAX_RATES file; any problem is one ConfigError naming the file,
    line and field (and how many more there are)."""
    return loaded(*_read(path))


def orgs_naming_tax(orgs: Iterable[OrgAccount]) -> list[str]:
    """The orgs of a directory whose entry names a tax rule (`tax:`)."""
    return sorted(account.org_id for account in orgs if account.tax is not None)


def unset_warning(org_ids: Sequence[str]) -> str:
    """The one warning when orgs name tax rules but no tax file is configured."""
    shown = ", ".join(org_ids[:5]) + (", …" if len(org_ids) > 5 else "")
    return (
        f"warning: {len(org_ids)} org(s) name a tax rule ({shown}) but BILLING_TAX_RATES is "
        "unset: no tax is charged; set BILLING_TAX_RATES to a tax rates file "
        "(see examples/tax_rates.yaml)"
    )


def check_directory_taxes(
    rates: TaxRates, orgs: Iterable[OrgAccount], issuer_country: str, where: WhereOf
) -> list[str]:
    """Orgs naming a rate the file does not have, and a missing default for the issuer's
    country (every org without `tax:`, and every unlisted org, needs it)."""
    problems: list[str] = []
    known = set(rates.ids())
    for account in orgs:
        tax = account.tax
        if tax is not None and tax.kind == "rate" and tax.value not in known:
            problems.append(
                f"{where(account.org_id, 'tax')}: field tax.rate: org {account.org_id} names "
                f"tax rate {tax.value!r}, which {rates.source} does not have "
                f"(known: {', '.join(sorted(known))})"
            )
    if issuer_country.upper() not in rates.defaults:
        problems.append(
            f"{rates.source}:1: field defaults: no default for the issuer's country "
            f"{issuer_country.upper()!r} (BILLING_ISSUER_COUNTRY), which orgs without tax: "
            f"use; add {issuer_country.upper()}: none or a rate id"
        )
    return problems


def check_period_taxes(
    rates: TaxRates, orgs: Iterable[OrgAccount], issuer_country: str, period: BillingPeriod
) -> None:
    """Every listed org's rule (and the default, for unlisted orgs) resolves for the period;
    the first that does not is a ConfigError, raised before anything is fetched or numbered."""
    problems: list[str] = []
    for account in orgs:
        try:
            rates.rule_for(account, period, issuer_country)
        except ConfigError as error:
            problems.append(str(error))
    try:
        rates.rule_for(OrgAccount("(orgs not in the directory)", ""), period, issuer_country)
    except ConfigError as error:
        problems.append(str(error))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)


def check_taxes(settings: Settings, orgs_file: Path) -> tuple[list[str], str]:
    """What `billing ratecards check` says about taxes: every problem of BILLING_TAX_RATES and
    of the orgs' rules against it, and a warning ("" for none) when it is unset while orgs
    name tax rules."""
    try:
        directory = load_org_directory(orgs_file)
    except ConfigError:
        directory = None  # check_catalog has listed the directory's problems already
    orgs = list(directory.orgs.values()) if directory is not None else []
    if settings.tax_rates is None:
        naming = orgs_naming_tax(orgs)
        return [], unset_warning(naming) if naming else ""
    try:
        rates, problems = _read(settings.tax_rates)
    except ConfigError as error:
        return [str(error)], ""
    if rates is None or directory is None:
        return problems, ""
    where = directory.where
    return problems + check_directory_taxes(rates, orgs, settings.issuer_country, where), ""
