"""Credit balances as finance works them: grant prepaid credit, show an org's balance ledger."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation

from sqlalchemy import select
from sqlmodel import Session, col

from billing.catalog import load_org_directory
from billing.close.steps import who_started
from billing.config import Settings
from billing.credits import expiries_due, grants_of
from billing.db.credit_balance import as_entries, balance, entries, grant_credit
from billing.db.engine import existing_ledger, ledger
from billing.db.locks import write_transaction
from billing.db.tables import CreditEntry, CreditNote, Invoice
from billing.errors import BillingError, LedgerMissing
from billing.money import decimal_to_minor, minor_unit_exponent
from billing.states import CreditEntryKind

# A grant's expiry day: the credit is not used by invoices finalized from 00:00 UTC that day.
EXPIRY_TIME = time(0, 0, tzinfo=UTC)
PENDING_EXPIRY = "expired (recorded at next use)"


def parse_amount(text: str, currency: str) -> tuple[Decimal, str]:
    """A grant's amount and its ISO currency: positive, at most the currency's minor-unit
    places (USD 2, JPY 0, BHD 3); a one-line BillingError otherwise."""
    code = currency.strip().upper()
    try:
        minor_unit_exponent(code)
    except ValueError:
        raise BillingError(f"--currency {currency!r} is not an ISO 4217 currency code") from None
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise BillingError(f"amount {text!r} is not a number such as 25.00") from None
    if not amount.is_finite() or amount <= 0:
        raise BillingError(f"amount {text!r}: a grant must be more than 0 {code}")
    try:
        decimal_to_minor(amount, code)
    except ValueError:
        places = minor_unit_exponent(code)
        raise BillingError(
            f"amount {text!r} has more decimal places than {code} has ({places})"
        ) from None
    return amount, code


def expiry_moment(day: date) -> datetime:
    """When a grant given `--expires DAY` stops being usable: 00:00 UTC on that day."""
    return datetime.combine(day, EXPIRY_TIME)


@dataclass(frozen=True)
class Granted:
    """A grant just written, and the org's balance in its currency after it."""

    entry_id: int
    org_id: str
    currency: str
    amount: Decimal
    expires_at: datetime | None
    balance: Decimal


def grant(
    settings: Settings,
    org_id: str,
    amount_text: str,
    currency: str,
    reason: str,
    *,
    expires: date | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Granted:
    """Add prepaid credit to an org's balance. The org must be in the org directory or have an
    invoice or a credit entry in the ledger: a mistyped id is refused, not credited."""
    amount, code = parse_amount(amount_text, currency)
    if not reason.strip():
        raise BillingError("a grant needs a reason: pass --reason TEXT")
    moment = now()
    expires_at = expiry_moment(expires) if expires is not None else None
    if expires_at is not None and expires_at <= moment:
        raise BillingError(
            f"--expires {expires}: that day has begun or passed (a grant expires at 00:00 UTC "
            "on its --expires day); give a later day"
        )
    with ledger(settings) as engine, write_transaction(engine) as session:
        _check_org_known(settings, session, org_id)
        entry_id = grant_credit(
            session,
            org_id=org_id,
            currency=code,
            amount=amount,
            reason=reason.strip(),
            created_by=who_started(),
            now=moment,
            expires_at=expires_at,
        )
        after = balance(session, org_id, code)
    return Granted(entry_id, org_id, code, amount, expires_at, after)


def _check_org_known(settings: Settings, session: Session, org_id: str) -> None:
    if org_id in load_org_directory(settings.orgs).orgs:
        return
    for table in (Invoice, CreditEntry):
        found = session.execute(
            select(col(table.id)).where(col(table.org_id) == org_id).limit(1)
        ).first()
        if found is not None:
            return
    raise BillingError(
        f"org {org_id!r} is not in the org directory {settings.orgs} and has no invoice or "
        "credit in the ledger; check the id (billing invoices list shows billed orgs) or add "
        "the org to BILLING_ORGS"
    )


@dataclass(frozen=True)
class CreditLine:
    """One line of `billing credits show`: a stored entry, or an expiry not yet recorded."""

    id: int | None  # None: an expiry that the next use of the balance records
    created_at: datetime
    kind: str
    currency: str
    amount: Decimal
    grant_id: int | None
    invoice_number: str | None
    credit_note_number: str | None
    reason: str
    expires_at: datetime | None
    created_by: str


@dataclass(frozen=True)
class CreditLedger:
    """An org's credit lines, and its balance per currency: the sum of those lines."""

    org_id: str
    lines: list[CreditLine]
    balances: dict[str, Decimal]


def show(
    settings: Settings, org_id: str, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> CreditLedger:
    """The org's credit ledger, per currency in the order it was written, with the expiries
    due by now but not recorded yet (they are recorded when the balance is next used) as lines
    of their own, so the balance shown is always the sum of the lines shown."""
    moment = now()
    try:
        with existing_ledger(settings) as engine, Session(engine) as session:
            stored = entries(session, org_id)
            numbers = _invoice_numbers(session, stored)
            notes = _credit_note_numbers(session, stored)
    except LedgerMissing:
        stored, numbers, notes = [], {}, {}
    lines: list[CreditLine] = []
    for currency in sorted({entry.currency for entry in stored}):
        mine = [entry for entry in stored if entry.currency == currency]
        lines += [
            CreditLine(
                entry.id,
                entry.created_at,
                entry.kind,
                currency,
                entry.amount,
                entry.grant_id,
                numbers.get(entry.invoice_id) if entry.invoice_id is not None else None,
                notes.get(entry.credit_note_id) if entry.credit_note_id is not None else None,
                entry.reason,
                entry.expires_at,
                entry.created_by,
            )
            for entry in mine
        ]
        grants = grants_of(as_entries(mine))
        expiring = {grant.id: grant for grant in grants}
        lines += [
            CreditLine(
                None,
                expiring[draw.grant_id].expires_at or moment,
                CreditEntryKind.EXPIRY,
                currency,
                -draw.amount,
                draw.grant_id,
                None,
                None,
                PENDING_EXPIRY,
                None,
                "",
            )
            for draw in expiries_due(grants, moment)
        ]
    balances: dict[str, Decimal] = {}
    for line in lines:
        balances[line.currency] = balances.get(line.currency, Decimal(0)) + line.amount
    return CreditLedger(org_id, lines, balances)


def _invoice_numbers(session: Session, stored: list[CreditEntry]) -> dict[int, str]:
    ids = {entry.invoice_id for entry in stored if entry.invoice_id is not None}
    if not ids:
        return {}
    rows = session.execute(
        select(col(Invoice.id), col(Invoice.number)).where(col(Invoice.id).in_(ids))
    ).all()
    return {invoice_id: number or f"draft {invoice_id}" for invoice_id, number in rows}


def _credit_note_numbers(session: Session, stored: list[CreditEntry]) -> dict[int, str]:
    ids = {entry.credit_note_id for entry in stored if entry.credit_note_id is not None}
    if not ids:
        return {}
    rows = session.execute(
        select(col(CreditNote.id), col(CreditNote.number)).where(col(CreditNote.id).in_(ids))
    ).all()
    return dict(rows)
