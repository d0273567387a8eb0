"""Taxes in the ledger: a draft's tax charges (one per rate, each with one line) rewritten from
its net and the rule stored on it, wherever the net changes. Callers supply the transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import bindparam, delete, select, update
from sqlmodel import Session, col

from billing.db.bulk import copy_rows
from billing.db.tables import (
    CHARGE_COPY_COLUMNS,
    LINE_COPY_COLUMNS,
    Invoice,
    InvoiceCharge,
    InvoiceLine,
)
from billing.domain import TaxRule
from billing.money import decimal_to_minor, minor_to_decimal
from billing.states import ChargeClass, InvoiceStatus
from billing.taxes import tax_charges

# Not part of the net: the tax itself and the credit balance applied after it.
NOT_NET = (ChargeClass.TAX, ChargeClass.CREDIT)
_IDS_PER_STATEMENT = 10_000


def retax(session: Session, invoice_ids: Sequence[int]) -> None:
    """Rewrite the tax charges and lines of these drafts from their net (every charge but
    tax and credit) and their stored rule, and their totals as the sum of all charges; drafts
    without a rule (untaxed) are not touched. One pass of a few statements per chunk."""
    for start in range(0, len(invoice_ids), _IDS_PER_STATEMENT):
        _retax_chunk(session, list(invoice_ids[start : start + _IDS_PER_STATEMENT]))


def _retax_chunk(session: Session, ids: list[int]) -> None:
    if not ids:
        return
    session.flush()
    taxed = {
        int(invoice_id): (str(currency), TaxRule.from_json(rule))
        for invoice_id, currency, rule in session.execute(
            select(col(Invoice.id), col(Invoice.currency), col(Invoice.tax_rule)).where(
                col(Invoice.id).in_(ids),
                col(Invoice.tax_rule).is_not(None),
                col(Invoice.status) == InvoiceStatus.DRAFT,
            )
        )
    }
    if not taxed:
        return
    chosen = list(taxed)
    for table in (InvoiceLine, InvoiceCharge):
        session.execute(
            delete(table).where(
                col(table.invoice_id).in_(chosen), col(table.charge_class) == ChargeClass.TAX
            )
        )
    nets: dict[int, int] = defaultdict(int)
    positions: dict[int, int] = defaultdict(int)
    others: dict[int, int] = defaultdict(int)  # credit charges (none on a draft, as a rule)
    for invoice_id, position, amount, charge_class in session.execute(
        select(
            col(InvoiceCharge.invoice_id),
            col(InvoiceCharge.position),
            col(InvoiceCharge.amount),
            col(InvoiceCharge.charge_class),
        ).where(col(InvoiceCharge.invoice_id).in_(chosen))
    ):
        currency = taxed[invoice_id][0]
        minor = decimal_to_minor(amount, currency)
        if charge_class in NOT_NET:
            others[invoice_id] += minor
        else:
            nets[invoice_id] += minor
        positions[invoice_id] = max(positions[invoice_id], position)
    charge_rows: list[tuple[object, ...]] = []
    line_rows: list[tuple[object, ...]] = []
    totals: list[dict[str, object]] = []
    for invoice_id in chosen:
        currency, rule = taxed[invoice_id]
        tax_minor = 0
        for offset, charge in enumerate(tax_charges([(rule, nets[invoice_id])], currency), 1):
            net = minor_to_decimal(charge.net_minor, currency)
            amount = minor_to_decimal(charge.amount_minor, currency)
            tax_minor += charge.amount_minor
            charge_rows.append(
                (
                    invoice_id,
                    positions[invoice_id] + offset,
                    charge.meter,
                    charge.description,
                    "",
                    net,
                    Decimal(0),
                    net,
                    charge.pricing,
                    amount,
                    ChargeClass.TAX.value,
                    charge.percent,
                    charge.treatment,
                )
            )
            line_rows.append(
                (invoice_id, charge.meter, None, None, net, "", amount, ChargeClass.TAX.value)
            )
        total = nets[invoice_id] + tax_minor + others[invoice_id]
        totals.append({"taxed_id": invoice_id, "new_total": minor_to_decimal(total, currency)})
    copy_rows(session, InvoiceCharge, _TAX_CHARGE_COLUMNS, charge_rows)
    copy_rows(session, InvoiceLine, _TAX_LINE_COLUMNS, line_rows)
    invoices = Invoice.__table__  # type: ignore[attr-defined]
    session.execute(
        update(invoices)
        .where(invoices.c.id == bindparam("taxed_id"))
        .values(total=bindparam("new_total")),
        totals,
    )
    for loaded in list(session.identity_map.values()):
        if isinstance(loaded, Invoice) and loaded.id in taxed:
            session.expire(loaded)


_TAX_CHARGE_COLUMNS = (*CHARGE_COPY_COLUMNS, "tax_percent", "tax_treatment")
_TAX_LINE_COLUMNS = LINE_COPY_COLUMNS
