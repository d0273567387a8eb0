"""Statement emails: messages from templates, their SMTP envelope, and the email backends.

Headers that carry addresses (From, To, Reply-To) are built from `email.headerregistry.Address`
objects whose addresses passed `plain_address_problem`, never by joining strings of org data;
the Subject is one line with no RFC 2047 encoded words. Bcc is never a header: finance's copy
exists only in the envelope (`envelope_recipients`).
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, getaddresses
from pathlib import Path
from types import TracebackType
from typing import Protocol

from jinja2 import Environment

from billing.addresses import parse_mailbox, parse_smtp_url, plain_address_problem
from billing.config import Settings, get_settings
from billing.domain import Statement
from billing.email.smtp import DeliveryResult, SmtpSender
from billing.errors import ConfigError, DeliveryError
from billing.statements import formatting
from billing.statements.files import safe_stem, write_atomically

log = logging.getLogger(__name__)


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


def statement_message_id(statement: Statement) -> str:
    """A Message-ID that is the same for every send of one invoice (duplicates can be spotted)."""
    key = f"{statement.invoice_number}:{statement.org_id}"
    return f"<statement-{hashlib.sha256(key.encode()).hexdigest()[:24]}@billing.mka1>"


def build_statement_email(
    documents: StatementDocuments,
    environment: Environment,
    sender: str,
    issuer_name: str,
    locale: str,
    *,
    reply_to: str | None = None,
) -> EmailMessage:
    """One message to the org's contacts with its PDF and CSV attached.

    `sender` is BILLING_EMAIL_FROM and `reply_to` BILLING_EMAIL_REPLY_TO; a malformed one, or
    a contact address that is not plain, is a ConfigError (nothing is built).
    """
    statement = documents.statement
    context = {
        "s": statement,
        "issuer_name": issuer_name,
        "total": formatting.money(statement.total, statement.currency, locale),
    }
    message = EmailMessage()
    message["From"] = _mailbox(sender, "BILLING_EMAIL_FROM")
    message["To"] = _contact_addresses(statement)
    if reply_to:
        message["Reply-To"] = _mailbox(reply_to, "BILLING_EMAIL_REPLY_TO")
    message["Subject"] = _single_line(environment.get_template("email/subject.txt").render(context))
    message["Date"] = formatdate(statement.issued_at.timestamp(), usegmt=True)
    message["Message-ID"] = statement_message_id(statement)
    message.set_content(environment.get_template("email/statement.txt").render(context))
    message.add_alternative(
        environment.get_template("email/statement.html").render(context), subtype="html"
    )
    message.add_attachment(
        documents.pdf, maintype="application", subtype="pdf", filename=f"{documents.stem}.pdf"
    )
    message.add_attachment(
        documents.csv, maintype="text", subtype="csv", filename=f"{documents.stem}.csv"
    )
    return message


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


class EmailBackend(Protocol):
    """Hands a message to whatever delivers it."""

    def send(self, message: EmailMessage, org_id: str) -> str: ...


class FileEmailBackend:
    """Writes each message as an .eml file, for the embedded default and for review."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def send(self, message: EmailMessage, org_id: str) -> str:
        self._folder.mkdir(parents=True, exist_ok=True)
        path = write_atomically(self._folder, f"{safe_stem(org_id)}.eml", message.as_bytes())
        return str(path)


class ConsoleEmailBackend:
    """Prints the headers of each message (attachments left out)."""

    def send(self, message: EmailMessage, org_id: str) -> str:
        sys.stdout.write(
            f"email to {message['To']}: {message['Subject']} "
            f"({len(list(message.iter_attachments()))} attachments)\n"
        )
        return "console"


class NullEmailBackend:
    """Sends nothing (for runs that must not mail anyone)."""

    def send(self, message: EmailMessage, org_id: str) -> str:
        return "none"


class SmtpEmailBackend:
    """Delivers each message over SMTP (with finance in Bcc) and raises unless it was sent.

    "retry" results are tried `attempts` times; then, like "failed" and "unknown", they raise
    a DeliveryError. The connection is reused across messages: close() it (or use `with`).
    """

    def __init__(
        self,
        sender: SmtpSender,
        *,
        bcc: Sequence[str] = (),
        attempts: int = 3,
        backoff: Sequence[float] | None = None,  # float-ok: seconds
    ) -> None:
        self._sender = sender
        self._bcc = tuple(bcc)
        self._attempts = attempts
        self._backoff = backoff
        self.last_result: DeliveryResult | None = None

    def __enter__(self) -> SmtpEmailBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._sender.close()

    def send(self, message: EmailMessage, org_id: str) -> str:
        recipients = envelope_recipients(message, self._bcc)
        result = self._sender.deliver_with_retries(
            message, recipients, self._attempts, self._backoff
        )
        self.last_result = result
        message_id = message["Message-ID"]
        if result.status == "sent":
            if result.refused:
                log.warning("org %s: email %s: %s", org_id, message_id, result.detail)
            return f"smtp {result.reply}"
        if result.status == "unknown":
            text = f"{result.detail}"
        elif result.status == "retry":
            text = f"not handed over after {result.attempts} attempts, try again later: "
            text += f"{result.detail}" + (f" ({result.reply})" if result.reply else "")
        else:
            text = f"refused: {result.reply or result.detail}"
            if result.reply and result.detail:
                text += f" ({result.detail})"
        raise DeliveryError(
            f"org {org_id}: statement email {message_id} {result.status}: {text}",
            status=result.status,
            reply=result.reply,
        )


def smtp_sender(
    settings: Settings,
    *,
    ssl_context: ssl.SSLContext | None = None,
    local_hostname: str | None = None,
    clock: Callable[[], float] = time.monotonic,  # float-ok: seconds
    sleep: Callable[[float], None] = time.sleep,  # float-ok: seconds
) -> SmtpSender:
    """An SmtpSender for BILLING_SMTP_URL with the timeout, rate and per-connection settings.

    The keyword arguments are for tests and special set-ups (a private CA, a fake clock).
    """
    if settings.smtp_url is None:
        raise ConfigError("setting BILLING_SMTP_URL: not set; SMTP delivery needs a server")
    return SmtpSender(
        parse_smtp_url(settings.smtp_url.get_secret_value(), "BILLING_SMTP_URL"),
        timeout=settings.smtp_timeout_seconds,
        rate_per_second=settings.smtp_rate_per_second,
        max_per_connection=settings.smtp_max_per_connection,
        ssl_context=ssl_context,
        local_hostname=local_hostname,
        clock=clock,
        sleep=sleep,
    )


def smtp_backend(settings: Settings, *, attempts: int = 3) -> SmtpEmailBackend:
    """The smtp EmailBackend of the settings, with BILLING_EMAIL_BCC in every envelope."""
    return SmtpEmailBackend(smtp_sender(settings), bcc=settings.email_bcc, attempts=attempts)


def email_backend(
    name: str, output_folder: Path, *, settings: Settings | None = None
) -> EmailBackend:
    """The backend called `name` (BILLING_EMAIL_BACKEND).

    "smtp" uses `settings` (the process settings when not given).
    """
    if name == "file":
        return FileEmailBackend(output_folder / "emails")
    if name == "console":
        return ConsoleEmailBackend()
    if name == "smtp":
        return smtp_backend(settings if settings is not None else get_settings())
    return NullEmailBackend()
