"""Pure credit-balance arithmetic: what is left of each grant, the expiries due, and the grants
an invoice draws on (oldest first, expired ones skipped, never more than is due)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from billing.states import CreditEntryKind


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored movement of a balance in one currency, as the arithmetic needs it."""

    id: int
    kind: str  # CreditEntryKind
    amount: Decimal  # signed: + grant and reversal, - consumption and expiry
    created_at: datetime
    grant_id: int | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """A grant and what is left of it after the entries that draw on it."""

    id: int
    amount: Decimal
    remaining: Decimal
    created_at: datetime
    expires_at: datetime | None = None

    def expired(self, moment: datetime) -> bool:
        """Whether the grant can no longer be used at `moment` (it expires at `expires_at`)."""
        return self.expires_at is not None and self.expires_at <= moment


@dataclass(frozen=True, slots=True)
class Draw:
    """An amount taken from one grant (positive): by an invoice, or by its expiry."""

    grant_id: int
    amount: Decimal


def balance(entries: Iterable[Entry]) -> Decimal:
    """The balance: the sum of the entries."""
    return sum((entry.amount for entry in entries), Decimal(0))


def grants_of(entries: Iterable[Entry]) -> list[Grant]:
    """Every grant with what is left of it (its amount plus the entries naming it), oldest
    first (by creation time, then id)."""
    listed = list(entries)
    drawn: dict[int, Decimal] = {}
    for entry in listed:
        if entry.grant_id is not None:
            drawn[entry.grant_id] = drawn.get(entry.grant_id, Decimal(0)) + entry.amount
    grants = [
        Grant(
            entry.id,
            entry.amount,
            entry.amount + drawn.get(entry.id, Decimal(0)),
            entry.created_at,
            entry.expires_at,
        )
        for entry in listed
        if entry.kind == CreditEntryKind.GRANT
    ]
    return sorted(grants, key=lambda grant: (grant.created_at, grant.id))


def expiries_due(grants: Sequence[Grant], moment: datetime) -> list[Draw]:
    """What expires by `moment`: the remaining amount of each grant expired then."""
    return [
        Draw(grant.id, grant.remaining)
        for grant in grants
        if grant.expired(moment) and grant.remaining > 0
    ]


def plan_consumption(grants: Sequence[Grant], due: Decimal, moment: datetime) -> list[Draw]:
    """What an invoice of `due` finalized at `moment` takes from the grants: oldest first (by
    creation time, then id), expired grants skipped, never more than `due` in all."""
    left = max(due, Decimal(0))
    draws = []
    for grant in sorted(grants, key=lambda grant: (grant.created_at, grant.id)):
        if left <= 0:
            break
        if grant.expired(moment) or grant.remaining <= 0:
            continue
        taken = min(grant.remaining, left)
        draws.append(Draw(grant.id, taken))
        left -= taken
    return draws
