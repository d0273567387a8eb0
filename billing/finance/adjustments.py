"""Finance's adjustments of drafts: add a signed one, withdraw one; the draft's statement and
the period's reports are written again so the files match the ledger."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from billing.close.publish import (
    keyed_documents,
    output_folder,
    write_documents,
    write_period_reports,
)
from billing.close.steps import who_started
from billing.config import Settings
from billing.db.adjustments import add_adjustment, cancel_adjustment
from billing.db.engine import ledger
from billing.db.locks import hold_period, write_transaction
from billing.db.repository import invoice_by_reference, load_statements
from billing.db.tables import Invoice, InvoiceAdjustment
from billing.errors import BillingError, NotFound
from billing.periods import BillingPeriod
from billing.statements.render_keys import StatementPdfs

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AdjustResult:
    """What an adjustment or its withdrawal did: the adjustment, and the draft it changed
    (None when no draft of its org and period stands) with its new total and files."""

    adjustment_id: int
    org_id: str
    period: str
    currency: str
    amount: Decimal
    draft_id: int | None = None
    total: Decimal | None = None
    files: tuple[Path, ...] = ()


def adjust(
    settings: Settings,
    draft_ref: str,
    meter: str | None,
    amount: Decimal,
    reason: str,
    description: str | None = None,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Progress = lambda _text: None,
    wait_seconds: float = 0.0,  # float-ok: a timeout
    created_by: str | None = None,
) -> AdjustResult:
    """Record a signed adjustment of a draft (on a meter, or a free-text line with a
    description), under the period's lock; the draft's PDF and CSV and the period's reports
    are written again. Refused, one line each: anything but a draft (a finalized invoice
    takes a credit note), a meter the draft has no charge for, an amount finer than the
    currency's minor unit, an empty reason."""
    if not reason.strip():
        raise BillingError("an adjustment needs a reason: pass --reason TEXT")
    with ledger(settings) as engine:
        with Session(engine) as session:
            period = _find_invoice(session, draft_ref).period
        with hold_period(engine, period, wait_seconds, progress, now):
            with write_transaction(engine) as session:
                invoice = _find_invoice(session, draft_ref)
                adjustment = add_adjustment(
                    session,
                    invoice=invoice,
                    meter=meter,
                    amount=amount,
                    reason=reason,
                    description=description,
                    created_by=created_by or who_started(),
                    now=now(),
                )
                result = AdjustResult(
                    adjustment_id=adjustment.id or 0,
                    org_id=invoice.org_id,
                    period=invoice.period,
                    currency=invoice.currency,
                    amount=amount,
                    draft_id=invoice.id,
                    total=invoice.total,
                )
            return _rewrite_files(settings, engine, result, progress)


def cancel(
    settings: Settings,
    adjustment_id: int,
    reason: str,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Progress = lambda _text: None,
    wait_seconds: float = 0.0,  # float-ok: a timeout
    cancelled_by: str | None = None,
) -> AdjustResult:
    """Withdraw a live adjustment (kept on record with who, when and why) under the period's
    lock; the org's draft, if one stands, is re-priced and its files written again."""
    if not reason.strip():
        raise BillingError("a cancellation needs a reason: pass --reason TEXT")
    with ledger(settings) as engine:
        with Session(engine) as session:
            found = session.get(InvoiceAdjustment, adjustment_id)
            if found is None:
                raise NotFound(
                    f"no adjustment {adjustment_id}: billing invoices show DRAFT lists a "
                    "draft's adjustments"
                )
            period = found.period
        with hold_period(engine, period, wait_seconds, progress, now):
            with write_transaction(engine) as session:
                adjustment, draft = cancel_adjustment(
                    session,
                    adjustment_id=adjustment_id,
                    reason=reason,
                    cancelled_by=cancelled_by or who_started(),
                    now=now(),
                )
                result = AdjustResult(
                    adjustment_id=adjustment_id,
                    org_id=adjustment.org_id,
                    period=adjustment.period,
                    currency=adjustment.currency,
                    amount=adjustment.amount,
                    draft_id=draft.id if draft is not None else None,
                    total=draft.total if draft is not None else None,
                )
            if result.draft_id is None:
                return result
            return _rewrite_files(settings, engine, result, progress)


def _find_invoice(session: Session, reference: str) -> Invoice:
    """The invoice a reference names: a draft's id, or a number (refused later, with what to
    do instead)."""
    invoice = invoice_by_reference(session, reference.strip())
    if invoice is None:
        raise NotFound(
            f"no invoice {reference!r}: give a draft's id "
            "(billing invoices list --status draft shows them)"
        )
    return invoice


def _rewrite_files(
    settings: Settings, engine: Engine, result: AdjustResult, say: Progress
) -> AdjustResult:
    """The draft's PDF and CSV (marked DRAFT) and the period's summary, allocation and
    reports again from the ledger: no other statement is rendered."""
    period = BillingPeriod.parse(result.period)
    folder = output_folder(settings, period, say)
    with Session(engine) as session:
        [statement] = [
            s
            for s in load_statements(session, period, result.org_id)
            if s.invoice_id == result.draft_id
        ]
    documents, keyed = keyed_documents(StatementPdfs(settings, folder), statement)
    write_documents(folder, documents, keyed)
    write_period_reports(settings, engine, period, folder, say)
    files = (folder / f"{documents.stem}.pdf", folder / f"{documents.stem}.csv")
    say(f"wrote {files[0].name}, {files[1].name} and the period's reports to {folder}")
    return dataclasses.replace(result, total=statement.total, files=files)
