"""Sending the outbox: each pending statement, resend, void notice or credit note once, every
result recorded.

The period's lock is held by the caller, so a delivery still `sending` when this starts belongs
to a sender that died: it becomes `unknown` and is never resent by itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from functools import partial
from pathlib import Path

from jinja2 import Environment
from sqlalchemy import Engine
from sqlmodel import Session

from billing.config import Settings
from billing.credit_notes import CreditNoteDocument
from billing.db.credit_notes import credit_note_documents
from billing.db.locks import write_transaction
from billing.db.outbox import (
    Batch,
    claim,
    give_up_on_interrupted,
    pending_batches,
    settle,
    void_notice_facts,
)
from billing.db.period_reads import iter_statements
from billing.domain import Statement
from billing.email.messages import (
    Letterhead,
    StatementDocuments,
    VoidNotice,
    build_credit_note_email,
    build_statement_email,
    build_void_notice,
)
from billing.email.transports import Transport, open_transport
from billing.periods import BillingPeriod
from billing.statements.credit_notes import CreditNoteFiles
from billing.statements.pdf import payment_instructions
from billing.states import DeliveryKind, InvoiceStatus
from billing.wording import plural

# Sends of one delivery before it is marked failed (each send retries 4xx itself a few times).
MAX_SENDS = 5


@dataclass
class SendReport:
    """What one pass over the outbox did."""

    messages: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    cut_off: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return self.outcomes["sent"]

    def describe(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.outcomes.items()))
        return f"{plural(self.messages, 'message')} ({counts})"


class OutboxSender:
    """Sends a period's pending deliveries over one transport, statement by statement.

    Entering it turns deliveries left `sending` by a dead sender into `unknown` (the caller
    holds the period's lock) and reads what is pending.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        period: BillingPeriod,
        environment: Environment,
        folder: Path,
        *,
        delivery_ids: list[int] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._period = period
        self._compose = partial(statement_message, settings, environment)
        self._open_transport = partial(open_transport, settings, folder)
        self._delivery_ids = delivery_ids
        self._now = now
        self._batches: dict[int, list[Batch]] = {}
        self._notices: list[Batch] = []
        self._credit_notes: list[Batch] = []
        self._settings = settings
        self._environment = environment
        self._stack = ExitStack()
        self._transport: Transport | None = None
        self.report = SendReport()

    def __enter__(self) -> OutboxSender:
        with write_transaction(self._engine) as session:
            self.report.cut_off = [
                f"{row.org_id} to {row.recipient}"
                for row in give_up_on_interrupted(
                    session, str(self._period), self._now(), self._delivery_ids
                )
            ]
            for batch in pending_batches(session, str(self._period), self._delivery_ids):
                if batch.kind == DeliveryKind.VOID_NOTICE:
                    self._notices.append(batch)
                elif batch.kind == DeliveryKind.CREDIT_NOTE:
                    self._credit_notes.append(batch)  # sent by send_credit_notes only
                else:
                    self._batches.setdefault(batch.invoice_id, []).append(batch)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    @property
    def waiting(self) -> set[int]:
        """The invoices with deliveries still to send in this pass."""
        return set(self._batches)

    def send_for(self, documents: StatementDocuments) -> None:
        """Send the pending deliveries of one rendered statement (none for drafts)."""
        statement = documents.statement
        if statement.status not in (InvoiceStatus.FINALIZED, InvoiceStatus.SENT):
            return
        for batch in self._batches.pop(statement.invoice_id, []):
            name = statement.invoice_number
            if batch.kind == DeliveryKind.RESEND:
                name = f"{name}-resend-{batch.resend_id}"
            self._send(batch, partial(self._compose, documents), name)

    def send_notices(self) -> None:
        """Send the pending void notices: each tells its contacts that an invoice is cancelled
        (the invoice is void, so there is no statement to render)."""
        notices, self._notices = self._notices, []
        if not notices:
            return
        with Session(self._engine) as session:
            facts = void_notice_facts(session, [batch.invoice_id for batch in notices])
        for batch in notices:
            invoice, replaced_by = facts[batch.invoice_id]
            notice = VoidNotice(
                invoice_number=invoice.number or "",
                org_id=invoice.org_id,
                org_name=invoice.org_name,
                period=invoice.period,
                currency=invoice.currency,
                total=invoice.total,
                voided_at=invoice.voided_at or self._now(),
                recipients=batch.recipients,
                replaced_by=replaced_by,
            )
            self._send(
                batch, partial(self._notice_message, notice), f"{notice.invoice_number}-void"
            )

    def _notice_message(self, notice: VoidNotice, batch: Batch) -> EmailMessage:
        settings = self._settings
        letterhead = letterhead_of(settings)
        recipients = dataclasses.replace(notice, recipients=batch.recipients)
        return build_void_notice(recipients, self._environment, letterhead)

    def send_credit_notes(self, render: Callable[[CreditNoteDocument], CreditNoteFiles]) -> None:
        """Send the pending credit-note emails: one message per contact, the note's PDF and CSV
        attached (`render` makes them, once per note)."""
        batches, self._credit_notes = self._credit_notes, []
        if not batches:
            return
        with Session(self._engine) as session:
            notes = credit_note_documents(session, {b.credit_note_id or 0 for b in batches})
        rendered: dict[int, CreditNoteFiles] = {}
        for batch in batches:
            note = notes[batch.credit_note_id or 0]
            if note.credit_note_id not in rendered:
                rendered[note.credit_note_id] = render(note)
            files = rendered[note.credit_note_id]
            name = f"{note.number}-{batch.recipients[0]}"
            self._send(batch, partial(self._credit_note_message, files), name)

    def _credit_note_message(self, files: CreditNoteFiles, batch: Batch) -> EmailMessage:
        settings = self._settings
        letterhead = letterhead_of(settings)
        return build_credit_note_email(files, batch.recipients[0], self._environment, letterhead)

    def _send(self, batch: Batch, compose: Callable[[Batch], EmailMessage], name: str) -> None:
        """Claim the batch's rows, hand its message over as `name`, record the result."""
        if self._transport is None:
            self._transport = self._stack.enter_context(closing(self._open_transport()))
        message = compose(batch)
        with write_transaction(self._engine) as session:
            claimed = claim(session, batch, str(message["Message-ID"]), self._now())
        if not claimed.delivery_ids:
            return  # another sender has them
        if claimed != batch:
            batch = claimed
            message = compose(batch)
        result = self._transport.deliver(message, name)
        with write_transaction(self._engine) as session:
            settle(
                session,
                batch,
                result.status,
                result.reply,
                result.detail,
                dict(result.refused),
                self._now(),
                MAX_SENDS,
            )
        self.report.messages += 1
        self.report.outcomes[result.status] += 1

    def send_remaining(self, render: Callable[[Statement], StatementDocuments]) -> None:
        """Send what is pending for invoices not passed to `send_for`, rendering them, and the
        void notices."""
        self.send_notices()
        if not self._batches:
            return
        for statement in iter_statements(self._engine, self._period):
            if statement.invoice_id in self._batches:
                self.send_for(render(statement))


def letterhead_of(settings: Settings) -> Letterhead:
    """The sender, issuer, locale, reply-to and payment instructions the settings give."""
    return Letterhead(
        settings.email_from,
        settings.issuer_name,
        settings.locale,
        settings.email_reply_to,
        payment_instructions(settings),
        settings.payment_terms_days,
    )


def statement_message(
    settings: Settings,
    environment: Environment,
    documents: StatementDocuments,
    batch: Batch,
) -> EmailMessage:
    """The message of one batch: addressed to its recipients only; a resend has its own
    Message-ID so it is not mistaken for the original."""
    addressed = dataclasses.replace(documents.statement, emails=batch.recipients)
    message = build_statement_email(
        dataclasses.replace(documents, statement=addressed),
        environment,
        settings.email_from,
        settings.issuer_name,
        settings.locale,
        reply_to=settings.email_reply_to,
        payment=payment_instructions(settings),
        payment_terms_days=settings.payment_terms_days,
    )
    if batch.kind == DeliveryKind.RESEND:
        digest = hashlib.sha256(f"{message['Message-ID']}:{batch.resend_id}".encode()).hexdigest()
        message.replace_header("Message-ID", f"<statement-resend-{digest[:24]}@billing.mka1>")
    return message
