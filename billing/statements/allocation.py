"""Internal cost allocation: line items regrouped by cost centre, org, API key and user, and
shared costs spread over centres (exact; docs/CHARGEBACK.md)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from billing.domain import Statement
from billing.errors import ConfigError
from billing.money import format_minor, format_quantity, minor_to_decimal, round_quantity
from billing.statements.csv_files import neutralise, to_csv
from billing.statements.shared_costs import ShareBlock, SharingBook
from billing.statements.shared_rules import UNALLOCATED as UNALLOCATED  # callers import it here
from billing.statements.shared_rules import (
    CentreName,
    Identifier,
    SharedRule,
    duplicate_names,
)
from billing.states import ChargeClass

# mapped_by of a row that holds a share of a shared rule (its org is the source org; empty for
# a fixed overhead).
SHARED = "shared"
# Places of the `ratio` cell (half-up; a fixed percentage has at most 4, so its ratio is exact).
RATIO_PLACES = 6
_DUPLICATE_RULE = "duplicate_rule_name"
ZERO = Decimal(0)

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
    "direct_cost",
    "shared_cost",
    "allocated_from",
    "method",
    "ratio",
    # FOCUS 1.3's split cost allocation columns (docs/CHARGEBACK.md says how they map)
    "AllocatedMethodId",
    "AllocatedMethodDetails",
    "AllocatedResourceId",
    "AllocatedResourceName",
)


class CostCentreMap(BaseModel):
    """Who pays internally: API key ids, user ids and org ids mapped to cost-centre names, and
    the `shared` rules that spread some of that cost (or a fixed overhead) over other centres.

    Precedence: the line's API key, else its user, else its org, else `unallocated`; then the
    first shared rule whose source takes the line.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys: dict[Identifier, CentreName] = {}
    users: dict[Identifier, CentreName] = {}
    orgs: dict[Identifier, CentreName] = {}
    shared: tuple[SharedRule, ...] = ()

    @model_validator(mode="after")
    def _unique_rule_names(self) -> CostCentreMap:
        repeated = duplicate_names(list(self.shared))
        if repeated:
            names = ", ".join(sorted({name for _, name in repeated}))
            raise PydanticCustomError(
                _DUPLICATE_RULE, "shared rule names repeat: {names}", {"names": names}
            )
        return self

    def shared_rule_for(
        self, centre: str, org_id: str, api_key_id: str | None, user_id: str | None
    ) -> SharedRule | None:
        """The first shared rule whose source takes a line of this centre, org, key and user."""
        for rule in self.shared:
            if rule.source.matches(centre, org_id, api_key_id, user_id):
                return rule
        return None

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
    """The 1-based line of every mapping key and list item in a composed YAML document."""
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, str(key_node.value))
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = (*path, str(index))
            lines[key] = item.start_mark.line + 1
            lines.update(_key_lines(item, key))
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
            f"{path}:1: expected a mapping with api_keys, users, orgs and shared, "
            f"got {type(data).__name__}"
        )
    lines = _key_lines(root) if root is not None else {}
    located: list[tuple[tuple[str, ...], str]] = []
    rules = data.get("shared")
    if isinstance(rules, list):
        for index, name in duplicate_names(rules):
            located.append((("shared", str(index), "name"), f"rule name {name!r} is already taken"))
    try:
        centres = CostCentreMap.model_validate(data)
    except ValidationError as error:
        located.extend(
            (tuple(str(part) for part in problem["loc"]), problem["msg"])
            for problem in error.errors()
            if problem["type"] != _DUPLICATE_RULE
        )
    else:
        return centres
    problems = []
    for location, message in located:
        line = next(
            (
                lines[location[:end]]
                for end in range(len(location), 0, -1)
                if location[:end] in lines
            ),
            1,
        )
        problems.append((line, f"{path}:{line}: field {'.'.join(location)}: {message}"))
    problems.sort(key=lambda problem: problem[0])
    raise ConfigError("; ".join(text for _, text in problems))


@dataclass(frozen=True, slots=True)
class AllocationRow:
    """The cost of one (cost centre, org, API key, user, currency) in a period, or one share of
    a shared rule. billed_cost = direct_cost + shared_cost: a row whose cost a rule shares out
    has shared_cost = -direct_cost; a share has direct_cost 0 and mapped_by `shared`."""

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
    direct_cost: Decimal
    shared_cost: Decimal
    allocated_from: str = ""  # the shared rule that took this row's cost or gave this share
    method: str = ""  # how that rule split it (even, weighted, fixed, weighted-as-even, ...)
    ratio: str = ""  # a share's part of the rule's source, RATIO_PLACES places half-up

    @property
    def is_share(self) -> bool:
        return self.mapped_by == SHARED


class OrgRef(NamedTuple):
    """What a share row says of its source org."""

    org_id: str
    org_name: str
    invoice_number: str


OVERHEAD = OrgRef("", "", "")


def org_allocation(statement: Statement, centres: CostCentreMap) -> list[AllocationRow]:
    """One invoice's line items regrouped by cost centre, API key and user, in the order of
    allocation.csv within the org (API key, then user; missing ones last). A group a shared
    rule takes keeps its centre with billed cost 0 and names the rule."""
    grouped: dict[tuple[str | None, str | None], list[Decimal]] = defaultdict(list)
    decided: dict[tuple[str | None, str | None], tuple[str, str]] = {}
    for line in statement.lines:
        if line.charge_class == ChargeClass.TAX:
            continue  # allocation stays on net amounts: tax is the org's, not a cost centre's
        key = (line.api_key_id, line.user_id)
        grouped[key].append(line.amount)
        decided[key] = centres.centre_for(statement.org_id, line.api_key_id, line.user_id)
    rows = []
    for (api_key_id, user_id), amounts in grouped.items():
        centre, mapped_by = decided[(api_key_id, user_id)]
        direct = sum(amounts, Decimal(0))
        rule = centres.shared_rule_for(centre, statement.org_id, api_key_id, user_id)
        rows.append(
            AllocationRow(
                cost_centre=centre,
                org_id=statement.org_id,
                org_name=statement.org_name,
                invoice_number=statement.invoice_number,
                api_key_id=api_key_id,
                user_id=user_id,
                currency=statement.currency,
                billed_cost=direct if rule is None else ZERO,
                line_items=len(amounts),
                mapped_by=mapped_by,
                direct_cost=direct,
                shared_cost=ZERO if rule is None else -direct,
                allocated_from="" if rule is None else rule.name,
                method="" if rule is None else rule.to.method,
            )
        )
    rows.sort(key=_within_org)
    return rows


def _within_org(row: AllocationRow) -> tuple[bool, str, bool, str]:
    return (row.api_key_id is None, row.api_key_id or "", row.user_id is None, row.user_id or "")


def record(book: SharingBook, ordinal: int, rows: Iterable[AllocationRow]) -> None:
    """Give the sharing book one org's rows: the cost rules take, and the cost centres keep."""
    for row in rows:
        if row.allocated_from:
            book.taken(row.allocated_from, row.currency, ordinal, row.direct_cost)
        else:
            book.kept(row.currency, row.cost_centre, row.direct_cost)


def ratio_text(ratio: Fraction) -> str:
    """A share's ratio as allocation.csv writes it: RATIO_PLACES places half-up, no trailing
    zeros (1/3 -> 0.333333, 60% -> 0.6, 1 -> 1)."""
    return format_quantity(round_quantity(ratio, RATIO_PLACES))


def share_rows(block: ShareBlock, org_of: Callable[[int], OrgRef]) -> Iterator[AllocationRow]:
    """A target centre's share of one rule in one currency, one row per source org (one row
    with an empty org for a fixed overhead)."""
    ratio = ratio_text(block.ratio)
    for ordinal, minor in block.pieces:
        org = OVERHEAD if ordinal is None else org_of(ordinal)
        amount = minor_to_decimal(minor, block.currency)
        # (cost centre, org id, org name, invoice, API key, user, currency, billed cost, line
        # items, mapped_by, direct cost, shared cost, rule, method, ratio)
        yield AllocationRow(
            block.centre, *org, None, None, block.currency, amount, 0, SHARED, ZERO, amount,
            block.rule.name, block.method, ratio,
        )  # fmt: skip


def bucket_order(currency: str, cost_centre: str) -> tuple[str, bool, str]:
    """Where a (currency, cost centre) block stands in allocation.csv: by currency, then cost
    centre with `unallocated` last."""
    return (currency, cost_centre == UNALLOCATED, cost_centre)


def allocate(statements: Iterable[Statement], centres: CostCentreMap) -> list[AllocationRow]:
    """Regroup every line item but tax by cost centre and apply the shared rules; per currency
    the rows sum to the invoices' totals less their tax exactly, plus the fixed overheads.

    In allocation.csv's order: by currency and cost centre (`unallocated` last); in a centre,
    its own rows in org order, then its shares in rule order, each in org order. The statements
    are read once, in any order (the period's reports stream them the same way)."""
    book = SharingBook(centres.shared)
    refs: list[OrgRef] = []
    rows: list[AllocationRow] = []
    for ordinal, statement in enumerate(statements):
        own = org_allocation(statement, centres)
        record(book, ordinal, own)
        refs.append(OrgRef(statement.org_id, statement.org_name, statement.invoice_number))
        rows.extend(own)
    rows.sort(key=lambda row: (*bucket_order(row.currency, row.cost_centre), row.org_id))
    for block in book.blocks(lambda ordinal: refs[ordinal].org_id):
        rows.extend(share_rows(block, refs.__getitem__))
    rows.sort(key=lambda row: (*bucket_order(row.currency, row.cost_centre), row.is_share))
    return rows


def centre_totals(rows: Iterable[AllocationRow]) -> list[tuple[str, str, Decimal]]:
    """(currency, cost centre, total) in the order of the rows."""
    totals: dict[tuple[str, str], Decimal] = {}
    for row in rows:
        key = (row.currency, row.cost_centre)
        totals[key] = totals.get(key, Decimal(0)) + row.billed_cost
    return [(currency, centre, total) for (currency, centre), total in totals.items()]


def method_details(row: AllocationRow) -> str:
    """FOCUS 1.3 AllocatedMethodDetails of a share: its ratio of the source and the rule."""
    if not row.is_share:
        return ""
    return (
        f'{{"Elements":[{{"AllocatedRatio":{row.ratio}}}],'
        f'"x_SharedRule":{json.dumps(row.allocated_from)}}}'
    )


def allocation_cells(row: AllocationRow) -> tuple[str, ...]:
    """One row of allocation.csv (ALLOCATION_COLUMNS): safe text cells, the costs at the
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
        format_minor(row.direct_cost, row.currency),
        format_minor(row.shared_cost, row.currency),
        neutralise(row.allocated_from),
        row.method,
        row.ratio,
        row.method,
        neutralise(method_details(row)),
        neutralise(row.cost_centre) if row.is_share else "",
        neutralise(row.cost_centre) if row.is_share else "",
    )


def allocation_csv(rows: Iterable[AllocationRow]) -> bytes:
    """One row per cost centre, org, API key, user and currency, and per share; plain
    numbers."""
    return to_csv(ALLOCATION_COLUMNS, (allocation_cells(row) for row in rows))
