"""Rate cards and the org directory: YAML files validated with pydantic into domain objects."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from billing.domain import METERS, MeterPrice, OrgAccount, RateCard, Tier
from billing.errors import ConfigError, RateCardError
from billing.money import minor_unit_exponent
from billing.periods import BillingPeriod

NonNegativeDecimal = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierSpec(_Strict):
    up_to: NonNegativeDecimal | None
    unit_price: NonNegativeDecimal


class MeterSpec(_Strict):
    unit: str
    unit_price: NonNegativeDecimal | None = None
    tiers: list[TierSpec] | None = None
    included: NonNegativeDecimal = Decimal(0)

    @model_validator(mode="after")
    def _one_pricing_model(self) -> MeterSpec:
        if (self.unit_price is None) == (self.tiers is None):
            raise ValueError("give exactly one of unit_price or tiers")
        if self.tiers is not None:
            if not self.tiers:
                raise ValueError("tiers must not be empty")
            bounds = [tier.up_to for tier in self.tiers]
            if any(bound is None for bound in bounds[:-1]):
                raise ValueError("only the last tier may have up_to: null")
            if bounds[-1] is not None:
                raise ValueError("the last tier must have up_to: null (unbounded)")
            finite = [bound for bound in bounds if bound is not None]
            if any(b <= a for a, b in pairwise(finite)) or (finite and finite[0] <= 0):
                raise ValueError("tier up_to bounds must be positive and strictly increasing")
        return self


class RateCardSpec(_Strict):
    id: str = Field(min_length=1)
    currency: str
    effective_from: date
    minimum_charge: NonNegativeDecimal | None = None
    meters: dict[str, MeterSpec] = Field(min_length=1)

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        try:
            minor_unit_exponent(value)
        except ValueError as error:
            raise ValueError(str(error)) from None
        return value.upper()

    @model_validator(mode="after")
    def _known_meters(self) -> RateCardSpec:
        for name, spec in self.meters.items():
            if name not in METERS:
                raise ValueError(f"unknown meter {name!r}; known meters: {', '.join(METERS)}")
            if spec.unit != METERS[name].unit:
                raise ValueError(
                    f"meter {name!r} is priced per {METERS[name].unit!r}, not {spec.unit!r}"
                )
        return self


class OrgSpec(_Strict):
    org_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    email: list[str] = Field(default_factory=list)
    rate_card: str | None = None


class OrgDirectorySpec(_Strict):
    default_rate_card: str = Field(min_length=1)
    orgs: list[OrgSpec] = Field(default_factory=list)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})"
        ) from None


def _describe(error: ValidationError, path: Path) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{path}: field {field}: {first['msg']}{more}"


def _to_rate_card(spec: RateCardSpec, path: Path, content: bytes) -> RateCard:
    meters = tuple(
        MeterPrice(
            meter=name,
            unit=meter.unit,
            unit_price=meter.unit_price,
            tiers=tuple(Tier(t.up_to, t.unit_price) for t in meter.tiers or ()),
            included=meter.included,
        )
        for name, meter in spec.meters.items()
    )
    return RateCard(
        id=spec.id,
        currency=spec.currency,
        effective_from=spec.effective_from,
        meters=meters,
        minimum_charge=spec.minimum_charge,
        source=str(path),
        content_hash=hashlib.sha256(content).hexdigest(),
    )


def load_rate_card(path: Path) -> RateCard:
    """Load and validate one rate-card file."""
    raw = _read_yaml(path)
    try:
        spec = RateCardSpec.model_validate(raw)
    except ValidationError as error:
        raise RateCardError(_describe(error, path)) from None
    return _to_rate_card(spec, path, path.read_bytes())


@dataclass(frozen=True)
class RateCatalog:
    """Every version of every rate card, chosen by id and period."""

    cards: tuple[RateCard, ...]

    def card_for(self, card_id: str, period: BillingPeriod, org_id: str) -> RateCard:
        versions = [
            card
            for card in self.cards
            if card.id == card_id and card.effective_from <= period.first_day
        ]
        if not versions:
            known = sorted({card.id for card in self.cards})
            if card_id not in known:
                raise RateCardError(
                    f"org {org_id}: rate card {card_id!r} does not exist "
                    f"(known: {', '.join(known)})"
                )
            raise RateCardError(
                f"org {org_id}: no version of rate card {card_id!r} "
                f"is effective on {period.first_day}"
            )
        return max(versions, key=lambda card: card.effective_from)


def load_rate_cards(folder: Path) -> RateCatalog:
    """Load every *.yaml / *.yml card of a folder; duplicate (id, effective_from) is an error."""
    if not folder.is_dir():
        raise ConfigError(f"{folder}: rate-card folder not found (set BILLING_RATE_CARDS)")
    paths = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not paths:
        raise ConfigError(f"{folder}: no rate-card files (*.yaml) found")
    cards = [load_rate_card(path) for path in paths]
    seen: dict[tuple[str, date], str] = {}
    for card in cards:
        key = (card.id, card.effective_from)
        if key in seen:
            raise RateCardError(
                f"{card.source}: rate card {card.id!r} version {card.version} "
                f"is also defined in {seen[key]}"
            )
        seen[key] = card.source
    return RateCatalog(tuple(cards))


@dataclass(frozen=True)
class OrgDirectory:
    """Who the orgs are, where their statements go and which card prices them."""

    default_rate_card: str
    orgs: dict[str, OrgAccount]

    def account_for(self, org_id: str) -> OrgAccount:
        """The listed account, or an unlisted one named by its id on the default card."""
        return self.orgs.get(org_id) or OrgAccount(org_id=org_id, name=org_id, listed=False)

    def rate_card_id(self, account: OrgAccount) -> str:
        return account.rate_card_id or self.default_rate_card


def load_org_directory(path: Path) -> OrgDirectory:
    """Load and validate the org directory YAML."""
    raw = _read_yaml(path)
    try:
        spec = OrgDirectorySpec.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, path)) from None
    orgs: dict[str, OrgAccount] = {}
    for index, org in enumerate(spec.orgs):
        if org.org_id in orgs:
            raise ConfigError(
                f"{path}: field orgs.{index}.org_id: org {org.org_id!r} is listed twice"
            )
        orgs[org.org_id] = OrgAccount(
            org_id=org.org_id, name=org.name, emails=tuple(org.email), rate_card_id=org.rate_card
        )
    return OrgDirectory(default_rate_card=spec.default_rate_card, orgs=orgs)


def check_directory_against_catalog(
    directory: OrgDirectory, catalog: RateCatalog, period: BillingPeriod
) -> None:
    """Fail before fetching if any listed org (or the default) points at a card with no version."""
    catalog.card_for(directory.default_rate_card, period, "(default_rate_card)")
    for account in directory.orgs.values():
        catalog.card_for(directory.rate_card_id(account), period, account.org_id)
