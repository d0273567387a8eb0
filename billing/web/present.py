"""What the service layer returns, as the REST API's response bodies: amounts at their
currency's minor unit as strings, quantities exact, nothing added or dropped."""

from __future__ import annotations

import json
from decimal import Decimal

from billing.close.publish import CloseResult
from billing.db.tables import BillingRun
from billing.email.outbox import SendReport
from billing.finance.adjustments import AdjustResult
from billing.finance.credit_notes import CreditNoteDetail
from billing.finance.lookup import InvoiceListRow, InvoiceView, RunRef
from billing.finance.overview import OrgOverview, PeriodAllocation, PeriodSummary, RunView
from billing.finance.review import HoldChange
from billing.money import format_minor, format_quantity
from billing.states import InvoiceStatus
from billing.web import schemas


def money(amount: Decimal, currency: str) -> str:
    """An amount as the API writes it: exactly the currency's places, never an exponent."""
    return format_minor(amount, currency)


def invoice_item(row: InvoiceListRow) -> schemas.InvoiceItem:
    return schemas.InvoiceItem(
        id=row.id,
        number=row.number,
        status=row.status,
        held=row.held,
        org_id=row.org_id,
        org_name=row.org_name,
        period=row.period,
        currency=row.currency,
        total=money(row.total, row.currency),
        issued_at=row.issued_at,
        finalized_at=row.finalized_at,
        line_items=row.line_items,
        run_id=row.run_id,
    )


def _run_ref(run: RunRef | None) -> schemas.RunRef | None:
    if run is None:
        return None
    return schemas.RunRef(
        id=run.id,
        operation=run.operation,
        started_by=run.started_by,
        trigger=run.trigger,
        started_at=run.started_at,
    )


def invoice_detail(view: InvoiceView) -> schemas.InvoiceDetail:
    detail = view.detail
    invoice = detail.invoice
    currency = invoice.currency
    statement = view.statement
    return schemas.InvoiceDetail(
        id=invoice.id or 0,
        number=invoice.number,
        status=invoice.status,
        org_id=invoice.org_id,
        org_name=invoice.org_name,
        period=invoice.period,
        currency=currency,
        total=money(invoice.total, currency),
        contacts=[email for email in invoice.contact_emails.split(", ") if email],
        billing_address=invoice.billing_address,
        rate_card_id=invoice.rate_card_id,
        rate_card_version=invoice.rate_card_version,
        rate_card_hash=invoice.rate_card_hash,
        discount_percent=(
            format_quantity(invoice.discount_percent)
            if invoice.discount_percent is not None
            else None
        ),
        minimum_charge=(
            money(invoice.minimum_charge, currency) if invoice.minimum_charge is not None else None
        ),
        run_id=invoice.run_id,
        issued_at=invoice.issued_at,
        due_at=invoice.due_at,
        finalized_at=invoice.finalized_at,
        sent_at=invoice.sent_at,
        voided_at=invoice.voided_at,
        voided_by=invoice.voided_by,
        void_reason=invoice.void_reason,
        replaces=detail.replaces,
        replaced_by=detail.replaced_by,
        charges=[
            schemas.Charge(
                meter=charge.meter,
                description=charge.description,
                charge_class=charge.charge_class,
                unit=charge.unit,
                quantity=format_quantity(charge.quantity),
                included=format_quantity(charge.included),
                billable=format_quantity(charge.billable),
                pricing=charge.pricing,
                amount=money(charge.amount, currency),
                corrects_invoice_id=charge.corrects_invoice_id,
            )
            for charge in (statement.charges if statement is not None else ())
        ],
        lines=[
            schemas.Line(
                meter=line.meter,
                charge_class=line.charge_class,
                api_key_id=line.api_key_id,
                user_id=line.user_id,
                quantity=format_quantity(line.quantity),
                unit=line.unit,
                amount=money(line.amount, currency),
            )
            for line in (statement.lines if statement is not None else ())
        ],
        corrections=[
            schemas.Correction(
                meter=row.meter,
                amount=money(row.amount, currency),
                target_period=row.target_period,
                billed_on=row.billed_on,
                run_id=row.run_id,
            )
            for row in detail.corrections
        ],
        adjustments=[
            schemas.Adjustment(
                id=row.id,
                state=row.state,
                meter=row.meter,
                description=row.description,
                amount=money(row.amount, row.currency),
                currency=row.currency,
                reason=row.reason,
                created_by=row.created_by,
                created_at=row.created_at,
                cancelled_by=row.cancelled_by,
                cancelled_at=row.cancelled_at,
                cancel_reason=row.cancel_reason,
                applied_to=row.applied_to,
            )
            for row in detail.adjustments
        ],
        hold=(
            schemas.Hold(
                reason=detail.hold.reason, held_by=detail.hold.held_by, held_at=detail.hold.held_at
            )
            if detail.hold is not None and invoice.status == InvoiceStatus.DRAFT
            else None
        ),
        holds=[
            schemas.Hold(
                reason=hold.reason,
                held_by=hold.held_by,
                held_at=hold.held_at,
                released_by=hold.released_by,
                released_at=hold.released_at,
            )
            for hold in view.holds
        ],
        credit_notes=[
            schemas.CreditNoteItem(
                number=note.number,
                invoice_number=note.invoice_number,
                org_id=note.org_id,
                period=note.period,
                currency=note.currency,
                total=money(note.total, note.currency),
                settlement=note.settlement,
                reason=note.reason,
                created_by=note.created_by,
                created_at=note.created_at,
            )
            for note in detail.credit_notes
        ],
        deliveries=[
            schemas.Delivery(
                id=row.id,
                recipient=row.recipient,
                kind=row.kind,
                status=row.status,
                attempts=row.attempts,
                message_id=row.message_id,
                server_reply=row.server_reply,
                error=row.error,
                requested_by=row.requested_by,
                created_at=row.created_at,
                last_attempt_at=row.last_attempt_at,
                sent_at=row.sent_at,
                credit_note_id=row.credit_note_id,
            )
            for row in view.deliveries
        ],
        created_by_run=_run_ref(view.created_by_run),
        finalized_by_run=_run_ref(view.finalized_by_run),
        timeline=[
            schemas.TimelineEntry(at=entry.at, event=entry.event, by=entry.by, detail=entry.detail)
            for entry in view.timeline
        ],
    )


def _totals(totals: dict[str, str] | dict[str, Decimal]) -> dict[str, str]:
    return {currency: money(Decimal(total), currency) for currency, total in totals.items()}


def run_item(run: BillingRun) -> schemas.RunItem:
    return schemas.RunItem(
        id=run.id or 0,
        period=run.period,
        operation=run.operation,
        status=run.status,
        mode=run.mode,
        stage=run.stage,
        trigger=run.trigger,
        started_by=run.started_by,
        started_at=run.started_at,
        finished_at=run.finished_at,
        invoice_count=run.invoice_count,
        pages_fetched=run.pages_fetched,
        review_deadline=run.review_deadline,
    )


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
        rate_cards=[schemas.RateCardUse(**card) for card in view.detail.rate_cards],
        totals=_totals(view.detail.totals),
        org_outcomes=view.detail.org_outcomes,
        steps={
            step: schemas.StepProgress(done=p.done, total=p.total, problems=p.problems)
            for step, p in view.steps.items()
        },
        warnings=view.warnings,
    )


def period_summary(summary: PeriodSummary) -> schemas.PeriodSummary:
    return schemas.PeriodSummary(
        period=summary.period,
        counts=summary.counts,
        totals=_totals(summary.totals),
        emails=summary.emails,
        runs=[run_item(run) for run in summary.runs],
        review_deadline=summary.review_deadline,
        review_open=summary.review_open,
    )


def period_allocation(allocation: PeriodAllocation) -> schemas.PeriodAllocation:
    return schemas.PeriodAllocation(
        period=allocation.period,
        rows=[
            schemas.AllocationRow(
                cost_centre=row.cost_centre,
                org_id=row.org_id,
                org_name=row.org_name,
                invoice_number=row.invoice_number,
                api_key_id=row.api_key_id,
                user_id=row.user_id,
                currency=row.currency,
                amount=money(row.billed_cost, row.currency),
                line_items=row.line_items,
                mapped_by=row.mapped_by,
            )
            for row in allocation.rows
        ],
        totals=_totals(allocation.totals),
    )


def org_overview(org: OrgOverview) -> schemas.OrgOverview:
    return schemas.OrgOverview(
        org_id=org.org_id,
        name=org.name,
        listed=org.listed,
        contacts=list(org.contacts),
        billing_address=org.billing_address,
        invoices=[invoice_item(row) for row in org.invoices],
        more_invoices=org.more_invoices,
        balances=_totals(org.balances),
    )


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
            schemas.CreditNoteLine(
                meter=line.meter,
                description=line.description,
                unit=line.unit,
                charge_class=line.charge_class,
                api_key_id=line.api_key_id,
                user_id=line.user_id,
                amount=money(line.amount, currency),
            )
            for line in note.lines
        ],
        emails=[
            schemas.CreditNoteEmail(
                recipient=email.recipient,
                status=email.status,
                attempts=email.attempts,
                detail=email.detail,
                sent_at=email.sent_at,
            )
            for email in detail.emails
        ],
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
        totals=_totals(
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
    return schemas.HoldChange(
        invoice_id=change.invoice_id,
        org_id=change.org_id,
        period=change.period,
        reason=change.reason,
        by=change.by,
        at=change.at,
        window_ends=change.window_ends,
    )


def adjustment_change(result: AdjustResult) -> schemas.AdjustmentChange:
    return schemas.AdjustmentChange(
        adjustment_id=result.adjustment_id,
        org_id=result.org_id,
        period=result.period,
        currency=result.currency,
        amount=money(result.amount, result.currency),
        draft_id=result.draft_id,
        total=money(result.total, result.currency) if result.total is not None else None,
    )
