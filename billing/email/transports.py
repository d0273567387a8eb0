"""The one way a statement email leaves: the Transport interface, its kinds and their factory.

BILLING_EMAIL_BACKEND picks the transport: `file` writes each message as an .eml file into the
period's emails/ folder, `console` prints its headers, `none` sends nothing, and `smtp` hands
it to the mail server (`billing.email.smtp.SmtpTransport`). Every transport answers with a
`DeliveryResult`; for the first three, handing over is delivery, so the status is "sent" and
the reply says where the message went (the file's path, "console" or "none").
"""

from __future__ import annotations

import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from billing.config import Settings
from billing.email.smtp import DeliveryResult, smtp_transport
from billing.statements.files import safe_stem, write_atomically


class Transport(Protocol):
    """Hands one message over and says how it went; close() ends what stays open."""

    def deliver(self, message: EmailMessage, name: str) -> DeliveryResult:
        """Hand `message` over; `name` (e.g. the invoice number) names its file, if any."""
        ...

    def close(self) -> None: ...


class _Local:
    """A transport that keeps nothing open between messages."""

    def close(self) -> None:
        return None


class FileTransport(_Local):
    """Writes each message as `<name>.eml` (named after its invoice number, so a replacement
    never overwrites the original's), for the embedded default and for review."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def deliver(self, message: EmailMessage, name: str) -> DeliveryResult:
        self._folder.mkdir(parents=True, exist_ok=True)
        path = write_atomically(self._folder, f"{safe_stem(name)}.eml", message.as_bytes())
        return DeliveryResult("sent", reply=str(path))


class ConsoleTransport(_Local):
    """Prints the headers of each message (attachments left out)."""

    def deliver(self, message: EmailMessage, name: str) -> DeliveryResult:
        sys.stdout.write(
            f"email to {message['To']}: {message['Subject']} "
            f"({len(list(message.iter_attachments()))} attachments)\n"
        )
        return DeliveryResult("sent", reply="console")


class NullTransport(_Local):
    """Sends nothing (for runs that must not mail anyone)."""

    def deliver(self, message: EmailMessage, name: str) -> DeliveryResult:
        return DeliveryResult("sent", reply="none")


def open_transport(settings: Settings, folder: Path) -> Transport:
    """The transport of BILLING_EMAIL_BACKEND; `folder` is the period's output folder.

    Close it when done: the smtp transport keeps one connection open for the whole batch.
    """
    if settings.email_backend == "smtp":
        return smtp_transport(settings)
    if settings.email_backend == "file":
        return FileTransport(folder / "emails")
    if settings.email_backend == "console":
        return ConsoleTransport()
    return NullTransport()
