"""The rate-card and org-directory file formats as strict pydantic models."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from billing.addresses import plain_address_problem
from billing.domain import METERS, MeterPrice, Tier
from billing.money import minor_unit_exponent


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError(f'write {value} in quotes ("{value}"): YAML reads it as a binary float')
    return value


ExactNumber = Annotated[Decimal, BeforeValidator(_no_float), Field(allow_inf_nan=False)]
Price = Annotated[ExactNumber, Field(ge=0)]
PositiveNumber = Annotated[ExactNumber, Field(gt=0)]
PRICING_MODEL_FIELDS = ("unit_price", "tiers", "tier_mode", "package_size", "package_price")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierSpec(_Strict):
    up_to: PositiveNumber | None
    unit_price: Price


class MeterSpec(_Strict):
    """One charge of a card; `name` is the key it stands under in `meters:`."""

    name: str
    meter: str | None = None
    unit: str
    unit_price: Price | None = None
    tiers: list[TierSpec] | None = None
    tier_mode: Literal["graduated", "volume"] | None = None
    package_size: PositiveNumber | None = None
    package_price: Price | None = None
    included: Price = Decimal(0)
    minimum: Price | None = None
    maximum: Price | None = None
    session_kind: Literal["standard", "browser"] | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> MeterSpec:
        measured = self.meter or self.name
        if measured not in METERS:
            known = ", ".join(METERS)
            via = f" (meter: {measured})" if self.meter else ""
            raise ValueError(f"unknown meter {self.name!r}{via}; known meters: {known}")
        if self.unit != METERS[measured].unit:
            raise ValueError(
                f"meter {measured!r} is priced per {METERS[measured].unit!r}, not {self.unit!r}"
            )
        models = [
            self.unit_price is not None,
            self.tiers is not None,
            self.package_size is not None or self.package_price is not None,
        ]
        if sum(models) != 1:
            raise ValueError(
                "give exactly one of unit_price, tiers, or package_size with package_price"
            )
        if (self.package_size is None) != (self.package_price is None):
            raise ValueError("package pricing needs both package_size and package_price")
        if self.tier_mode is not None and self.tiers is None:
            raise ValueError("tier_mode applies only to tiers")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} is above maximum {self.maximum}")
        return self

    @field_validator("tiers")
    @classmethod
    def _tiers_in_order(cls, tiers: list[TierSpec] | None) -> list[TierSpec] | None:
        if tiers is not None:
            _check_tiers(tiers)
        return tiers

    def to_price(self) -> MeterPrice:
        return MeterPrice(
            name=self.name,
            meter=self.meter or self.name,
            unit=self.unit,
            unit_price=self.unit_price,
            tiers=tuple(Tier(t.up_to, t.unit_price) for t in self.tiers or ()),
            tier_mode=self.tier_mode or "graduated",
            package_size=self.package_size,
            package_price=self.package_price,
            included=self.included,
            minimum=self.minimum,
            maximum=self.maximum,
            session_kind=self.session_kind,
            description=self.description,
        )


def _check_tiers(tiers: list[TierSpec]) -> None:
    if not tiers:
        raise ValueError("tiers must not be empty")
    bounds = [tier.up_to for tier in tiers]
    if any(bound is None for bound in bounds[:-1]):
        raise ValueError("only the last tier may have up_to: null")
    if bounds[-1] is not None:
        raise ValueError("the last tier must have up_to: null (unbounded)")
    finite = [bound for bound in bounds if bound is not None]
    if any(upper <= lower for lower, upper in pairwise(finite)):
        raise ValueError(
            "tier up_to bounds must be strictly increasing (tiers out of order or overlapping)"
        )


# VAT numbers of the EU (and Northern Ireland, XI) by their country prefix: the format only
# (letters, digits and length), after spaces, dots and hyphens are taken out.
EU_VAT_PATTERNS: dict[str, str] = {
    "AT": r"ATU\d{8}",
    "BE": r"BE[01]\d{9}",
    "BG": r"BG\d{9,10}",
    "CY": r"CY\d{8}[A-Z]",
    "CZ": r"CZ\d{8,10}",
    "DE": r"DE\d{9}",
    "DK": r"DK\d{8}",
    "EE": r"EE\d{9}",
    "EL": r"EL\d{9}",
    "ES": r"ES[A-Z0-9]\d{7}[A-Z0-9]",
    "FI": r"FI\d{8}",
    "FR": r"FR[A-HJ-NP-Z0-9]{2}\d{9}",
    "HR": r"HR\d{11}",
    "HU": r"HU\d{8}",
    "IE": r"IE(\d{7}[A-W][A-I]?|\d[A-Z+*]\d{5}[A-W])",
    "IT": r"IT\d{11}",
    "LT": r"LT(\d{9}|\d{12})",
    "LU": r"LU\d{8}",
    "LV": r"LV\d{11}",
    "MT": r"MT\d{8}",
    "NL": r"NL\d{9}B\d{2}",
    "PL": r"PL\d{10}",
    "PT": r"PT\d{9}",
    "RO": r"RO\d{2,10}",
    "SE": r"SE\d{10}01",
    "SI": r"SI\d{8}",
    "SK": r"SK\d{10}",
    "XI": r"XI(\d{9}|\d{12}|GD\d{3}|HA\d{3})",
}
# The VAT prefix of a country where it is not the country code (Greece).
VAT_PREFIX = {"GR": "EL"}


def tax_id_problem(tax_id: str, country: str | None) -> str | None:
    """What is wrong with a tax id (None: nothing): an EU VAT number (by its prefix, or the
    org's EU country) must have that country's format; any other is non-empty printable text."""
    if not tax_id.strip():
        return "must not be empty (leave tax_id out instead)"
    if any(not ch.isprintable() for ch in tax_id):
        return "must not contain control characters (line breaks, tabs, ...)"
    if len(tax_id) > 64:
        return f"has {len(tax_id)} characters; at most 64"
    compact = re.sub(r"[\s.\-]", "", tax_id).upper()
    expected = VAT_PREFIX.get(country or "", country or "")
    prefix = compact[:2]
    if expected in EU_VAT_PATTERNS and prefix != expected:
        return f"a VAT number of {country} starts with {expected}"
    pattern = EU_VAT_PATTERNS.get(prefix)
    if pattern is None:
        return None
    if not re.fullmatch(pattern, compact):
        example = {"DE": "DE123456789", "FR": "FRXX123456789", "NL": "NL123456789B01"}
        hint = f" (e.g. {example[prefix]})" if prefix in example else ""
        return f"not the format of a {prefix} VAT number{hint}"
    return None


def price_to_spec_input(price: MeterPrice) -> dict[str, Any]:
    """A MeterPrice back as MeterSpec input, so overrides can be merged and re-validated."""
    values: dict[str, Any] = {
        "name": price.name,
        "meter": price.meter if price.meter != price.name else None,
        "unit": price.unit,
        "included": price.included,
        "minimum": price.minimum,
        "maximum": price.maximum,
        "session_kind": price.session_kind,
        "description": price.description,
    }
    if price.tiers:
        values["tiers"] = [{"up_to": t.up_to, "unit_price": t.unit_price} for t in price.tiers]
        values["tier_mode"] = price.tier_mode
    elif price.package_size is not None:
        values["package_size"] = price.package_size
        values["package_price"] = price.package_price
    else:
        values["unit_price"] = price.unit_price
    return values


class RateCardSpec(_Strict):
    id: str = Field(min_length=1)
    currency: str
    effective_from: date
    effective_until: date | None = None
    minimum_charge: Price | None = None
    description: str | None = None
    meters: dict[str, MeterSpec] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _name_the_meters(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("meters"), dict):
            meters = {
                name: ({**spec, "name": name} if isinstance(spec, dict) else spec)
                for name, spec in data["meters"].items()
            }
            return {**data, "meters": meters}
        return data

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        minor_unit_exponent(value)
        return value.upper()

    @model_validator(mode="after")
    def _dates_in_order(self) -> RateCardSpec:
        if self.effective_until is not None and self.effective_until < self.effective_from:
            raise ValueError("effective_until is before effective_from")
        return self


class MeterOverrideSpec(_Strict):
    """Prices of one charge replaced for one org; the measured meter and unit stay the card's."""

    unit_price: Price | None = None
    tiers: list[TierSpec] | None = None
    tier_mode: Literal["graduated", "volume"] | None = None
    package_size: PositiveNumber | None = None
    package_price: Price | None = None
    included: Price | None = None
    minimum: Price | None = None
    maximum: Price | None = None
    description: str | None = None


class OrgSpec(_Strict):
    org_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    address: str = ""
    email: list[str] = Field(default_factory=list)
    rate_card: str | None = None
    overrides: dict[str, MeterOverrideSpec] = Field(default_factory=dict)
    discount_percent: Annotated[ExactNumber, Field(ge=0, le=100)] | None = None
    minimum_commitment: Price | None = None
    country: str | None = None
    tax_id: str | None = None
    # `{rate: ID}`, `reverse_charge` (needs tax_id) or `{exempt: REASON}`; absent: the default.
    tax: str | dict[str, str] | None = None
    purchase_order: str | None = None

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Z]{2}", value):
            raise ValueError("must be an ISO 3166-1 alpha-2 country code in capitals (DE, FR, US)")
        return value

    @field_validator("purchase_order")
    @classmethod
    def _purchase_order(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.strip():
                raise ValueError("must not be empty (leave purchase_order out instead)")
            if len(value) > 200:
                raise ValueError(f"has {len(value)} characters; at most 200")
        return value

    @field_validator("tax")
    @classmethod
    def _tax_rule(cls, value: str | dict[str, str] | None) -> str | dict[str, str] | None:
        if value is None:
            return None
        shapes = "write {rate: ID}, reverse_charge or {exempt: REASON}"
        if isinstance(value, str):
            if value != "reverse_charge":
                raise ValueError(f"unknown tax rule {value!r}: {shapes}")
            return value
        if len(value) != 1 or next(iter(value)) not in ("rate", "exempt"):
            raise ValueError(f"{shapes}, not {value!r}")
        kind, text = next(iter(value.items()))
        if not text.strip():
            raise ValueError(
                "an exemption needs its reason (printed on the invoice)"
                if kind == "exempt"
                else "a rate needs the id of a rate in BILLING_TAX_RATES"
            )
        if kind == "exempt" and len(text) > 400:
            raise ValueError(f"the exemption's reason has {len(text)} characters; at most 400")
        return value

    @model_validator(mode="after")
    def _tax_id_fits(self) -> OrgSpec:
        if self.tax_id is not None:
            problem = tax_id_problem(self.tax_id, self.country)
            if problem is not None:
                raise ValueError(f"tax_id {self.tax_id!r}: {problem}")
        if self.tax == "reverse_charge" and not (self.tax_id or "").strip():
            raise ValueError(
                "tax: reverse_charge needs the customer's tax_id (a reverse-charge invoice "
                "must carry the customer's VAT number)"
            )
        return self

    @field_validator("email")
    @classmethod
    def _plain_addresses(cls, addresses: list[str], info: ValidationInfo) -> list[str]:
        org_id = info.data.get("org_id", "(no valid org_id)")
        for address in addresses:
            problem = plain_address_problem(address)
            if problem is not None:
                raise ValueError(
                    f"{address!r} is not a plain email address (name@example.com) "
                    f"of org {org_id}: {problem}"
                )
        return addresses

    @field_validator("name", "org_id")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(not ch.isprintable() for ch in value):
            raise ValueError("must not contain control characters (line breaks, tabs, ...)")
        return value


class OrgDirectorySpec(_Strict):
    default_rate_card: str = Field(min_length=1)
    orgs: list[OrgSpec] = Field(default_factory=list)
