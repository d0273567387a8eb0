"""Budgets (pure): month-to-date spend per scope, the thresholds it has crossed, and a linear
forecast to the period's end."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from billing.domain import MINIMUM_CHARGE_METER, RatedInvoice, Statement
from billing.money import minor_to_decimal, round_to_minor_units
from billing.states import BudgetScope, ChargeClass

# (API key id, user id) of a line -> its cost centre; None: no cost-centre budgets.
CentreOf = Callable[[str, str | None, str | None], str]


@dataclass(frozen=True, slots=True)
class Budget:
    """A monthly amount for one scope, the percents of it that alert, and who to tell
    (an org's budget with no contacts of its own tells the org's directory contacts)."""

    scope: BudgetScope
    scope_id: str
    amount: Decimal
    currency: str
    thresholds: tuple[Decimal, ...]
    contacts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SpendLine:
    """One priced usage line: whose it is and what it costs."""

    org_id: str
    api_key_id: str | None
    user_id: str | None
    currency: str
    amount: Decimal


_MICROSECOND = timedelta(microseconds=1)
ScopeKey = tuple[BudgetScope, str, str]  # (scope, scope id, currency)


def rated_spend(invoice: RatedInvoice) -> list[SpendLine]:
    """A priced org's usage lines (its minimum top-up is a commitment, not spend)."""
    currency = invoice.currency
    return [
        SpendLine(
            invoice.org.org_id,
            line.key.api_key_id,
            line.key.user_id,
            currency,
            minor_to_decimal(line.amount_minor, currency),
        )
        for charge in invoice.charges
        if charge.meter != MINIMUM_CHARGE_METER
        for line in charge.lines
    ]


def invoiced_spend(statement: Statement) -> list[SpendLine]:
    """The same lines of a closed invoice: its usage lines, without the minimum top-up, manual
    adjustments, corrections of other periods, tax and credit."""
    return [
        SpendLine(statement.org_id, line.api_key_id, line.user_id, statement.currency, line.amount)
        for line in statement.lines
        if line.charge_class == ChargeClass.USAGE and line.meter != MINIMUM_CHARGE_METER
    ]


def scope_spend(lines: Iterable[SpendLine], centre_of: CentreOf | None) -> dict[ScopeKey, Decimal]:
    """Spend per org, per API key and (with a cost-centre map) per cost centre, by currency.

    A cost centre's spend is its direct cost (API key, else user, else org, as allocation
    decides); shared costs are spread only at the close."""
    spend: dict[ScopeKey, Decimal] = {}

    def add(key: ScopeKey, amount: Decimal) -> None:
        spend[key] = spend.get(key, Decimal(0)) + amount

    for line in lines:
        add((BudgetScope.ORG, line.org_id, line.currency), line.amount)
        if line.api_key_id is not None:
            add((BudgetScope.API_KEY, line.api_key_id, line.currency), line.amount)
        if centre_of is not None:
            centre = centre_of(line.org_id, line.api_key_id, line.user_id)
            add((BudgetScope.COST_CENTRE, centre, line.currency), line.amount)
    return spend


def spend_of(budget: Budget, spend: Mapping[ScopeKey, Decimal]) -> Decimal:
    """The budget's spend in its own currency (zero when the scope spent nothing)."""
    return spend.get((budget.scope, budget.scope_id, budget.currency), Decimal(0))


def used_percent(spend: Decimal, amount: Decimal) -> Decimal:
    """Spend as a percent of the budget, to one decimal (half-up); a zero budget is 100% used
    as soon as anything is spent."""
    if amount == 0:
        return Decimal(0) if spend <= 0 else Decimal(100)
    return (spend * 100 / amount).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def crossed(budget: Budget, spend: Decimal, fired: Iterable[Decimal] = ()) -> list[Decimal]:
    """The thresholds the spend has reached (spend >= amount x percent / 100, exactly) that
    have not fired yet, lowest first."""
    done = set(fired)
    return [
        threshold
        for threshold in sorted(budget.thresholds)
        if threshold not in done and spend * 100 >= budget.amount * threshold
    ]


def linear_forecast(
    spend: Decimal, currency: str, start: datetime, end: datetime, measured_until: datetime
) -> Decimal:
    """Spend carried on at the same rate to the period's end: spend x period / elapsed, rounded
    half-up to the currency's minor unit once (the spend itself after the period ended)."""
    elapsed = (min(measured_until, end) - start) // _MICROSECOND
    if measured_until >= end or elapsed <= 0:
        return spend
    whole = (end - start) // _MICROSECOND
    projected = Fraction(spend) * whole / elapsed
    return minor_to_decimal(round_to_minor_units(projected, currency), currency)
