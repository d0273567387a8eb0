"""Shared-cost rules of the cost-centre file: whose cost (or what fixed overhead) goes where."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from billing.money import minor_unit_exponent

UNALLOCATED = "unallocated"
CentreName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=200)]
RuleName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=r"^\S+$")
]
# The places a fixed percentage may have: its ratio (percentage / 100) then fits allocation.csv's
# six-place `ratio` cell exactly.
PERCENT_PLACES = 4


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError(f'write {value} in quotes ("{value}"): YAML reads it as a binary float')
    if isinstance(value, bool):
        raise ValueError(f"expected a number in quotes, got {value}")
    return value


ExactNumber = Annotated[Decimal, BeforeValidator(_no_float), Field(allow_inf_nan=False)]
Method = Literal["even", "weighted", "fixed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SharedSource(_Strict):
    """What a rule shares out: one centre's cost (`unallocated` too), named orgs, API keys or
    users, or a fixed monthly `amount` in one `currency` that is on no invoice."""

    centre: CentreName | None = None
    orgs: tuple[Identifier, ...] | None = None
    api_keys: tuple[Identifier, ...] | None = None
    users: tuple[Identifier, ...] | None = None
    amount: ExactNumber | None = None
    currency: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SharedSource:
        given = [
            name
            for name in ("centre", "orgs", "api_keys", "users", "amount")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of centre, orgs, api_keys, users or amount"
                + (f" (got {', '.join(given)})" if given else "")
            )
        for name in ("orgs", "api_keys", "users"):
            if getattr(self, name) == ():
                raise ValueError(f"{name} must list at least one id")
        if self.amount is None:
            if self.currency is not None:
                raise ValueError("currency goes only with a fixed amount")
            return self
        if self.currency is None:
            raise ValueError("a fixed amount needs its currency (e.g. currency: USD)")
        try:
            places = minor_unit_exponent(self.currency)
        except ValueError as error:
            raise ValueError(str(error)) from None
        if self.amount <= 0:
            raise ValueError("the fixed amount must be more than zero")
        if self.amount != self.amount.quantize(Decimal(1).scaleb(-places)):
            raise ValueError(f"{self.amount} has more places than {self.currency} allows")
        return self

    def matches(
        self, centre: str, org_id: str, api_key_id: str | None, user_id: str | None
    ) -> bool:
        """Whether a line with this direct centre, org, API key and user is this source's."""
        if self.centre is not None:
            return centre == self.centre
        if self.orgs is not None:
            return org_id in self.orgs
        if self.api_keys is not None:
            return api_key_id is not None and api_key_id in self.api_keys
        if self.users is not None:
            return user_id is not None and user_id in self.users
        return False


class SharedTargets(_Strict):
    """Where a rule's cost goes and by which method."""

    method: Method
    centres: tuple[CentreName, ...] | None = None
    exclude: tuple[CentreName, ...] = ()
    percentages: dict[CentreName, ExactNumber] | None = None

    @field_validator("percentages")
    @classmethod
    def _exact_percentages(cls, value: dict[str, Decimal] | None) -> dict[str, Decimal] | None:
        if value is None:
            return None
        for centre, percent in value.items():
            if percent > 100:
                raise ValueError(f"{centre}: a percentage cannot be more than 100, got {percent}")
            if percent <= 0:
                raise ValueError(f"{centre}: a percentage must be more than zero, got {percent}")
            if percent != percent.quantize(Decimal(1).scaleb(-PERCENT_PLACES)):
                raise ValueError(f"{centre}: {percent} has more than {PERCENT_PLACES} places")
        total = sum(value.values(), Decimal(0))
        if total != 100:
            raise ValueError(f"the percentages must add up to exactly 100, they add up to {total}")
        return value

    @model_validator(mode="after")
    def _method_fits(self) -> SharedTargets:
        if self.method == "fixed":
            if self.percentages is None:
                raise ValueError("method fixed needs percentages (centre: percent, adding to 100)")
            if self.centres is not None or self.exclude:
                raise ValueError(
                    "method fixed takes its centres from percentages: drop centres and exclude"
                )
        elif self.percentages is not None:
            raise ValueError(f"percentages go only with method fixed, not {self.method}")
        if self.centres == ():
            raise ValueError("centres must list at least one centre (or be left out)")
        return self


class SharedRule(_Strict):
    """One `shared:` rule: its name (unique in the file), its source and its targets."""

    name: RuleName
    source: SharedSource = Field(alias="from")
    to: SharedTargets

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _not_to_itself(self) -> SharedRule:
        own = self.source.centre
        listed = tuple(self.to.centres or ()) + tuple(self.to.percentages or {})
        if own is not None and own in listed:
            raise ValueError(f"centre {own} cannot share its cost with itself")
        return self

    @property
    def overhead(self) -> bool:
        """A fixed monthly amount rather than the cost of invoiced lines."""
        return self.source.amount is not None

    def explicit_targets(self) -> tuple[str, ...] | None:
        """The centres named by the rule (percentages' or `centres`, less `exclude`), in name
        order; None when it takes the default targets."""
        if self.to.percentages is not None:
            return tuple(sorted(self.to.percentages))
        if self.to.centres is None:
            return None
        return tuple(sorted(set(self.to.centres) - set(self.to.exclude)))

    def fixed_weights(self, targets: tuple[str, ...]) -> list[Fraction]:
        """The fixed percentages of `targets` as exact ratios."""
        percentages = self.to.percentages or {}
        return [Fraction(percentages[centre]) / 100 for centre in targets]


def duplicate_names(rules: list[Any]) -> list[tuple[int, str]]:
    """(index, name) of every rule whose name an earlier rule already took (raw or parsed)."""
    seen: set[str] = set()
    repeated: list[tuple[int, str]] = []
    for index, rule in enumerate(rules):
        name = rule.get("name") if isinstance(rule, dict) else getattr(rule, "name", None)
        if not isinstance(name, str):
            continue
        name = name.strip()
        if name in seen:
            repeated.append((index, name))
        seen.add(name)
    return repeated
