"""The REST API's routes under /api/v1: reads for any token, actions for the role they need;
each calls the same service function as its CLI command and records the token as the actor."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Body, Depends, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import Engine

from billing.close.inline import finalize_period
from billing.config import Settings
from billing.errors import BillingError
from billing.finance.adjustments import adjust, cancel
from billing.finance.budgets import budget_status
from billing.finance.credit_notes import (
    CreditRequest,
    create_credit_note,
    list_credit_notes,
    read_credit_note_detail,
)
from billing.finance.emails import resend, send_pending
from billing.finance.invoices import read_runs, void
from billing.finance.lookup import FileKind, InvoiceKey, invoice_page, invoice_view, statement_file
from billing.finance.overview import org_overview, period_allocation, period_summary, run_view
from billing.finance.review import hold, release
from billing.periods import BillingPeriod
from billing.states import CreditSettlement, InvoiceStatus, Role
from billing.web import present, schemas
from billing.web.auth import Admin, Approver, ledger_engine, principal, require

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": schemas.ErrorBody, "description": text}
    for status, text in (
        (401, "No bearer token, or an unknown or revoked one."),
        (403, "The token's role does not allow this."),
        (404, "Nothing goes by that reference."),
        (409, "The ledger's state does not allow it now (a finalized invoice, a busy period)."),
        (422, "The request is not valid (a field, a period, an amount)."),
    )
}

router = APIRouter(prefix="/api/v1", dependencies=[Depends(principal)], responses=ERRORS)

Engine_ = Annotated[Engine, Depends(ledger_engine)]


def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Settings_ = Annotated[Settings, Depends(app_settings)]


class CursorError(BillingError):
    """A cursor this API did not give out."""


def encode_cursor(key: InvoiceKey) -> str:
    """An opaque cursor: where the page ended, in the listing's order."""
    raw = json.dumps([key.period, key.org_id, key.id], ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> InvoiceKey:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        period, org_id, invoice_id = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise CursorError(
            "cursor: not one this API gave out; pass the next_cursor of the previous page"
        ) from None
    if not (isinstance(period, str) and isinstance(org_id, str) and isinstance(invoice_id, int)):
        raise CursorError(
            "cursor: not one this API gave out; pass the next_cursor of the previous page"
        )
    return InvoiceKey(period, org_id, invoice_id)


def _period(text: str | None) -> BillingPeriod | None:
    return BillingPeriod.parse(text) if text else None


# Reads --------------------------------------------------------------------------------------


@router.get("/invoices", response_model=schemas.InvoiceList, tags=["invoices"])
def list_invoices(
    engine: Engine_,
    period: Annotated[str | None, Query(description="Only this month, YYYY-MM.")] = None,
    status: Annotated[InvoiceStatus | None, Query(description="Only this state.")] = None,
    org: Annotated[str | None, Query(description="Only this org id.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Invoices per page.")] = 50,
    cursor: Annotated[str | None, Query(description="The previous page's next_cursor.")] = None,
) -> schemas.InvoiceList:
    """Invoices, period newest first, then org, then id; a page at a time (keyset: as fast on
    the last page of a period of 5,000 invoices as on the first)."""
    page = invoice_page(
        engine,
        period=_period(period),
        status=status.value if status is not None else None,
        org_id=org,
        limit=limit,
        after=decode_cursor(cursor) if cursor else None,
    )
    return schemas.InvoiceList(
        items=[present.invoice_item(row) for row in page.rows],
        next_cursor=encode_cursor(page.next_key) if page.next_key is not None else None,
    )


@router.get("/invoices/{ref}", response_model=schemas.InvoiceDetail, tags=["invoices"])
def show_invoice(engine: Engine_, ref: str) -> schemas.InvoiceDetail:
    """One invoice by number (INV-2026-000123) or a draft's id."""
    return present.invoice_detail(invoice_view(engine, ref))


def _download(settings: Settings, engine: Engine, ref: str, kind: FileKind) -> FileResponse:
    found = statement_file(settings, engine, ref, kind)
    return FileResponse(found.path, media_type=found.media_type, filename=found.filename)


@router.get(
    "/invoices/{ref}/pdf",
    response_class=FileResponse,
    responses={200: {"content": {"application/pdf": {}}, "description": "The statement PDF."}},
    tags=["invoices"],
)
def invoice_pdf(settings: Settings_, engine: Engine_, ref: str) -> FileResponse:
    """The invoice's PDF statement from the period's folder (rendered if missing)."""
    return _download(settings, engine, ref, "pdf")


@router.get(
    "/invoices/{ref}/csv",
    response_class=FileResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "The statement CSV (FOCUS)."}},
    tags=["invoices"],
)
def invoice_csv(settings: Settings_, engine: Engine_, ref: str) -> FileResponse:
    """The invoice's CSV statement from the period's folder (rendered if missing)."""
    return _download(settings, engine, ref, "csv")


@router.get("/runs", response_model=schemas.RunList, tags=["runs"])
def list_runs(
    engine: Engine_,
    period: Annotated[str | None, Query(description="Only this month, YYYY-MM.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="How many, newest first.")] = 20,
) -> schemas.RunList:
    """The newest billing runs: what started them, how they ended."""
    runs = read_runs(engine, period=_period(period), limit=limit)
    return schemas.RunList(items=[present.run_item(run) for run in runs])


@router.get("/runs/{run_id}", response_model=schemas.RunDetail, tags=["runs"])
def show_run(engine: Engine_, run_id: int) -> schemas.RunDetail:
    """One run's audit: who, parameters, checksum, rate cards, totals, steps, warnings."""
    return present.run_detail(run_view(engine, run_id))


@router.get("/periods/{period}/summary", response_model=schemas.PeriodSummary, tags=["periods"])
def show_period(engine: Engine_, period: str) -> schemas.PeriodSummary:
    """A month at a glance: invoices per state, totals per currency, emails, runs, review."""
    parsed = BillingPeriod.parse(period)
    return present.period_summary(period_summary(engine, parsed, datetime.now(UTC)))


@router.get(
    "/periods/{period}/allocation", response_model=schemas.PeriodAllocation, tags=["periods"]
)
def show_allocation(settings: Settings_, engine: Engine_, period: str) -> schemas.PeriodAllocation:
    """The month's cost by cost centre, org, API key and user (allocation.csv's rows)."""
    parsed = BillingPeriod.parse(period)
    return present.period_allocation(period_allocation(settings, engine, parsed))


@router.get("/budgets", response_model=schemas.BudgetList, tags=["budgets"])
def list_budgets(
    settings: Settings_, engine: Engine_, period: str | None = None
) -> schemas.BudgetList:
    """Every budget of BILLING_BUDGETS for a month (default: the running one): spend so far,
    percent used, linear forecast, alerts fired, and once invoiced the late-usage difference."""
    parsed = _period(period) or BillingPeriod.containing(datetime.now(UTC))
    return present.budget_list(str(parsed), budget_status(settings, engine, parsed))


@router.get("/orgs/{org_id:path}", response_model=schemas.OrgOverview, tags=["orgs"])
def show_org(settings: Settings_, engine: Engine_, org_id: str) -> schemas.OrgOverview:
    """An org: its invoices over time, its contacts, its credit balance per currency."""
    return present.org_overview(org_overview(settings, engine, org_id))


@router.get("/credit-notes", response_model=schemas.CreditNoteList, tags=["credit notes"])
def credit_notes(
    settings: Settings_,
    invoice: Annotated[str | None, Query(description="Those of this invoice number.")] = None,
    org: Annotated[str | None, Query(description="Those of this org.")] = None,
    period: Annotated[str | None, Query(description="Those of this month, YYYY-MM.")] = None,
) -> schemas.CreditNoteList:
    """Credit notes by number."""
    rows = list_credit_notes(
        settings, invoice=invoice, org_id=org, period=str(_period(period)) if period else None
    )
    return schemas.CreditNoteList(items=[schemas.CreditNoteItem.model_validate(r) for r in rows])


@router.get(
    "/credit-notes/{number}", response_model=schemas.CreditNoteDetail, tags=["credit notes"]
)
def show_credit_note(engine: Engine_, number: str) -> schemas.CreditNoteDetail:
    """One credit note: its lines, emails and the credit-balance grant it made."""
    return present.credit_note_detail(read_credit_note_detail(engine, number))


# Actions (the period's lock and the ledger's rules are the service functions'; long ones,
# such as a finalize that renders every PDF, run within the request) -------------------------


def deliver_webhooks(settings: Settings) -> None:
    """After an action that wrote webhook events, with BILLING_WEBHOOKS set and no broker:
    deliver what is due, once, after the response (with a broker, beat's minutely task does);
    a failure leaves them pending for the next pass, never fails the action."""
    if settings.webhooks is None or settings.broker_url:
        return
    try:
        from billing.finance.webhooks import deliver_due

        deliver_due(settings)
    except Exception:
        log.warning("webhooks not delivered now; they stay pending", exc_info=True)


@router.post("/periods/{period}/finalize", response_model=schemas.FinalizeResult, tags=["actions"])
def finalize(
    settings: Settings_, who: Approver, period: str, after: BackgroundTasks
) -> schemas.FinalizeResult:
    """Number and freeze the month's drafts not on hold, write final statements, email them
    (as `billing finalize`); runs within the request."""
    after.add_task(deliver_webhooks, settings)
    result = finalize_period(settings, BillingPeriod.parse(period), trigger="api", actor=who.actor)
    return present.finalize_result(result)


@router.post("/invoices/{ref}/hold", response_model=schemas.HoldChange, tags=["actions"])
def hold_invoice(
    settings: Settings_, who: Approver, ref: str, body: schemas.HoldRequest
) -> schemas.HoldChange:
    """Hold a draft (by its id) back from finalization, with a reason."""
    return present.hold_change(hold(settings, ref, body.reason, actor=who.actor))


@router.post("/invoices/{ref}/release", response_model=schemas.HoldChange, tags=["actions"])
def release_invoice(
    settings: Settings_,
    who: Approver,
    ref: str,
    body: Annotated[schemas.ReleaseRequest | None, Body()] = None,
) -> schemas.HoldChange:
    """Release a held draft; the next finalize numbers it."""
    reason = body.reason if body is not None else None
    return present.hold_change(release(settings, ref, reason, actor=who.actor))


@router.post(
    "/invoices/{ref}/adjustments",
    response_model=schemas.AdjustmentChange,
    status_code=201,
    tags=["actions"],
)
def adjust_invoice(
    settings: Settings_, who: Approver, ref: str, body: schemas.AdjustRequest
) -> schemas.AdjustmentChange:
    """A signed adjustment of a draft on a meter, or a free-text line (description only)."""
    result = adjust(
        settings,
        ref,
        body.meter,
        Decimal(body.amount),
        body.reason,
        body.description,
        created_by=who.actor,
    )
    return present.adjustment_change(result)


@router.post(
    "/adjustments/{adjustment_id}/cancel",
    response_model=schemas.AdjustmentChange,
    tags=["actions"],
)
def cancel_adjustment(
    settings: Settings_, who: Approver, adjustment_id: int, body: schemas.ReasonRequest
) -> schemas.AdjustmentChange:
    """Withdraw an adjustment (kept on record); its draft is priced again."""
    return present.adjustment_change(
        cancel(settings, adjustment_id, body.reason, cancelled_by=who.actor)
    )


@router.post("/invoices/{ref}/void", response_model=schemas.InvoiceDetail, tags=["actions"])
def void_invoice(
    settings: Settings_,
    engine: Engine_,
    who: Admin,
    ref: str,
    body: schemas.ReasonRequest,
    after: BackgroundTasks,
) -> schemas.InvoiceDetail:
    """Void a finalized or sent invoice by its number (admin); the next close of its period
    issues a replacement."""
    after.add_task(deliver_webhooks, settings)
    voided = void(settings, ref, body.reason, actor=who.actor)
    return present.invoice_detail(invoice_view(engine, voided.number or ref))


def _escape(part: str) -> str:
    return part.replace("\\", "\\\\").replace(":", "\\:")


def line_spec(line: schemas.CreditLineRequest) -> str:
    """A line as `billing credit-notes create --line` takes it: METER[:KEY[:USER]]=AMOUNT, a
    key or user pinned when given (null: none), colons and backslashes in ids escaped."""
    given = line.model_fields_set
    parts = [line.meter]
    if "api_key_id" in given or "user_id" in given:
        parts.append(line.api_key_id or "")
    if "user_id" in given:
        parts.append(line.user_id or "")
    return ":".join(_escape(part) for part in parts) + "=" + line.amount


@router.post(
    "/invoices/{ref}/credit-notes",
    response_model=schemas.CreditNoteCreated,
    status_code=201,
    tags=["actions"],
)
def credit_invoice(
    settings: Settings_,
    engine: Engine_,
    who: Approver,
    ref: str,
    body: schemas.CreditNoteRequest,
    after: BackgroundTasks,
) -> schemas.CreditNoteCreated:
    """Credit part or all of a finalized or sent invoice: a credit note with its PDF, CSV and
    emails, settled as credit balance (the default) or a refund."""
    after.add_task(deliver_webhooks, settings)
    request = CreditRequest(
        reason=body.reason,
        lines=tuple(line_spec(line) for line in body.lines or ()),
        amount=body.amount,
        settlement=CreditSettlement(body.settlement),
    )
    created = create_credit_note(settings, ref, request, actor=who.actor)
    detail = read_credit_note_detail(engine, created.document.number)
    return schemas.CreditNoteCreated(
        credit_note=present.credit_note_detail(detail),
        emails=present.send_result(created.emails) if created.emails is not None else None,
    )


@router.post("/invoices/{ref}/resend", response_model=schemas.SendResult, tags=["actions"])
def resend_invoice(
    settings: Settings_,
    who: Approver,
    ref: str,
    body: schemas.ResendRequest,
    after: BackgroundTasks,
) -> schemas.SendResult:
    """Send an issued invoice's statement again to one of its org's contacts (recorded)."""
    after.add_task(deliver_webhooks, settings)
    return present.send_result(resend(settings, ref, body.to, actor=who.actor))


@router.post(
    "/periods/{period}/emails/send",
    response_model=schemas.SendResult,
    dependencies=[Depends(require(Role.APPROVER))],
    tags=["actions"],
)
def send_emails(settings: Settings_, period: str, after: BackgroundTasks) -> schemas.SendResult:
    """Send the month's pending statement and credit-note emails (never one already sent)."""
    after.add_task(deliver_webhooks, settings)
    return present.send_result(send_pending(settings, BillingPeriod.parse(period)))
