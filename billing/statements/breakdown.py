"""How much of a statement's breakdown the PDF prints: every line, or subtotals per API key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from billing.config import StatementDetail
from billing.domain import StatementCharge, StatementLine
from billing.states import ChargeClass

# `auto` prints every line up to this many, then subtotals per API key: about one A4 page of
# the breakdown table, so the median statement (36 lines) looks as it always did.
DEFAULT_MAX_LINES = 50


@dataclass(frozen=True, slots=True)
class KeySubtotal:
    """One row of the per-API-key table: the exact sum of the stored lines it groups.

    Lines with an API key are grouped by key; lines without one (a minimum top-up, credit
    applied, usage no key made) by the charge they split, so no row mixes unlike things.
    """

    api_key_id: str | None
    charge: str | None  # lines without an API key: the charge they split
    users: int
    lines: int
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Breakdown:
    """What the statement's breakdown section shows: `lines` (each stored line) or `keys`
    (`subtotals`, whose amounts add up exactly to `total`, the sum of every line)."""

    mode: Literal["lines", "keys"]
    line_count: int
    subtotals: tuple[KeySubtotal, ...] = ()
    total: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class BreakdownRule:
    """BILLING_STATEMENT_DETAIL and BILLING_STATEMENT_DETAIL_MAX_LINES: which breakdown a
    statement of so many lines gets."""

    detail: StatementDetail = "auto"
    max_lines: int = DEFAULT_MAX_LINES

    def mode_for(self, line_count: int) -> Literal["lines", "keys"]:
        if self.detail == "auto":
            return "lines" if line_count <= self.max_lines else "keys"
        return self.detail

    def apply(
        self, lines: Sequence[StatementLine], charges: Sequence[StatementCharge]
    ) -> Breakdown:
        """The breakdown of these lines (already in print order) under this rule."""
        mode = self.mode_for(len(lines))
        if mode == "lines":
            return Breakdown("lines", len(lines))
        subtotals = key_subtotals(lines, charges)
        total = sum((row.amount for row in subtotals), Decimal(0))
        return Breakdown("keys", len(lines), subtotals, total)


DEFAULT_BREAKDOWN = BreakdownRule()


def key_subtotals(
    lines: Sequence[StatementLine], charges: Sequence[StatementCharge]
) -> tuple[KeySubtotal, ...]:
    """Per API key (then, for lines without a key, per charge) the exact Decimal sum of the
    stored lines, in the order the lines come; nothing is re-rated or rounded again."""
    described = {charge.charge_key: charge for charge in charges}
    groups: dict[tuple[str | None, object], list[StatementLine]] = {}
    for line in lines:
        group = (line.api_key_id, None) if line.api_key_id is not None else (None, line.charge_key)
        groups.setdefault(group, []).append(line)
    rows = []
    for (api_key_id, _charge), grouped in groups.items():
        rows.append(
            KeySubtotal(
                api_key_id=api_key_id,
                charge=None if api_key_id is not None else _label(grouped[0], described),
                users=len({line.user_id for line in grouped}),
                lines=len(grouped),
                amount=sum((line.amount for line in grouped), Decimal(0)),
            )
        )
    return tuple(rows)


def _label(
    line: StatementLine, described: dict[tuple[str, str, int | None], StatementCharge]
) -> str:
    charge = described.get(line.charge_key)
    label = charge.description if charge is not None else line.meter
    return f"{label} (correction)" if line.charge_class == ChargeClass.CORRECTION else label
