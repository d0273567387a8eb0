"""Shared costs spread over target centres by largest remainder, from small per-period sums."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from billing.money import allocate_largest_remainder, decimal_to_minor
from billing.statements.shared_rules import UNALLOCATED, SharedRule

# What the method cell says when a rule found nothing to share with: the cost stays in
# `unallocated`; and when `weighted` found no target with direct cost: it was spread evenly.
NO_TARGET = "no-target"
WEIGHTED_AS_EVEN = "weighted-as-even"


@dataclass(frozen=True, slots=True)
class ShareBlock:
    """One rule's share for one target centre in one currency and the pieces it is made of:
    (ordinal of the source org, or None for a fixed overhead; minor units), in org order."""

    rule: SharedRule
    currency: str
    centre: str
    method: str
    ratio: Fraction
    pieces: list[tuple[int | None, int]]


def spread(amounts: Iterable[int], weights: Sequence[Fraction | int]) -> list[array[int]]:
    """Each source's piece per target (one column per weight): the largest-remainder split of
    the running total, less the split before it. Every source's pieces add up to its amount
    and every column to the split of the whole total."""
    columns = [array("q") for _ in weights]
    running = 0
    before = [0] * len(weights)
    for amount in amounts:
        running += amount
        now = allocate_largest_remainder(running, weights)
        for column, new, old in zip(columns, now, before, strict=True):
            column.append(new - old)
        before = now
    return columns


class SharingBook:
    """The sums the shared rules need, fed line group by line group: each (currency, centre)'s
    direct cost that no rule took, and each (rule, currency, org)'s cost a rule took. Memory
    grows with the centres and with the orgs a rule takes cost from, nothing else."""

    def __init__(self, rules: Sequence[SharedRule]) -> None:
        self._rules = tuple(rules)
        self._shared_out = {rule.source.centre for rule in rules if rule.source.centre}
        self._index = {rule.name: index for index, rule in enumerate(self._rules)}
        self._direct: dict[tuple[str, str], int] = {}
        # (rule index, currency) -> (org ordinals, minor units), in the order orgs came
        self._sources: dict[tuple[int, str], tuple[array[int], array[int]]] = {}

    @property
    def rules(self) -> tuple[SharedRule, ...]:
        return self._rules

    def kept(self, currency: str, centre: str, amount: Decimal) -> None:
        """Direct cost (a Decimal at the minor unit) that stays with its centre."""
        key = (currency, centre)
        self._direct[key] = self._direct.get(key, 0) + decimal_to_minor(amount, currency)

    def taken(self, rule: str, currency: str, ordinal: int, amount: Decimal) -> None:
        """Cost of org `ordinal` that the rule named `rule` shares out (an org's groups in a
        row)."""
        ordinals, amounts = self._sources.setdefault(
            (self._index[rule], currency), (array("q"), array("q"))
        )
        minor = decimal_to_minor(amount, currency)
        if ordinals and ordinals[-1] == ordinal:
            amounts[-1] += minor
        else:
            ordinals.append(ordinal)
            amounts.append(minor)

    def blocks(self, org_key: Callable[[int], str]) -> Iterator[ShareBlock]:
        """Every rule's shares: rules in file order, then currency, then target by name; the
        pieces of line sources in the order of `org_key` (the org id)."""
        for index, rule in enumerate(self._rules):
            if rule.source.amount is not None and rule.source.currency is not None:
                currency = rule.source.currency
                amount = decimal_to_minor(rule.source.amount, currency)
                yield from self._split(rule, currency, [None], [amount])
                continue
            currencies = sorted(c for (i, c) in self._sources if i == index)
            for currency in currencies:
                ordinals, amounts = self._sources[(index, currency)]
                order = sorted(range(len(ordinals)), key=lambda at: org_key(ordinals[at]))
                yield from self._split(
                    rule,
                    currency,
                    [ordinals[at] for at in order],
                    [amounts[at] for at in order],
                )

    def targets(self, rule: SharedRule, currency: str) -> tuple[str, ...]:
        """The rule's target centres in `currency`, by name: the ones it names, else every
        centre with direct cost kept in that currency except `unallocated`, centres a rule
        shares out and the rule's `exclude`."""
        named = rule.explicit_targets()
        if named is not None:
            return named
        left_out = self._shared_out | set(rule.to.exclude) | {UNALLOCATED}
        return tuple(
            sorted(c for (cur, c) in self._direct if cur == currency and c not in left_out)
        )

    def _split(
        self,
        rule: SharedRule,
        currency: str,
        ordinals: list[int | None],
        amounts: list[int],
    ) -> Iterator[ShareBlock]:
        targets = self.targets(rule, currency)
        method: str = rule.to.method
        weights: list[Fraction] = []
        if not targets:
            targets, method, weights = (UNALLOCATED,), NO_TARGET, [Fraction(1)]
        elif method == "fixed":
            weights = rule.fixed_weights(targets)
        elif method == "weighted":
            weights = [Fraction(max(self._direct.get((currency, c), 0), 0)) for c in targets]
            if not any(weights):
                method = WEIGHTED_AS_EVEN
        if method in ("even", WEIGHTED_AS_EVEN):
            weights = [Fraction(1)] * len(targets)
        columns = spread(amounts, weights)
        whole = sum(weights, Fraction(0))
        for at, centre in enumerate(targets):
            yield ShareBlock(
                rule=rule,
                currency=currency,
                centre=centre,
                method=method,
                ratio=weights[at] / whole,
                pieces=[
                    (ordinal, piece)
                    for ordinal, piece in zip(ordinals, columns[at], strict=True)
                    if piece
                ],
            )
