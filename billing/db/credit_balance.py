"""An org's credit balance as a ledger of entries: grants, consumptions by invoices, expiries
and reversals, per currency; the balance is their sum."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlmodel import Session

from billing.db.tables import CreditEntry
from billing.errors import BillingError
from billing.states import CreditEntryKind


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
