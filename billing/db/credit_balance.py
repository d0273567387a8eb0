"""An org's credit balance as a ledger of entries: grants, consumptions by invoices, expiries
and reversals, per currency; the balance is their sum."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, bindparam, func, insert, select, update
from sqlmodel import Session, col

from billing.credits import Draw, Entry, Grant, expiries_due, grants_of, plan_consumption
from billing.db.tables import CreditEntry, Invoice, InvoiceCharge, InvoiceLine
from billing.errors import BillingError, InvoiceStateError
from billing.money import format_minor
from billing.states import ChargeClass, CreditEntryKind

# The one org-level charge (and line) a credit leaves on an invoice.
CREDIT_METER = "credit_balance"
CREDIT_APPLIED = "Credit applied"
CARRIED = "Carried to credit balance"
CREDIT_UNIT = "credit"
# Who wrote the entries nobody typed: a finalization and a void.
BY_FINALIZE = "billing finalize"
BY_VOID = "billing void"


def grant_credit(
    session: Session,
    *,
    org_id: str,
    currency: str,
    amount: Decimal,
    reason: str,
    created_by: str,
    now: datetime,
    expires_at: datetime | None = None,
    invoice_id: int | None = None,
    credit_note_id: int | None = None,
) -> int:
    """Add a grant to the org's balance in `currency` (prepaid credit, a credit note settled as
    credit, or a negative total carried over) and return its entry id."""
    if amount <= 0:
        raise BillingError(f"a credit grant must be positive, not {amount} {currency}")
    entry = CreditEntry(
        org_id=org_id,
        currency=currency,
        kind=CreditEntryKind.GRANT,
        amount=amount,
        invoice_id=invoice_id,
        credit_note_id=credit_note_id,
        reason=reason,
        expires_at=expires_at,
        created_by=created_by,
        created_at=now,
    )
    session.add(entry)
    session.flush()
    assert entry.id is not None
    return entry.id


def entries(session: Session, org_id: str, currency: str | None = None) -> list[CreditEntry]:
    """The org's entries (of one currency, or all), by currency, then in the order they were
    made."""
    query = select(CreditEntry).where(col(CreditEntry.org_id) == org_id)
    if currency is not None:
        query = query.where(col(CreditEntry.currency) == currency)
    query = query.order_by(
        col(CreditEntry.currency), col(CreditEntry.created_at), col(CreditEntry.id)
    )
    return list(session.execute(query).scalars().all())


def balance(session: Session, org_id: str, currency: str) -> Decimal:
    """The org's balance in `currency`: the sum of its entries (added here as Decimal, never by
    SQLite's float SUM)."""
    amounts = session.execute(
        select(col(CreditEntry.amount)).where(
            col(CreditEntry.org_id) == org_id, col(CreditEntry.currency) == currency
        )
    ).scalars()
    return sum(amounts, Decimal(0))


def as_entries(rows: Iterable[CreditEntry]) -> list[Entry]:
    """Stored entries as the pure arithmetic of billing.credits takes them."""
    return [
        Entry(
            id=row.id or 0,
            kind=row.kind,
            amount=row.amount,
            created_at=row.created_at,
            grant_id=row.grant_id,
            expires_at=row.expires_at,
        )
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class Movement:
    """An entry to write: signed amount, the grant it draws on, the invoice behind it."""

    org_id: str
    currency: str
    kind: CreditEntryKind
    amount: Decimal
    reason: str
    grant_id: int | None = None
    invoice_id: int | None = None


def _write(session: Session, movements: Sequence[Movement], created_by: str, now: datetime) -> None:
    """All the movements in one statement."""
    if not movements:
        return
    session.execute(
        insert(CreditEntry),
        [
            {
                "org_id": movement.org_id,
                "currency": movement.currency,
                "kind": movement.kind,
                "amount": movement.amount,
                "grant_id": movement.grant_id,
                "invoice_id": movement.invoice_id,
                "reason": movement.reason,
                "created_by": created_by,
                "created_at": now,
            }
            for movement in movements
        ],
    )


def _lock_grants(session: Session, org_ids: Collection[str]) -> None:
    """Lock these orgs' grants until the transaction ends, before what is left of them is read
    (PostgreSQL: two finalizations of different periods cannot spend the same credit, nor a
    void withdraw it meanwhile; SQLite's write transactions are serial already)."""
    session.execute(
        select(col(CreditEntry.id))
        .where(
            col(CreditEntry.org_id).in_(sorted(org_ids)),
            col(CreditEntry.kind) == CreditEntryKind.GRANT,
        )
        .order_by(col(CreditEntry.id))
        .with_for_update()
    ).all()


def _entries_by_org(
    session: Session, org_ids: Collection[str]
) -> dict[tuple[str, str], list[Entry]]:
    """Every entry of these orgs, per (org, currency), in one query."""
    grouped: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    if not org_ids:
        return grouped
    entry = CreditEntry
    for row in session.execute(
        select(
            col(entry.id),
            col(entry.org_id),
            col(entry.currency),
            col(entry.kind),
            col(entry.amount),
            col(entry.created_at),
            col(entry.grant_id),
            col(entry.expires_at),
        ).where(col(entry.org_id).in_(sorted(org_ids)))
    ):
        grouped[(row.org_id, row.currency)].append(
            Entry(row.id, row.kind, row.amount, row.created_at, row.grant_id, row.expires_at)
        )
    return grouped


def _expiries(org_id: str, currency: str, grants: Sequence[Grant], now: datetime) -> list[Movement]:
    return [
        Movement(
            org_id, currency, CreditEntryKind.EXPIRY, -draw.amount, "expired unused", draw.grant_id
        )
        for draw in expiries_due(grants, now)
    ]


def record_expiries(session: Session, org_id: str, currency: str, now: datetime) -> list[Draw]:
    """Write an expiry entry (minus what is left) for each of the org's grants in `currency`
    that expired by `now` and still holds something; return what expired."""
    _lock_grants(session, [org_id])
    grants = grants_of(_entries_by_org(session, [org_id]).get((org_id, currency), []))
    movements = _expiries(org_id, currency, grants, now)
    _write(session, movements, BY_FINALIZE, now)
    return [Draw(m.grant_id or 0, -m.amount) for m in movements]


@dataclass(frozen=True, slots=True)
class CreditCharge:
    """The credit charge one draft gets at finalization (negative: credit applied; positive:
    a negative total carried to the balance)."""

    invoice_id: int
    total: Decimal  # the draft's total before it
    description: str
    pricing: str
    amount: Decimal


def settle_drafts(session: Session, drafts: Sequence[Row[Any]], now: datetime) -> None:
    """Settle a batch of drafts (rows with an `id`) with their orgs' balances, before they are
    numbered.

    A negative total is carried to the org's balance (a grant naming the invoice, and a
    `Carried to credit balance` charge that brings the invoice to zero). A positive total takes
    what the org's balance in its currency holds, oldest grant first, expired grants skipped
    (their expiry recorded first), up to the total: a `Credit applied` charge and one
    consumption entry per grant drawn. Usage charges are never changed. A batch costs two
    queries when none of its orgs has a balance to use or a total to carry, and a fixed few
    more when some do, whatever their number."""
    ids = [draft.id for draft in drafts]
    if not ids:
        return
    invoices = session.execute(
        select(
            col(Invoice.id),
            col(Invoice.org_id),
            col(Invoice.currency),
            col(Invoice.period),
            col(Invoice.total),
        )
        .where(col(Invoice.id).in_(ids))
        .order_by(col(Invoice.org_id))
    ).all()
    known = _entries_by_org(session, {invoice.org_id for invoice in invoices})

    def holds_credit(invoice: Row[Any]) -> bool:
        held = known.get((invoice.org_id, invoice.currency), [])
        return sum((entry.amount for entry in held), Decimal(0)) > 0

    spenders = {
        invoice.org_id for invoice in invoices if invoice.total > 0 and holds_credit(invoice)
    }
    if spenders:
        _lock_grants(session, spenders)
        known.update(_entries_by_org(session, spenders))  # as they stand under the lock
    movements: list[Movement] = []
    charges: list[CreditCharge] = []
    for invoice in invoices:
        total = Decimal(invoice.total)
        if total < 0:
            movements.append(
                Movement(
                    invoice.org_id,
                    invoice.currency,
                    CreditEntryKind.GRANT,
                    -total,
                    f"the negative total of its {invoice.period} invoice, carried over",
                    invoice_id=invoice.id,
                )
            )
            charges.append(
                CreditCharge(
                    invoice.id,
                    total,
                    CARRIED,
                    f"{format_minor(-total, invoice.currency)} to the credit balance, "
                    "for later invoices",
                    -total,
                )
            )
        elif invoice.org_id in spenders:
            applied = _consume(invoice, total, known[(invoice.org_id, invoice.currency)], now)
            movements += applied[0]
            charges += applied[1]
    _write(session, movements, BY_FINALIZE, now)
    _add_charges(session, charges)


def _consume(
    invoice: Row[Any], total: Decimal, held: Sequence[Entry], now: datetime
) -> tuple[list[Movement], list[CreditCharge]]:
    """Expiries first, then the oldest usable grants up to the total."""
    org_id, currency = invoice.org_id, invoice.currency
    grants = grants_of(held)
    movements = _expiries(org_id, currency, grants, now)
    draws = plan_consumption(grants, total, now)
    if not draws:
        return movements, []
    movements += [
        Movement(
            org_id,
            currency,
            CreditEntryKind.CONSUMPTION,
            -draw.amount,
            f"applied to its {invoice.period} invoice",
            draw.grant_id,
            invoice.id,
        )
        for draw in draws
    ]
    applied = sum((draw.amount for draw in draws), Decimal(0))
    available = _usable(grants, now)
    charge = CreditCharge(
        invoice.id,
        total,
        CREDIT_APPLIED,
        f"from a credit balance of {format_minor(available, currency)}, "
        f"{format_minor(available - applied, currency)} left",
        -applied,
    )
    return movements, [charge]


def _usable(grants: Sequence[Grant], now: datetime) -> Decimal:
    return sum(
        (grant.remaining for grant in grants if not grant.expired(now) and grant.remaining > 0),
        Decimal(0),
    )


def _add_charges(session: Session, charges: Sequence[CreditCharge]) -> None:
    """Each credit charge as the invoice's last charge with one org-level line (credit is the
    org's, not an API key's), and the invoice's total moved by its amount."""
    if not charges:
        return
    last = dict(
        session.execute(
            select(col(InvoiceCharge.invoice_id), func.max(col(InvoiceCharge.position)))
            .where(col(InvoiceCharge.invoice_id).in_([charge.invoice_id for charge in charges]))
            .group_by(col(InvoiceCharge.invoice_id))
        ).all()
    )
    session.execute(
        insert(InvoiceCharge),
        [
            {
                "invoice_id": charge.invoice_id,
                "position": (last.get(charge.invoice_id) or 0) + 1,
                "meter": CREDIT_METER,
                "description": charge.description,
                "unit": CREDIT_UNIT,
                "quantity": Decimal(1),
                "included": Decimal(0),
                "billable": Decimal(1),
                "pricing": charge.pricing,
                "amount": charge.amount,
                "charge_class": ChargeClass.CREDIT,
            }
            for charge in charges
        ],
    )
    session.execute(
        insert(InvoiceLine),
        [
            {
                "invoice_id": charge.invoice_id,
                "meter": CREDIT_METER,
                "api_key_id": None,
                "user_id": None,
                "quantity": Decimal(1),
                "unit": CREDIT_UNIT,
                "amount": charge.amount,
                "charge_class": ChargeClass.CREDIT,
            }
            for charge in charges
        ],
    )
    invoices = Invoice.__table__  # type: ignore[attr-defined]
    session.execute(
        update(invoices)
        .where(invoices.c.id == bindparam("settled_id"))
        .values(total=bindparam("settled_total")),
        [
            {"settled_id": charge.invoice_id, "settled_total": charge.total + charge.amount}
            for charge in charges
        ],
    )


def reverse_void(session: Session, invoice: Invoice, now: datetime) -> None:
    """Undo what a void invoice did to its org's balance: each credit it used comes back (a
    reversal, plus, on the same grant); a negative total it carried is withdrawn (a reversal,
    minus what is left of that grant), refused while a later invoice uses part of it."""
    assert invoice.id is not None
    mine = list(
        session.execute(select(CreditEntry).where(col(CreditEntry.invoice_id) == invoice.id))
        .scalars()
        .all()
    )
    if not mine:
        return
    _lock_grants(session, [invoice.org_id])
    number = invoice.number or f"invoice {invoice.id}"
    used: dict[int, Decimal] = defaultdict(Decimal)
    for entry in mine:
        if entry.grant_id is not None and entry.kind in (
            CreditEntryKind.CONSUMPTION,
            CreditEntryKind.REVERSAL,
        ):
            used[entry.grant_id] += entry.amount
    movements = [
        Movement(
            invoice.org_id,
            invoice.currency,
            CreditEntryKind.REVERSAL,
            -amount,
            f"{number} is void: the credit it used is available again",
            grant_id,
            invoice.id,
        )
        for grant_id, amount in sorted(used.items())
        if amount < 0
    ]
    carried = [
        entry
        for entry in mine
        if entry.kind == CreditEntryKind.GRANT and entry.credit_note_id is None
    ]
    for grant in carried:
        assert grant.id is not None
        _refuse_if_used(session, invoice, grant)
        left = grant.amount + sum(
            session.execute(
                select(col(CreditEntry.amount)).where(col(CreditEntry.grant_id) == grant.id)
            ).scalars(),
            Decimal(0),
        )
        if left > 0:
            movements.append(
                Movement(
                    invoice.org_id,
                    invoice.currency,
                    CreditEntryKind.REVERSAL,
                    -left,
                    f"{number} is void: the negative total it carried is withdrawn",
                    grant.id,
                    invoice.id,
                )
            )
    _write(session, movements, BY_VOID, now)
    session.flush()


def _refuse_if_used(session: Session, invoice: Invoice, grant: CreditEntry) -> None:
    """A carried grant that a live invoice still uses cannot be withdrawn: name that invoice."""
    net: dict[int, Decimal] = defaultdict(Decimal)
    for consumer, amount in session.execute(
        select(col(CreditEntry.invoice_id), col(CreditEntry.amount)).where(
            col(CreditEntry.grant_id) == grant.id,
            col(CreditEntry.kind).in_([CreditEntryKind.CONSUMPTION, CreditEntryKind.REVERSAL]),
            col(CreditEntry.invoice_id) != invoice.id,
        )
    ):
        net[consumer] += amount
    users = sorted(consumer for consumer, amount in net.items() if amount < 0)
    if not users:
        return
    numbers = dict(
        session.execute(
            select(col(Invoice.id), col(Invoice.number)).where(col(Invoice.id).in_(users))
        ).all()
    )
    first = numbers.get(users[0]) or f"invoice {users[0]}"
    more = f" (and {len(users) - 1} more)" if len(users) > 1 else ""
    raise InvoiceStateError(
        f"{invoice.number}'s negative total ({format_minor(-grant.amount, invoice.currency)} "
        f"{invoice.currency}) was carried to {invoice.org_id}'s credit balance and {first}{more} "
        f"used {format_minor(-net[users[0]], invoice.currency)} of it; void {first} first so "
        "the credit is not spent twice"
    )
