"""The Invoice page's actions: hold, release, adjust (and cancel), void, credit note, resend;
each asks first, then calls the same service function as the CLI and the API."""

from __future__ import annotations

import re
from decimal import Decimal

from fastapi import APIRouter, BackgroundTasks, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from billing.errors import InvoiceStateError
from billing.finance.adjustments import adjust, cancel
from billing.finance.credit_notes import CreditRequest, create_credit_note
from billing.finance.emails import resend
from billing.finance.invoices import void
from billing.finance.lookup import InvoiceView, invoice_view
from billing.finance.review import hold, release
from billing.states import CreditSettlement, InvoiceStatus, Role
from billing.web.api import deliver_webhooks
from billing.web.auth import ledger_engine
from billing.web.console.forms import FieldError, Posted, confirmation, posted
from billing.web.console.invoices import (
    ISSUED,
    app_settings,
    invoice_path,
    not_credited,
    reference,
    title,
)
from billing.web.console.render import money, redirect
from billing.web.console.session import SignedIn, User
from billing.web.schemas import DECIMAL_PATTERN

router = APIRouter(include_in_schema=False)


def amount_field(form: Posted, name: str, label: str, *, required: bool = True) -> Decimal | None:
    """A signed decimal amount such as -12.50 (never a float); FieldError naming the field."""
    text = form.text(name, label, required=required)
    if not text:
        return None
    if not re.fullmatch(DECIMAL_PATTERN, text):
        raise FieldError(f"{label}: not an amount; write it like 12.50 or -12.50")
    return Decimal(text)


async def _view(request: Request, ref: str) -> InvoiceView:
    return await run_in_threadpool(invoice_view, ledger_engine(request), ref)


def _only(view: InvoiceView, allowed: tuple[InvoiceStatus, ...], rule: str) -> None:
    """Refuse (409) before asking when the invoice's state does not allow the action."""
    status = view.detail.invoice.status
    if status not in allowed:
        raise InvoiceStateError(f"{title(view)} is {status}; {rule}")


def _money(request: Request, amount: Decimal, currency: str) -> str:
    return money(amount, currency, app_settings(request).locale)


def _whose(view: InvoiceView) -> str:
    invoice = view.detail.invoice
    return f"{title(view)} of {invoice.org_name} ({invoice.org_id}) for {invoice.period}"


def _ask(
    request: Request,
    user: SignedIn,
    form: Posted,
    view: InvoiceView,
    heading: str,
    consequences: list[str],
    button: str,
    *,
    danger: bool = False,
) -> Response:
    return confirmation(
        request,
        user,
        form,
        title=heading,
        consequences=[*consequences, f"It is recorded as done by {user.principal.actor}."],
        back=invoice_path(reference(view)),
        button=button,
        danger=danger,
    )


@router.post("/invoices/{ref}/hold")
async def hold_invoice(request: Request, user: User, ref: str) -> Response:
    form = await posted(request, user, Role.APPROVER)
    reason = form.text("reason", "Reason")
    if not form.confirmed:
        view = await _view(request, ref)
        _only(view, (InvoiceStatus.DRAFT,), "only drafts are held")
        return _ask(
            request,
            user,
            form,
            view,
            f"Hold {title(view)}",
            [
                f"{_whose(view)} stays a draft: no finalize numbers or emails it until it is "
                "released, nor any draft that replaces it.",
                f"The hold's reason: {reason}",
            ],
            "Hold",
        )
    settings = app_settings(request)
    change = await run_in_threadpool(hold, settings, ref, reason, actor=user.principal.actor)
    return redirect(
        request, invoice_path(str(change.invoice_id)), done=f"Draft {change.invoice_id} held"
    )


@router.post("/invoices/{ref}/release")
async def release_invoice(request: Request, user: User, ref: str) -> Response:
    form = await posted(request, user, Role.APPROVER)
    reason = form.text("reason", "Reason", required=False) or None
    if not form.confirmed:
        view = await _view(request, ref)
        _only(view, (InvoiceStatus.DRAFT,), "only drafts are held and released")
        return _ask(
            request,
            user,
            form,
            view,
            f"Release {title(view)}",
            [
                f"The hold on {_whose(view)} ends (it stays on record); the next finalize of "
                f"{view.detail.invoice.period} numbers and emails it.",
            ],
            "Release",
        )
    settings = app_settings(request)
    change = await run_in_threadpool(release, settings, ref, reason, actor=user.principal.actor)
    return redirect(
        request, invoice_path(str(change.invoice_id)), done=f"Draft {change.invoice_id} released"
    )


@router.post("/invoices/{ref}/adjust")
async def adjust_invoice(request: Request, user: User, ref: str) -> Response:
    form = await posted(request, user, Role.APPROVER)
    meter = form.text("meter", "Meter", required=False) or None
    description = form.text("description", "Description", required=False) or None
    if meter is None and description is None:
        raise FieldError("Meter: choose one, or write a description for a free-text line")
    amount = amount_field(form, "amount", "Amount")
    assert amount is not None
    reason = form.text("reason", "Reason")
    if not form.confirmed:
        view = await _view(request, ref)
        _only(view, (InvoiceStatus.DRAFT,), "only drafts are adjusted; credit an issued invoice")
        invoice = view.detail.invoice
        what = f"on meter {meter}" if meter else f"as a line “{description}”"
        return _ask(
            request,
            user,
            form,
            view,
            f"Adjust {title(view)}",
            [
                f"{_whose(view)} gets an adjustment of "
                f"{_money(request, amount, invoice.currency)} {what}.",
                f"Its total ({_money(request, invoice.total, invoice.currency)} now) is priced "
                "again with its discount and minimum; its PDF and CSV and the period's reports "
                "are written again.",
                f"The reason: {reason}",
            ],
            "Adjust",
        )
    result = await run_in_threadpool(
        lambda: adjust(
            app_settings(request),
            ref,
            meter,
            amount,
            reason,
            description,
            created_by=user.principal.actor,
        )
    )
    total = result.total
    now = "" if total is None else f"; total {_money(request, total, result.currency)}"
    return redirect(
        request,
        invoice_path(str(result.draft_id or ref)),
        done=f"Adjustment {result.adjustment_id} added{now}",
    )


@router.post("/adjustments/{adjustment_id}/cancel")
async def cancel_adjustment(request: Request, user: User, adjustment_id: int) -> Response:
    form = await posted(request, user, Role.APPROVER)
    ref = form.text("invoice", "Invoice")
    reason = form.text("reason", "Reason")
    if not form.confirmed:
        view = await _view(request, ref)
        found = next((a for a in view.detail.adjustments if a.id == adjustment_id), None)
        if found is None:
            raise FieldError(f"Adjustment: {title(view)} has no adjustment {adjustment_id}")
        what = found.meter or found.description
        return _ask(
            request,
            user,
            form,
            view,
            f"Cancel adjustment {adjustment_id}",
            [
                f"Adjustment {adjustment_id} ({_money(request, found.amount, found.currency)} "
                f"on {what}: {found.reason}) is withdrawn; it stays on record as cancelled.",
                f"{_whose(view)} is priced again and its PDF and CSV are written again.",
            ],
            "Cancel adjustment",
        )
    settings = app_settings(request)
    result = await run_in_threadpool(
        lambda: cancel(settings, adjustment_id, reason, cancelled_by=user.principal.actor)
    )
    return redirect(
        request,
        invoice_path(str(result.draft_id) if result.draft_id is not None else ref),
        done=f"Adjustment {adjustment_id} cancelled",
    )


@router.post("/invoices/{ref}/void")
async def void_invoice(request: Request, user: User, ref: str, after: BackgroundTasks) -> Response:
    form = await posted(request, user, Role.ADMIN)
    reason = form.text("reason", "Reason")
    if not form.confirmed:
        view = await _view(request, ref)
        _only(view, ISSUED, "only finalized or sent invoices are voided")
        period = view.detail.invoice.period
        return _ask(
            request,
            user,
            form,
            view,
            f"Void {title(view)}",
            [
                f"{_whose(view)} becomes void; the next close of {period} issues a replacement.",
                "Its PDF and CSV are kept, marked VOID; each contact it was emailed to gets a "
                "void notice.",
                f"The reason: {reason}",
            ],
            "Void",
            danger=True,
        )
    settings = app_settings(request)
    voided = await run_in_threadpool(
        lambda: void(settings, ref, reason, actor=user.principal.actor)
    )
    after.add_task(deliver_webhooks, settings)
    number = voided.number or ref
    return redirect(request, invoice_path(number), done=f"{number} voided: {reason}")


def _settlement(form: Posted) -> CreditSettlement:
    text = form.text("settlement", "Settlement", required=False) or CreditSettlement.CREDIT.value
    try:
        return CreditSettlement(text)
    except ValueError:
        raise FieldError("Settlement: credit or refund") from None


@router.post("/invoices/{ref}/credit-notes")
async def credit_invoice(
    request: Request, user: User, ref: str, after: BackgroundTasks
) -> Response:
    form = await posted(request, user, Role.APPROVER)
    asked = amount_field(form, "amount", "Amount", required=False)
    whole = form.text("rest", "Rest", required=False) == "yes"
    if asked is not None and whole:
        raise FieldError("Amount: give an amount or tick “all not yet credited”, not both")
    if asked is None and not whole:
        raise FieldError("Amount: fill it in, or tick “all not yet credited”")
    reason = form.text("reason", "Reason")
    settlement = _settlement(form)
    view = await _view(request, ref)
    _only(view, ISSUED, "only finalized or sent invoices are credited")
    invoice = view.detail.invoice
    amount = not_credited(view) if asked is None else asked
    if not form.confirmed:
        settled = (
            f"{invoice.org_name}'s {invoice.currency} credit balance grows by it: later invoices "
            "draw on it."
            if settlement == CreditSettlement.CREDIT
            else "It is settled as a refund paid outside the billing system (no credit balance)."
        )
        return _ask(
            request,
            user,
            form,
            view,
            f"Credit {title(view)}",
            [
                f"A credit note of {_money(request, amount, invoice.currency)} is issued against "
                f"{_whose(view)} ({_money(request, not_credited(view), invoice.currency)} of its "
                f"{_money(request, invoice.total, invoice.currency)} not yet credited).",
                settled,
                "Its PDF and CSV are written to the period's folder and emailed to the org's "
                "contacts.",
                f"The reason: {reason}",
            ],
            "Create credit note",
        )
    settings = app_settings(request)
    wanted = CreditRequest(reason=reason, amount=amount, settlement=settlement)
    created = await run_in_threadpool(
        lambda: create_credit_note(settings, ref, wanted, actor=user.principal.actor)
    )
    after.add_task(deliver_webhooks, settings)
    note = created.document
    return redirect(
        request,
        invoice_path(reference(view)),
        done=f"{note.number} issued: {_money(request, note.total, note.currency)} "
        f"({note.settlement})",
    )


@router.post("/invoices/{ref}/resend")
async def resend_invoice(
    request: Request, user: User, ref: str, after: BackgroundTasks
) -> Response:
    form = await posted(request, user, Role.APPROVER)
    to = form.text("to", "To")
    if not form.confirmed:
        view = await _view(request, ref)
        _only(view, ISSUED, "only finalized or sent invoices are emailed")
        return _ask(
            request,
            user,
            form,
            view,
            f"Resend {title(view)}",
            [f"The statement of {_whose(view)} is emailed again to {to}, with its PDF and CSV."],
            "Resend",
        )
    settings = app_settings(request)
    report = await run_in_threadpool(lambda: resend(settings, ref, to, actor=user.principal.actor))
    after.add_task(deliver_webhooks, settings)
    return redirect(request, invoice_path(ref), done=f"{ref} to {to}: {report.describe()}")
