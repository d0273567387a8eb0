"""Statement emails: messages built from templates, and the file, console and none backends."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Protocol

from jinja2 import Environment

from billing.domain import Statement
from billing.statements import formatting
from billing.statements.files import safe_stem, write_atomically


@dataclass(frozen=True)
class StatementDocuments:
    """The rendered files of one statement."""

    statement: Statement
    pdf: bytes
    csv: bytes
    stem: str


def _single_line(text: str) -> str:
    """Header-safe text: control characters (CR, LF, ...) become spaces."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def build_statement_email(
    documents: StatementDocuments,
    environment: Environment,
    sender: str,
    issuer_name: str,
    locale: str,
) -> EmailMessage:
    """One message to the org's contacts with its PDF and CSV attached."""
    statement = documents.statement
    context = {
        "s": statement,
        "issuer_name": issuer_name,
        "total": formatting.money(statement.total, statement.currency, locale),
    }
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(statement.emails)
    message["Subject"] = _single_line(environment.get_template("email/subject.txt").render(context))
    message["Date"] = formatdate(statement.issued_at.timestamp(), usegmt=True)
    digest = hashlib.sha256(f"{statement.invoice_number}:{statement.org_id}".encode()).hexdigest()[
        :24
    ]
    message["Message-ID"] = f"<statement-{digest}@billing.mka1>"
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


def email_backend(name: str, output_folder: Path) -> EmailBackend:
    if name == "file":
        return FileEmailBackend(output_folder / "emails")
    if name == "console":
        return ConsoleEmailBackend()
    return NullEmailBackend()
