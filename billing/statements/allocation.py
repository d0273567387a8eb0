"""Internal cost allocation: line items regrouped by cost centre, org, API key and user (exact)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from billing.domain import Statement
from billing.errors import ConfigError
from billing.money import format_minor
from billing.statements.csv_files import neutralise, to_csv
from billing.states import ChargeClass

UNALLOCATED = "unallocated"

CentreName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=200)]

ALLOCATION_COLUMNS = (
    "cost_centre",
    "org_id",
    "org_name",
    "invoice_number",
    "api_key_id",
    "user_id",
    "currency",
    "billed_cost",
    "line_items",
    "mapped_by",
)


class CostCentreMap(BaseModel):
    """Who pays internally: API key ids, user ids and org ids mapped to cost-centre names.

    Precedence: the line's API key, else its user, else its org, else `unallocated`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys: dict[Identifier, CentreName] = {}
    users: dict[Identifier, CentreName] = {}
    orgs: dict[Identifier, CentreName] = {}

    def centre_for(
        self, org_id: str, api_key_id: str | None, user_id: str | None
    ) -> tuple[str, str]:
        """The cost centre of one line item and what decided it (api_key, user, org, none)."""
        if api_key_id is not None and api_key_id in self.api_keys:
            return self.api_keys[api_key_id], "api_key"
        if user_id is not None and user_id in self.users:
            return self.users[user_id], "user"
        if org_id in self.orgs:
            return self.orgs[org_id], "org"
        return UNALLOCATED, "none"


def _key_lines(node: yaml.Node, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """The 1-based line of every mapping key in a composed YAML document."""
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, str(key_node.value))
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key))
    return lines


def load_cost_centres(path: Path) -> CostCentreMap:
    """Read and validate a cost-centre file; every problem names the file, line and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: cost-centre file not found; fix BILLING_COST_CENTRES or unset it"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the cost-centre file: {error}") from None
    try:
        data: Any = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if data is None:
        return CostCentreMap()
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:1: expected a mapping with api_keys, users and orgs, got {type(data).__name__}"
        )
    try:
        return CostCentreMap.model_validate(data)
    except ValidationError as error:
        lines = _key_lines(root) if root is not None else {}
        problems = []
        for problem in error.errors():
            location = tuple(str(part) for part in problem["loc"])
            line = next(
                (
                    lines[location[:end]]
                    for end in range(len(location), 0, -1)
                    if location[:end] in lines
                ),
                1,
            )
            problems.append(f"{path}:{line}: field {'.'.join(location)}: {problem['msg']}")
        raise ConfigError("; ".join(problems)) from None


@dataclass(frozen=True, slots=True)
class AllocationRow:
    """The cost of one (cost centre, org, API key, user, currency) in a period."""

    cost_centre: str
    org_id: str
    org_name: str
    invoice_number: str
    api_key_id: str | None
    user_id: str | None
    currency: str
    billed_cost: Decimal
    line_items: int
    mapped_by: str


def org_allocation(statement: Statement, centres: CostCentreMap) -> list[AllocationRow]:
    """One invoice's line items regrouped by cost centre, API key and user, in the order of
    allocation.csv within the org (API key, then user; missing ones last)."""
    grouped: dict[tuple[str | None, str | None], list[Decimal]] = defaultdict(list)
    decided: dict[tuple[str | None, str | None], tuple[str, str]] = {}
    for line in statement.lines:
        if line.charge_class == ChargeClass.TAX:
            continue  # allocation stays on net amounts: tax is the org's, not a cost centre's
        key = (line.api_key_id, line.user_id)
        grouped[key].append(line.amount)
        decided[key] = centres.centre_for(statement.org_id, line.api_key_id, line.user_id)
    rows = [
        AllocationRow(
            cost_centre=decided[(api_key_id, user_id)][0],
            org_id=statement.org_id,
            org_name=statement.org_name,
            invoice_number=statement.invoice_number,
            api_key_id=api_key_id,
            user_id=user_id,
            currency=statement.currency,
            billed_cost=sum(amounts, Decimal(0)),
            line_items=len(amounts),
            mapped_by=decided[(api_key_id, user_id)][1],
        )
        for (api_key_id, user_id), amounts in grouped.items()
    ]
    rows.sort(key=_within_org)
    return rows


def _within_org(row: AllocationRow) -> tuple[bool, str, bool, str]:
    return (row.api_key_id is None, row.api_key_id or "", row.user_id is None, row.user_id or "")


def bucket_order(currency: str, cost_centre: str) -> tuple[str, bool, str]:
    """Where a (currency, cost centre) block stands in allocation.csv: by currency, then cost
    centre with `unallocated` last."""
    return (currency, cost_centre == UNALLOCATED, cost_centre)


def allocate(statements: Sequence[Statement], centres: CostCentreMap) -> list[AllocationRow]:
    """Regroup every line item but tax by cost centre; the rows sum to the invoices' totals
    less their tax exactly (allocation stays on net amounts)."""
    rows = [row for statement in statements for row in org_allocation(statement, centres)]
    rows.sort(key=lambda row: (*bucket_order(row.currency, row.cost_centre), row.org_id))
    return rows


def centre_totals(rows: Iterable[AllocationRow]) -> list[tuple[str, str, Decimal]]:
    """(currency, cost centre, total) in the order of the rows."""
    totals: dict[tuple[str, str], Decimal] = {}
    for row in rows:
        key = (row.currency, row.cost_centre)
        totals[key] = totals.get(key, Decimal(0)) + row.billed_cost
    return [(currency, centre, total) for (currency, centre), total in totals.items()]


def allocation_cells(row: AllocationRow) -> tuple[str, ...]:
    """One row of allocation.csv (ALLOCATION_COLUMNS): safe text cells, the cost at the
    currency's minor unit."""
    return (
        neutralise(row.cost_centre),
        neutralise(row.org_id),
        neutralise(row.org_name),
        neutralise(row.invoice_number),
        neutralise(row.api_key_id),
        neutralise(row.user_id),
        neutralise(row.currency),
        format_minor(row.billed_cost, row.currency),
        str(row.line_items),
        row.mapped_by,
    )


def allocation_csv(rows: Iterable[AllocationRow]) -> bytes:
    """One row per cost centre, org, API key, user and currency; plain numbers."""
    return to_csv(ALLOCATION_COLUMNS, (allocation_cells(row) for row in rows))
