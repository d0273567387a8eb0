"""The Invoice page: one invoice's header, charges, lines, corrections, adjustments, credit
notes, emails, PDF and timeline, and its statement files (the API's statement_file())."""

from __future__ import annotations

from decimal import Decimal
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.responses import Response

from billing.config import Settings
from billing.domain import MINIMUM_CHARGE_METER
from billing.finance.lookup import FileKind, InvoiceView, invoice_view, statement_file
from billing.states import InvoiceStatus, Role
from billing.web.auth import ledger_engine
from billing.web.console.render import page, path_part, quantity
from billing.web.console.session import User

router = APIRouter(include_in_schema=False)

ISSUED = (InvoiceStatus.FINALIZED, InvoiceStatus.SENT)


def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def reference(view: InvoiceView) -> str:
    """How the console names an invoice in its paths: its number, else (a draft) its id."""
    invoice = view.detail.invoice
    return invoice.number or str(invoice.id)


def invoice_path(ref: str) -> str:
    return f"/invoices/{path_part(ref)}"


def title(view: InvoiceView) -> str:
    """INV-2026-000003, or Draft 17."""
    invoice = view.detail.invoice
    return invoice.number or f"Draft {invoice.id}"


def adjustable_meters(view: InvoiceView) -> list[str]:
    """The meters a draft may be adjusted on: its usage charges' (no minimum), in order."""
    charges = view.statement.charges if view.statement is not None else ()
    meters = [
        c.meter for c in charges if c.charge_class == "usage" and c.meter != MINIMUM_CHARGE_METER
    ]
    return list(dict.fromkeys(meters))


def not_credited(view: InvoiceView) -> Decimal:
    """What of an issued invoice no credit note has credited yet."""
    credited = sum((note.total for note in view.detail.credit_notes), Decimal(0))
    return view.detail.invoice.total - credited


@router.get("/invoices/{ref}")
def show_invoice(request: Request, user: User, ref: str) -> Response:
    view = invoice_view(ledger_engine(request), ref)
    invoice = view.detail.invoice
    return page(
        request,
        "invoice.html",
        user,
        view=view,
        invoice=invoice,
        detail=view.detail,
        statement=view.statement,
        title=title(view),
        ref=reference(view),
        held=view.detail.hold is not None,
        issued=invoice.status in ISSUED,
        meters=adjustable_meters(view),
        rest=not_credited(view),
        contacts=[email for email in invoice.contact_emails.split(", ") if email],
        quantity=partial(quantity, locale=app_settings(request).locale),
        roles=Role,
    )


def _file(request: Request, ref: str, kind: FileKind) -> FileResponse:
    found = statement_file(app_settings(request), ledger_engine(request), ref, kind)
    return FileResponse(
        found.path,
        media_type=found.media_type,
        filename=found.filename,
        content_disposition_type="inline" if kind == "pdf" else "attachment",
    )


@router.get("/invoices/{ref}/pdf")
def invoice_pdf(request: Request, user: User, ref: str) -> FileResponse:
    """The statement PDF, shown inline (the Invoice page frames it)."""
    return _file(request, ref, "pdf")


@router.get("/invoices/{ref}/csv")
def invoice_csv(request: Request, user: User, ref: str) -> FileResponse:
    """The statement CSV, as a download."""
    return _file(request, ref, "csv")
