"""Statement emails, void notices and credit notes: messages from templates, SMTP envelope.

Headers that carry addresses (From, To, Reply-To) are built from `email.headerregistry.Address`
objects whose addresses passed `plain_address_problem`, never by joining strings of org data;
the Subject is one line with no RFC 2047 encoded words. Bcc is never a header: finance's copy
exists only in the envelope (`envelope_recipients`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, getaddresses

from jinja2 import Environment

from billing.addresses import parse_mailbox, plain_address_problem
from billing.credit_notes import CreditNoteDocument
from billing.domain import Statement
from billing.errors import ConfigError
from billing.statements import formatting
from billing.statements.credit_notes import CreditNoteFiles
from billing.statements.files import safe_stem


@dataclass(frozen=True)
class StatementDocuments:
    """The rendered files of one statement."""

    statement: Statement
    pdf: bytes
    csv: bytes
    stem: str


def _single_line(text: str) -> str:
    """Header-safe text: control characters (CR, LF, ...) become spaces, and "=?" (the start
    of an RFC 2047 encoded word, which a reader would decode) is broken up."""
    line = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return line.replace("=?", "= ?")


def _mailbox(text: str, setting: str) -> Address:
    try:
        return parse_mailbox(text)
    except ValueError as error:
        raise ConfigError(
            f"setting {setting}: {text!r} is not an address like billing@example.com or "
            f"Billing <billing@example.com>: {error}"
        ) from None


def _contact_addresses(statement: Statement) -> tuple[Address, ...]:
    """The org's contacts as Address objects; a tampered or malformed entry stops the email."""
    if not statement.emails:
        raise ConfigError(f"org {statement.org_id}: no contact address to send the statement to")
    for address in statement.emails:
        problem = plain_address_problem(address)
        if problem is not None:
            raise ConfigError(
                f"org {statement.org_id}: contact address {address!r} is not a plain email "
                f"address ({problem}); fix it in the org directory (BILLING_ORGS) and close again"
            )
    return tuple(Address(addr_spec=address) for address in dict.fromkeys(statement.emails))


def _message_id(kind: str, key: str) -> str:
    """A Message-ID that is the same for every send of one document (duplicates can be spotted)."""
    return f"<{kind}-{hashlib.sha256(key.encode()).hexdigest()[:24]}@billing.mka1>"


def statement_message_id(statement: Statement) -> str:
    """The Message-ID of every send of one invoice's statement."""
    return _message_id("statement", f"{statement.invoice_number}:{statement.org_id}")


@dataclass(frozen=True)
class Letterhead:
    """Who a message is from (BILLING_EMAIL_FROM, BILLING_EMAIL_REPLY_TO), the issuer it names,
    the locale its amounts and dates are written in, and how to pay (BILLING_PAYMENT_*,
    BILLING_PAYMENT_TERMS_DAYS)."""

    sender: str
    issuer_name: str
    locale: str
    reply_to: str | None = None
    payment: formatting.PaymentInstructions = field(default_factory=formatting.PaymentInstructions)
    payment_terms_days: int = 30

    def context(self, name: str, document: object, total: Decimal, currency: str) -> Context:
        """What a template sees: the document under `name`, the issuer and the written total."""
        written = formatting.money(total, currency, self.locale)
        return {name: document, "issuer_name": self.issuer_name, "total": written}

    def day(self, moment: datetime) -> str:
        return formatting.day(moment.date(), self.locale)

    def month(self, moment: datetime) -> str:
        """October 2026 (en_US), Oktober 2026 (de_DE)."""
        return formatting.month(moment.date(), self.locale)

    def money(self, amount: Decimal, currency: str) -> str:
        return formatting.money(amount, currency, self.locale)

    def payment_context(self, reference: str, total: Decimal) -> dict[str, object] | None:
        """How to pay an invoice of `total`, as the email prints it; None when nothing is due."""
        if total <= 0:
            return None
        return {
            "bank_lines": self.payment.bank_lines,
            "link": self.payment.link_for(reference),
            "reference": reference,
        }


Context = dict[str, object]


def _headed_message(
    environment: Environment,
    letterhead: Letterhead,
    context: Context,
    to: tuple[Address, ...],
    templates: str,
) -> EmailMessage:
    """A message from the letterhead to `to` with a one-line Subject from the `templates`
    subject.txt; the caller sets Date and Message-ID. A malformed sender is a ConfigError."""
    message = EmailMessage()
    message["From"] = _mailbox(letterhead.sender, "BILLING_EMAIL_FROM")
    message["To"] = to
    if letterhead.reply_to:
        message["Reply-To"] = _mailbox(letterhead.reply_to, "BILLING_EMAIL_REPLY_TO")
    subject = environment.get_template(f"{templates}subject.txt").render(context)
    message["Subject"] = _single_line(subject)
    return message


def statement_context(statement: Statement, letterhead: Letterhead) -> Context:
    """What the statement email's templates see: `s`, `total` (the amount due, written),
    `due` (the due date, written), `month` (the billing period, written), `payment` (None
    when nothing is due), `attachment` (the files' name without extension), `issuer_name`."""
    due_at = statement.due_at or statement.issued_at + timedelta(days=letterhead.payment_terms_days)
    context = letterhead.context("s", statement, statement.total, statement.currency)
    context.update(
        due=letterhead.day(due_at),
        month=letterhead.month(statement.period_start),
        payment=letterhead.payment_context(statement.invoice_number, statement.total),
        attachment=safe_stem(statement.invoice_number),
    )
    return context


def build_statement_email(
    documents: StatementDocuments,
    environment: Environment,
    sender: str,
    issuer_name: str,
    locale: str,
    *,
    reply_to: str | None = None,
    payment: formatting.PaymentInstructions | None = None,
    payment_terms_days: int = 30,
) -> EmailMessage:
    """One message to the org's contacts with its PDF and CSV attached, named after the
    invoice number.

    `sender` is BILLING_EMAIL_FROM and `reply_to` BILLING_EMAIL_REPLY_TO; a malformed one, or
    a contact address that is not plain, is a ConfigError (nothing is built). `payment` (the
    BILLING_PAYMENT_* settings) is printed in the body with the payment reference; the due
    date is the statement's, else its issue date plus `payment_terms_days`.
    """
    statement = documents.statement
    letterhead = Letterhead(
        sender,
        issuer_name,
        locale,
        reply_to,
        payment or formatting.PaymentInstructions(),
        payment_terms_days,
    )
    context = statement_context(statement, letterhead)
    to = _contact_addresses(statement)
    message = _headed_message(environment, letterhead, context, to, "email/")
    message["Date"] = formatdate(statement.issued_at.timestamp(), usegmt=True)
    message["Message-ID"] = statement_message_id(statement)
    message.set_content(environment.get_template("email/statement.txt").render(context))
    message.add_alternative(
        environment.get_template("email/statement.html").render(context), subtype="html"
    )
    # Named after the invoice number: a replacement's files never take the original's names.
    attached = safe_stem(statement.invoice_number)
    message.add_attachment(
        documents.pdf, maintype="application", subtype="pdf", filename=f"{attached}.pdf"
    )
    message.add_attachment(
        documents.csv, maintype="text", subtype="csv", filename=f"{attached}.csv"
    )
    return message


@dataclass(frozen=True)
class VoidNotice:
    """What the notice that an invoice is void (cancelled) tells its contacts."""

    invoice_number: str
    org_id: str
    org_name: str
    period: str
    currency: str
    total: Decimal
    voided_at: datetime
    recipients: tuple[str, ...]
    replaced_by: str = ""


def void_notice_message_id(notice: VoidNotice) -> str:
    """The same for every send of one invoice's void notice."""
    return _message_id("void-notice", f"void:{notice.invoice_number}:{notice.org_id}")


def build_void_notice(
    notice: VoidNotice, environment: Environment, letterhead: Letterhead
) -> EmailMessage:
    """The message telling an invoice's contacts that it is cancelled (no attachments)."""
    context = letterhead.context("n", notice, notice.total, notice.currency)
    context["month"] = _month_of(notice.period, letterhead)
    to = tuple(Address(addr_spec=address) for address in notice.recipients)
    message = _headed_message(environment, letterhead, context, to, "email/void_")
    message["Date"] = formatdate(notice.voided_at.timestamp(), usegmt=True)
    message["Message-ID"] = void_notice_message_id(notice)
    message.set_content(environment.get_template("email/void_notice.txt").render(context))
    return message


def credit_note_message_id(note: CreditNoteDocument, recipient: str) -> str:
    """The same for every send of one credit note to one contact (a retry is recognisable)."""
    return _message_id("credit-note", f"{note.number}:{note.org_id}:{recipient}")


def build_credit_note_email(
    files: CreditNoteFiles, recipient: str, environment: Environment, letterhead: Letterhead
) -> EmailMessage:
    """The message of one credit note to one of its contacts, its PDF and CSV attached and
    named after the credit-note number; a contact that is not a plain address stops it."""
    note = files.note
    problem = plain_address_problem(recipient)
    if problem is not None:
        raise ConfigError(
            f"org {note.org_id}: contact address {recipient!r} is not a plain email address "
            f"({problem}); credit note {note.number} stays pending: fix the address and send again"
        )
    context = letterhead.context("n", note, note.total, note.currency)
    context.update(
        month=_month_of(note.period, letterhead),
        net=letterhead.money(note.net_total, note.currency),
        taxes=[
            (line.description, letterhead.money(line.amount, note.currency))
            for line in note.tax_lines
        ],
        attachment=safe_stem(note.number),
    )
    to = (Address(addr_spec=recipient),)
    message = _headed_message(environment, letterhead, context, to, "email/credit_note_")
    message["Date"] = formatdate(note.created_at.timestamp(), usegmt=True)
    message["Message-ID"] = credit_note_message_id(note, recipient)
    message.set_content(environment.get_template("email/credit_note.txt").render(context))
    attached = safe_stem(note.number)
    message.add_attachment(
        files.pdf, maintype="application", subtype="pdf", filename=f"{attached}.pdf"
    )
    message.add_attachment(files.csv, maintype="text", subtype="csv", filename=f"{attached}.csv")
    return message


def _month_of(period: str, letterhead: Letterhead) -> str:
    """A YYYY-MM period written for people (October 2026); as it is when it is not one."""
    try:
        return letterhead.month(datetime.strptime(period, "%Y-%m"))  # noqa: DTZ007 - a date
    except ValueError:
        return period


def envelope_recipients(message: EmailMessage, bcc: Sequence[str] = ()) -> tuple[str, ...]:
    """Who the message goes to over SMTP: its To and Cc addresses, then `bcc`, each once.

    `bcc` (BILLING_EMAIL_BCC, finance's copy) is never written into the message.
    """
    listed: list[str] = []
    for name in ("To", "Cc"):
        for header in message.get_all(name) or []:
            addresses = getattr(header, "addresses", None)
            if addresses is None:
                listed.extend(address for _, address in getaddresses([str(header)]))
            else:
                listed.extend(address.addr_spec for address in addresses)
    recipients = tuple(dict.fromkeys([*listed, *bcc]))
    for address in recipients:
        problem = plain_address_problem(address)
        if problem is not None:
            raise ConfigError(f"recipient {address!r} is not a plain email address: {problem}")
    return recipients


@dataclass(frozen=True)
class BudgetAlertNotice:
    """What a budget alert tells a scope's contacts: spend has reached a threshold."""

    period: str
    scope: str  # "org", "cost centre", "API key"
    scope_id: str
    threshold: str  # percent, e.g. "80"
    currency: str
    budget: Decimal
    spend: Decimal
    forecast: Decimal
    fired_at: datetime
    recipients: tuple[str, ...]


def build_budget_alert(
    notice: BudgetAlertNotice, environment: Environment, letterhead: Letterhead
) -> EmailMessage:
    """The message telling a scope's contacts that its month-to-date spend reached a threshold
    of its budget (no attachments; the same Message-ID on every send)."""
    context = letterhead.context("a", notice, notice.spend, notice.currency)
    context["month"] = _month_of(notice.period, letterhead)
    context["budget"] = letterhead.money(notice.budget, notice.currency)
    context["forecast"] = letterhead.money(notice.forecast, notice.currency)
    to = tuple(Address(addr_spec=address) for address in notice.recipients)
    message = _headed_message(environment, letterhead, context, to, "email/budget_")
    message["Date"] = formatdate(notice.fired_at.timestamp(), usegmt=True)
    message["Message-ID"] = _message_id(
        "budget-alert",
        f"budget:{notice.period}:{notice.scope}:{notice.scope_id}:{notice.threshold}",
    )
    message.set_content(environment.get_template("email/budget_alert.txt").render(context))
    return message
