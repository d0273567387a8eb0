"""What the service layer returns, as the REST API's response bodies: amounts at their
currency's minor unit as strings, quantities exact, nothing added or dropped."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal

from billing.close.publish import CloseResult
from billing.db.tables import BillingRun
from billing.email.outbox import SendReport
from billing.finance.adjustments import AdjustResult
from billing.finance.budgets import BudgetStatus
from billing.finance.credit_notes import CreditNoteDetail
from billing.finance.lookup import InvoiceListRow, InvoiceView
from billing.finance.overview import OrgOverview, PeriodAllocation, PeriodSummary, RunView
from billing.finance.review import HoldChange
from billing.money import format_minor
from billing.states import InvoiceStatus
from billing.web import schemas


def money(amount: Decimal, currency: str) -> str:
    """An amount as the API writes it: exactly the currency's places, never an exponent."""
    return format_minor(amount, currency)


def invoice_item(row: InvoiceListRow) -> schemas.InvoiceItem:
    return schemas.InvoiceItem.model_validate(row)


def invoice_detail(view: InvoiceView) -> schemas.InvoiceDetail:
    detail = view.detail
    invoice = detail.invoice
    statement = view.statement
    return schemas.InvoiceDetail.model_validate(
        {
            **invoice.model_dump(),  # the header's columns by name (the rest are ignored)
            "id": invoice.id or 0,
            "contacts": [email for email in invoice.contact_emails.split(", ") if email],
            "replaces": detail.replaces,
            "replaced_by": detail.replaced_by,
            "net": statement.net_total if statement is not None else invoice.total,
            "tax": statement.tax_total if statement is not None else Decimal(0),
            "charges": statement.charges if statement is not None else (),
            "lines": statement.lines if statement is not None else (),
            "corrections": detail.corrections,
            "adjustments": [
                # its own currency follows its amount in the body: given as context
                schemas.Adjustment.model_validate(row, context={"currency": row.currency})
                for row in detail.adjustments
            ],
            "hold": detail.hold if invoice.status == InvoiceStatus.DRAFT else None,
            "holds": view.holds,
            "credit_notes": detail.credit_notes,
            "deliveries": view.deliveries,
            "created_by_run": view.created_by_run,
            "finalized_by_run": view.finalized_by_run,
            "timeline": view.timeline,
        },
        context={"currency": invoice.currency},  # for the parts without a currency of their own
    )


def run_item(run: BillingRun) -> schemas.RunItem:
    return schemas.RunItem.model_validate(run)


def run_detail(view: RunView) -> schemas.RunDetail:
    run = view.detail.run
    request = json.loads(run.request_params) if run.request_params else None
    return schemas.RunDetail(
        **run_item(run).model_dump(),
        upstream_url=run.upstream_url,
        request=request if isinstance(request, dict) else None,
        usage_checksum=run.usage_checksum,
        completeness=run.completeness,
        usage_results=run.usage_results,
        results_without_memory=run.results_without_memory,
        duplicate_results=run.duplicate_results,
        invoices_stored=view.detail.invoices,
        finalized_count=run.finalized_count,
        corrections_count=run.corrections_count,
        error=run.error,
        rate_cards=view.detail.rate_cards,
        totals=view.detail.totals,
        org_outcomes=view.detail.org_outcomes,
        steps=view.steps,
        warnings=view.warnings,
    )


def period_summary(summary: PeriodSummary) -> schemas.PeriodSummary:
    return schemas.PeriodSummary.model_validate(summary)


def budget_list(period: str, statuses: list[BudgetStatus]) -> schemas.BudgetList:
    return schemas.BudgetList(
        period=period,
        items=[
            schemas.BudgetRow.model_validate(
                {
                    "scope": str(status.budget.scope),
                    "scope_id": status.budget.scope_id,
                    "currency": status.budget.currency,
                    "budget": status.budget.amount,
                    "spend": status.spend,
                    "used_percent": None
                    if status.used_percent is None
                    else format(status.used_percent, "f"),
                    "forecast": status.forecast,
                    "alerts": list(status.fired),
                    "measured_at": status.measured_at,
                    "invoiced": status.invoiced,
                    "difference": status.difference,
                },
            )
            for status in statuses
        ],
    )


def period_allocation(allocation: PeriodAllocation) -> schemas.PeriodAllocation:
    return schemas.PeriodAllocation(
        period=allocation.period,
        rows=[
            schemas.AllocationRow.model_validate(
                {**dataclasses.asdict(row), "amount": row.billed_cost}
            )
            for row in allocation.rows
        ],
        totals=allocation.totals,
    )


def org_overview(org: OrgOverview) -> schemas.OrgOverview:
    return schemas.OrgOverview.model_validate(org)


def credit_note_detail(detail: CreditNoteDetail) -> schemas.CreditNoteDetail:
    note = detail.document
    currency = note.currency
    return schemas.CreditNoteDetail(
        number=note.number,
        invoice_number=note.invoice_number,
        org_id=note.org_id,
        org_name=note.org_name,
        period=note.period,
        currency=currency,
        total=money(note.total, currency),
        invoice_total=money(note.invoice_total, currency),
        reason=note.reason,
        settlement=note.settlement,
        created_by=note.created_by,
        created_at=note.created_at,
        rate_card=note.rate_card,
        lines=[
            schemas.CreditNoteLine.model_validate(line, context={"currency": currency})
            for line in note.lines
        ],
        emails=[schemas.CreditNoteEmail.model_validate(email) for email in detail.emails],
        grant_id=detail.grant_id,
    )


def send_result(report: SendReport) -> schemas.SendResult:
    return schemas.SendResult(
        messages=report.messages, outcomes=dict(report.outcomes), cut_off=list(report.cut_off)
    )


def finalize_result(result: CloseResult) -> schemas.FinalizeResult:
    return schemas.FinalizeResult(
        period=str(result.period),
        run_id=result.run_id,
        invoices=len(result.invoices),
        finalized=sum(1 for invoice in result.invoices if not invoice.draft),
        drafts=result.drafts,
        totals=(
            {
                currency: sum(
                    (i.total for i in result.invoices if i.currency == currency), Decimal(0)
                )
                for currency in sorted({i.currency for i in result.invoices})
            }
        ),
        emails_sent=result.emails_sent,
        outcomes=[item for item in result.org_outcomes if item["action"] != "drafted"],
    )


def hold_change(change: HoldChange) -> schemas.HoldChange:
    return schemas.HoldChange.model_validate(change)


def adjustment_change(result: AdjustResult) -> schemas.AdjustmentChange:
    return schemas.AdjustmentChange.model_validate(result)
