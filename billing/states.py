"""The ledger's state machines, one StrEnum each: the only home of these words.

    invoice     draft ─▶ finalized ─▶ sent          (finalized or sent ─▶ void)
    run         running ─▶ succeeded | failed | interrupted
    run stage   fetching ─▶ rating ─▶ publishing ─▶ reporting      (a distributed run)
    unit        queued ─▶ running ─▶ done | failed | parked        (one step of a distributed run)
    delivery    pending ─▶ sending ─▶ sent | failed | unknown      (one email of the outbox)
    credit      grant ─▶ consumption | expiry | reversal             (an org's credit balance)
    webhook     pending ─▶ delivered | failed (retried with backoff until it gives up)

The values are what the database stores; a StrEnum compares equal to its value, so rows read
back as plain strings match these members.
"""

from __future__ import annotations

from enum import StrEnum


class InvoiceStatus(StrEnum):
    """An invoice's place in its lifecycle; finalized and sent invoices never change."""

    DRAFT = "draft"
    FINALIZED = "finalized"
    SENT = "sent"
    VOID = "void"


class RunStatus(StrEnum):
    """How a billing run (close, rerate, finalize) stands or ended."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class RunStage(StrEnum):
    """Where a distributed run is: the stage its units belong to now."""

    FETCHING = "fetching"
    RATING = "rating"
    PUBLISHING = "publishing"
    REPORTING = "reporting"


class UnitStep(StrEnum):
    """What one unit of a distributed run does (the run_task.stage column)."""

    FETCH = "fetch"
    RATE = "rate"
    RENDER = "render"
    EMAIL = "email"
    REPORT = "report"


class UnitStatus(StrEnum):
    """A unit of a distributed run: queued, being worked on, or settled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    PARKED = "parked"


class DeliveryStatus(StrEnum):
    """One email delivery of the outbox, to one contact."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"


class DeliveryKind(StrEnum):
    """Why a delivery exists: the statement queued at finalization, a recorded resend, or the
    notice that an invoice the contact was sent is void (cancelled)."""

    STATEMENT = "statement"
    RESEND = "resend"
    VOID_NOTICE = "void_notice"
    CREDIT_NOTE = "credit_note"


class ChargeClass(StrEnum):
    """What a charge (and its chargeback lines) is: priced usage, a correction of an earlier
    invoice, a reviewer's adjustment of a draft, the tax on the net of those (one charge per
    rate), or the org's credit balance applied to (or a negative total carried into) it."""

    USAGE = "usage"
    CORRECTION = "correction"
    ADJUSTMENT = "adjustment"
    CREDIT = "credit"
    TAX = "tax"


class TaxTreatment(StrEnum):
    """How an invoice is taxed: at a rate (possibly 0%, zero-rated), reverse charge (the
    customer accounts for the tax) or exempt (with a reason)."""

    STANDARD = "standard"
    ZERO_RATED = "zero_rated"
    REVERSE_CHARGE = "reverse_charge"
    EXEMPT = "exempt"


class CreditEntryKind(StrEnum):
    """One entry of an org's credit-balance ledger: money in (a grant: prepaid, a credit note,
    a negative total carried over), money out (used by an invoice, expired), or a reversal of
    a use when the invoice that used it is voided."""

    GRANT = "grant"
    CONSUMPTION = "consumption"
    EXPIRY = "expiry"
    REVERSAL = "reversal"


class CreditSettlement(StrEnum):
    """How a credit note is settled: money paid back, or a credit balance for later invoices."""

    REFUND = "refund"
    CREDIT = "credit"


class Role(StrEnum):
    """What a console user or an API token may do: read; also review and credit; also void
    and manage users and tokens. Each role can do all a lower one can."""

    VIEWER = "viewer"
    APPROVER = "approver"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class WebhookEventType(StrEnum):
    """The events a webhook endpoint can ask for."""

    INVOICE_FINALIZED = "invoice.finalized"
    INVOICE_SENT = "invoice.sent"
    INVOICE_VOIDED = "invoice.voided"
    CREDIT_NOTE_CREATED = "credit_note.created"
    RUN_SUCCEEDED = "run.succeeded"
    RUN_FAILED = "run.failed"
    BUDGET_THRESHOLD_REACHED = "budget.threshold_reached"


class WebhookDeliveryStatus(StrEnum):
    """One event's delivery to one endpoint."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class BudgetScope(StrEnum):
    """What a budget (BILLING_BUDGETS) watches: an org, a cost centre or an API key."""

    ORG = "org"
    COST_CENTRE = "cost_centre"
    API_KEY = "api_key"


class AlertEmailStatus(StrEnum):
    """A budget alert's email: waiting to be sent, sent, given up on, or nobody to tell."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    NO_CONTACT = "no contact"
