"""The budgets file (BILLING_BUDGETS): monthly amounts per org, cost centre or API key with
alert thresholds, validated like rate cards (every problem as `file:line: field a.b: message`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from billing.addresses import plain_address_problem
from billing.budgets import Budget
from billing.catalog.schema import ExactNumber
from billing.catalog.yamlsource import file_problems, loaded, read_yaml
from billing.errors import ConfigError
from billing.money import minor_unit_exponent
from billing.states import BudgetScope

DEFAULT_THRESHOLDS = (Decimal(50), Decimal(80), Decimal(100))
ScopeId = Annotated[str, Field(min_length=1, max_length=200)]
Percent = Annotated[ExactNumber, Field(gt=0, le=1000)]
SECTIONS = {
    "orgs": BudgetScope.ORG,
    "cost_centres": BudgetScope.COST_CENTRE,
    "api_keys": BudgetScope.API_KEY,
}


def _thresholds(value: list[Decimal] | None) -> list[Decimal] | None:
    if value is not None and len(set(value)) != len(value):
        raise ValueError("a threshold is listed twice")
    return value


class BudgetSpec(BaseModel):
    """One scope's monthly budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: Annotated[ExactNumber, Field(ge=0)]
    currency: str
    thresholds: Annotated[list[Percent], Field(min_length=1)] | None = None
    contacts: list[str] = []

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        minor_unit_exponent(value)
        return value.upper()

    @field_validator("thresholds")
    @classmethod
    def _distinct(cls, value: list[Decimal] | None) -> list[Decimal] | None:
        return _thresholds(value)

    @field_validator("contacts")
    @classmethod
    def _plain_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            problem = plain_address_problem(address)
            if problem is not None:
                raise ValueError(f"{address!r} is not a plain email address: {problem}")
        return value


class BudgetsSpec(BaseModel):
    """The whole file: default thresholds and the budgets of each kind of scope."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    thresholds: Annotated[list[Percent], Field(min_length=1)] = list(DEFAULT_THRESHOLDS)
    orgs: dict[ScopeId, BudgetSpec] = {}
    cost_centres: dict[ScopeId, BudgetSpec] = {}
    api_keys: dict[ScopeId, BudgetSpec] = {}

    @field_validator("thresholds")
    @classmethod
    def _distinct(cls, value: list[Decimal]) -> list[Decimal]:
        return _thresholds(value) or value


@dataclass(frozen=True)
class Budgets:
    """Every budget of a BILLING_BUDGETS file, in file order by kind (orgs, cost centres, API
    keys)."""

    budgets: tuple[Budget, ...]
    source: str

    def __iter__(self) -> Iterator[Budget]:
        return iter(self.budgets)

    def get(self, scope: BudgetScope, scope_id: str) -> Budget | None:
        return next((b for b in self.budgets if b.scope == scope and b.scope_id == scope_id), None)


def _read(path: Path) -> tuple[Budgets | None, list[str]]:
    if not path.is_file():
        raise ConfigError(f"{path}: budgets file not found; fix BILLING_BUDGETS or unset it")
    source = read_yaml(path)
    if source.data is None:
        return Budgets((), str(path)), []
    if not isinstance(source.data, dict):
        return None, [
            f"{path}:1: field (top level): must be a mapping with orgs, cost_centres, api_keys"
        ]
    try:
        spec = BudgetsSpec.model_validate(source.data)
    except ValidationError as error:
        return None, source.problems(error)
    problems: list[str] = []
    budgets: list[Budget] = []
    for section, scope in SECTIONS.items():
        for scope_id, entry in getattr(spec, section).items():
            places = minor_unit_exponent(entry.currency)
            if entry.amount != entry.amount.quantize(Decimal(1).scaleb(-places)):
                problems.append(
                    f"{source.where((section, scope_id, 'amount'))}: field "
                    f"{section}.{scope_id}.amount: {entry.amount} has more decimals than "
                    f"{entry.currency} has ({places})"
                )
            budgets.append(
                Budget(
                    scope,
                    scope_id,
                    entry.amount,
                    entry.currency,
                    tuple(sorted(entry.thresholds or spec.thresholds)),
                    tuple(entry.contacts),
                )
            )
    return Budgets(tuple(budgets), str(path)), problems


def check_budgets(path: Path) -> list[str]:
    """Every problem of the budgets file, each as `file:line: field a.b: message`."""
    return file_problems(_read, path)


def load_budgets(path: Path) -> Budgets:
    """The budgets of a BILLING_BUDGETS file; any problem is one ConfigError naming the file,
    line and field (and how many more there are)."""
    return loaded(*_read(path))
