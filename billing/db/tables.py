"""The tables of the ledger (SQLModel); Alembic migrations are generated from this metadata."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from billing.db.types import ExactDecimal, UTCDateTime
from billing.states import DeliveryKind, DeliveryStatus, InvoiceStatus, RunStatus


def _exact() -> Column[Decimal]:
    return Column(ExactDecimal(), nullable=False)


def _upstream_text(*, nullable: bool = False, index: bool = False) -> Column[str]:
    """A column for ids and names from upstream or the directory: any length, stored whole
    (a VARCHAR without a length: unbounded on PostgreSQL since migration 0009, and on SQLite,
    which never enforces one)."""
    return Column(String(), nullable=nullable, index=index)


RUNNING_RUN = text(f"status = '{RunStatus.RUNNING}'")


class BillingRun(SQLModel, table=True):
    """One attempt to close a period: who started it, what it fetched, how it ended.

    At most one run of a period is `running` at a time (a partial unique index).
    """

    __tablename__ = "billing_run"
    __table_args__ = (
        Index(
            "uq_billing_run_period_running",
            "period",
            unique=True,
            postgresql_where=RUNNING_RUN,
            sqlite_where=RUNNING_RUN,
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    period: str = Field(max_length=7, index=True)
    status: str = Field(max_length=16)
    trigger: str = Field(max_length=32)
    started_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    upstream_url: str = Field(max_length=500)
    pages_fetched: int = 0
    usage_results: int = 0
    invoice_count: int = 0
    results_without_memory: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    request_params: str | None = Field(default=None, sa_column=Column(Text))
    usage_checksum: str | None = Field(default=None, max_length=64)
    duplicate_results: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    completeness: str | None = Field(default=None, max_length=16)
    rerated_from_run_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("billing_run.id", name="fk_billing_run_rerated_from")),
    )
    operation: str = Field(
        default="close", max_length=16, sa_column_kwargs={"server_default": "close"}
    )
    started_by: str = Field(default="", max_length=200, sa_column_kwargs={"server_default": ""})
    rate_cards: str | None = Field(default=None, sa_column=Column(Text))
    totals: str | None = Field(default=None, sa_column=Column(Text))
    finalized_count: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    corrections_count: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    org_outcomes: str | None = Field(default=None, sa_column=Column(Text))
    mode: str = Field(default="local", max_length=16, sa_column_kwargs={"server_default": "local"})
    stage: str | None = Field(default=None, max_length=16)
    heartbeat_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    batches_total: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # A close under BILLING_REVIEW_DAYS: its drafts are finalized by beat at this time (0010).
    review_deadline: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


def _count() -> Column[int]:
    return Column(BigInteger, nullable=False)


class UsageSnapshotRow(SQLModel, table=True):
    """One usage result exactly as a run fetched and priced it (the evidence behind invoices)."""

    __tablename__ = "usage_snapshot"
    # By run and org: a rate batch reads only its orgs' rows (migration 0008).
    __table_args__ = (Index("ix_usage_snapshot_run_org", "run_id", "org_id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(
        sa_column=Column(Integer, ForeignKey("billing_run.id", ondelete="CASCADE"), nullable=False)
    )
    page: int
    bucket_start: int = Field(sa_column=_count())
    bucket_end: int = Field(sa_column=_count())
    org_id: str = Field(sa_column=_upstream_text())
    api_key_id: str | None = Field(default=None, sa_column=_upstream_text(nullable=True))
    user_id: str | None = Field(default=None, sa_column=_upstream_text(nullable=True))
    session_kind: str | None = Field(default=None, max_length=32)
    duration_ms: int = Field(sa_column=_count())
    reserved_memory_mib: int | None = Field(default=None, sa_column=Column(BigInteger))
    peak_memory_mib: Decimal | None = Field(default=None, sa_column=Column(ExactDecimal()))
    workspace_bytes_in: int = Field(sa_column=_count())
    workspace_bytes_out: int = Field(sa_column=_count())
    num_sessions: int = Field(sa_column=_count())
    request_count: int = Field(sa_column=_count())
    num_operations: int = Field(sa_column=_count())
    files_changed_count: int = Field(sa_column=_count())
    oom_killed_count: int = Field(sa_column=_count())


LIVE_INVOICE = text(f"status <> '{InvoiceStatus.VOID}'")


def _reference_index(name: str, column: str) -> Index:
    """A partial index on a column that refers to an invoice and is mostly NULL (0007)."""
    present = text(f"{column} IS NOT NULL")
    return Index(name, column, postgresql_where=present, sqlite_where=present)


class Invoice(SQLModel, table=True):
    """One org's invoice for one period: a draft, then finalized (immutable), sent or void."""

    __tablename__ = "invoice"
    __table_args__ = (
        Index(
            "uq_invoice_org_period_live",
            "org_id",
            "period",
            unique=True,
            postgresql_where=LIVE_INVOICE,
            sqlite_where=LIVE_INVOICE,
        ),
        _reference_index("ix_invoice_replaces", "replaces_invoice_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(sa_column=Column(Integer, ForeignKey("billing_run.id"), nullable=False))
    number: str | None = Field(default=None, max_length=32, unique=True)
    status: str = Field(
        default=InvoiceStatus.DRAFT,
        max_length=16,
        sa_column_kwargs={"server_default": InvoiceStatus.DRAFT.value},
    )
    org_id: str = Field(sa_column=_upstream_text(index=True))
    org_name: str = Field(sa_column=_upstream_text())
    contact_emails: str = Field(default="", sa_column=Column(Text, nullable=False))
    period: str = Field(max_length=7, index=True)
    currency: str = Field(max_length=3)
    rate_card_id: str = Field(max_length=100)
    rate_card_version: str = Field(max_length=10)
    rate_card_hash: str = Field(max_length=64)
    total: Decimal = Field(sa_column=_exact())
    issued_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    due_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    billing_address: str = Field(
        default="", sa_column=Column(Text, nullable=False, server_default="")
    )
    finalized_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    voided_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    void_reason: str | None = Field(default=None, sa_column=Column(Text))
    replaces_invoice_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("invoice.id", name="fk_invoice_replaces")),
    )
    # The terms it was priced under, so a reviewer's adjustment can be discounted and the
    # minimum recomputed without re-rating (0010); None: no discount, no minimum.
    discount_percent: Decimal | None = Field(default=None, sa_column=Column(ExactDecimal()))
    minimum_charge: Decimal | None = Field(default=None, sa_column=Column(ExactDecimal()))
    # Who voided it: "user@host" from the CLI, "name (console)" from the console or API (0011).
    voided_by: str | None = Field(default=None, max_length=200)
    # The customer's facts from the directory when drafted, and the tax rule of the period as
    # JSON (billing.domain.TaxRule; NULL: untaxed): retaxing reads only this row (0012).
    purchase_order: str = Field(
        default="", sa_column=Column(Text, nullable=False, server_default="")
    )
    customer_tax_id: str = Field(
        default="", sa_column=Column(Text, nullable=False, server_default="")
    )
    customer_country: str = Field(
        default="", sa_column=Column(String(2), nullable=False, server_default="")
    )
    tax_rule: str | None = Field(default=None, sa_column=Column(Text))


class InvoiceDailyUsage(SQLModel, table=True):
    """An invoice's session time per UTC day, from the usage snapshot (for the statement chart)."""

    __tablename__ = "invoice_daily_usage"
    __table_args__ = (UniqueConstraint("invoice_id", "day_start", name="uq_daily_invoice_day"),)

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(
        sa_column=Column(Integer, ForeignKey("invoice.id", ondelete="CASCADE"), nullable=False)
    )
    day_start: int = Field(sa_column=Column(BigInteger, nullable=False))
    duration_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class InvoiceCharge(SQLModel, table=True):
    """An invoice's charge for one meter (or the minimum top-up, or a correction of an earlier
    invoice), rounded to the minor unit."""

    __tablename__ = "invoice_charge"
    __table_args__ = (
        UniqueConstraint("invoice_id", "position", name="uq_charge_invoice_position"),
        _reference_index("ix_charge_corrects", "corrects_invoice_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(
        sa_column=Column(Integer, ForeignKey("invoice.id", ondelete="CASCADE"), nullable=False)
    )
    position: int
    meter: str = Field(max_length=50)
    description: str = Field(max_length=200)
    unit: str = Field(max_length=20)
    quantity: Decimal = Field(sa_column=_exact())
    included: Decimal = Field(sa_column=_exact())
    billable: Decimal = Field(sa_column=_exact())
    pricing: str = Field(max_length=500)
    amount: Decimal = Field(sa_column=_exact())
    charge_class: str = Field(
        default="usage", max_length=16, sa_column_kwargs={"server_default": "usage"}
    )
    corrects_invoice_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("invoice.id", name="fk_charge_corrects_invoice")),
    )
    # The charge before the org's discount (rounded once; adjustments: as entered), when a
    # discount applied; a tax charge's rate and TaxTreatment (0012).
    list_amount: Decimal | None = Field(default=None, sa_column=Column(ExactDecimal()))
    tax_percent: Decimal | None = Field(default=None, sa_column=Column(ExactDecimal()))
    tax_treatment: str | None = Field(default=None, max_length=16)


# The columns every bulk write of charges and lines fills (billing/db/ledger.py for drafts,
# billing/db/taxes.py for tax charges), in the order their rows are built.
CHARGE_COPY_COLUMNS = (
    "invoice_id",
    "position",
    "meter",
    "description",
    "unit",
    "quantity",
    "included",
    "billable",
    "pricing",
    "amount",
    "charge_class",
)
LINE_COPY_COLUMNS = (
    "invoice_id",
    "meter",
    "api_key_id",
    "user_id",
    "quantity",
    "unit",
    "amount",
    "charge_class",
)


class InvoiceLine(SQLModel, table=True):
    """A meter charge's share for one API key and user (the chargeback grain)."""

    __tablename__ = "invoice_line"
    __table_args__ = (
        Index("ix_invoice_line_invoice", "invoice_id"),
        _reference_index("ix_invoice_line_corrects", "corrects_invoice_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(
        sa_column=Column(Integer, ForeignKey("invoice.id", ondelete="CASCADE"), nullable=False)
    )
    meter: str = Field(max_length=50)
    api_key_id: str | None = Field(default=None, sa_column=_upstream_text(nullable=True))
    user_id: str | None = Field(default=None, sa_column=_upstream_text(nullable=True))
    quantity: Decimal = Field(sa_column=_exact())
    unit: str = Field(max_length=20)
    amount: Decimal = Field(sa_column=_exact())
    charge_class: str = Field(
        default="usage", max_length=16, sa_column_kwargs={"server_default": "usage"}
    )
    corrects_invoice_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("invoice.id", name="fk_line_corrects_invoice")),
    )


class InvoiceCorrection(SQLModel, table=True):
    """A difference found after an invoice was finalized, at the chargeback grain; it is billed
    on the org's invoice of `target_period` (applied when that invoice is finalized)."""

    __tablename__ = "invoice_correction"
    __table_args__ = (
        Index("ix_correction_target", "org_id", "target_period"),
        _reference_index("ix_correction_applied", "applied_invoice_id"),
        Index("ix_correction_original", "original_invoice_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(sa_column=Column(Integer, ForeignKey("billing_run.id"), nullable=False))
    org_id: str = Field(sa_column=_upstream_text())
    original_invoice_id: int = Field(
        sa_column=Column(Integer, ForeignKey("invoice.id"), nullable=False)
    )
    target_period: str = Field(max_length=7)
    meter: str = Field(max_length=50)
    description: str = Field(max_length=200)
    unit: str = Field(max_length=20)
    api_key_id: str | None = Field(default=None, sa_column=_upstream_text(nullable=True))
    user_id: str | None = Field(default=None, sa_column=_upstream_text(nullable=True))
    quantity: Decimal = Field(sa_column=_exact())
    amount: Decimal = Field(sa_column=_exact())
    currency: str = Field(max_length=3)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    applied_invoice_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("invoice.id", name="fk_correction_applied")),
    )


class InvoiceNumberSequence(SQLModel, table=True):
    """The last invoice number issued in a year; locked while numbers are handed out."""

    __tablename__ = "invoice_number_sequence"

    year: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    last_number: int = 0


STATEMENT_DELIVERY = text(f"kind = '{DeliveryKind.STATEMENT}'")
CREDIT_NOTE_DELIVERY = text(f"kind = '{DeliveryKind.CREDIT_NOTE}'")


class EmailDelivery(SQLModel, table=True):
    """The outbox: one statement email to one recipient, and how its delivery went.

    pending -> sending -> sent | failed | unknown (the server may or may not have it: a person
    decides; never resent automatically). Rows are written when the invoice is finalized.
    """

    __tablename__ = "email_delivery"
    __table_args__ = (
        Index(
            "uq_delivery_invoice_recipient",
            "invoice_id",
            "recipient",
            unique=True,
            postgresql_where=STATEMENT_DELIVERY,
            sqlite_where=STATEMENT_DELIVERY,
        ),
        Index("ix_delivery_period_status", "period", "status"),
        Index("ix_delivery_invoice", "invoice_id"),
        Index(
            "uq_delivery_credit_note_recipient",
            "credit_note_id",
            "recipient",
            unique=True,
            postgresql_where=CREDIT_NOTE_DELIVERY,
            sqlite_where=CREDIT_NOTE_DELIVERY,
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(sa_column=Column(Integer, ForeignKey("invoice.id"), nullable=False))
    org_id: str = Field(sa_column=_upstream_text())
    period: str = Field(max_length=7)
    recipient: str = Field(max_length=320)
    kind: str = Field(default=DeliveryKind.STATEMENT, max_length=16)
    status: str = Field(default=DeliveryStatus.PENDING, max_length=16)
    attempts: int = 0
    message_id: str = Field(default="", max_length=255)
    server_reply: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    requested_by: str = Field(default="", max_length=200)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_attempt_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    # A credit note's email (kind credit_note): invoice_id is the invoice it credits (0010).
    credit_note_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("credit_note.id", name="fk_delivery_credit_note")),
    )


class RunTask(SQLModel, table=True):
    """One unit of a distributed run (a rate batch, a render, an email): its state and how
    often it was delivered; completion and the sweep are decided from these rows."""

    __tablename__ = "run_task"
    __table_args__ = (UniqueConstraint("run_id", "stage", "unit", name="uq_run_task_unit"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(
        sa_column=Column(Integer, ForeignKey("billing_run.id", ondelete="CASCADE"), nullable=False)
    )
    stage: str = Field(max_length=16)
    unit: str = Field(max_length=64)
    status: str = Field(max_length=16)
    attempts: int = 0
    payload: str = Field(default="null", sa_column=Column(Text, nullable=False))
    result: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


OPEN_HOLD = text("released_at IS NULL")
LIVE_ADJUSTMENT = text("cancelled_at IS NULL")


class ReviewHold(SQLModel, table=True):
    """A reviewer's hold on an org's draft of a period: the review window's end does not
    finalize it until it is released. Kept by org and period, so it survives a re-close that
    replaces the draft; released holds stay as the audit trail."""

    __tablename__ = "review_hold"
    __table_args__ = (
        Index(
            "uq_review_hold_open",
            "org_id",
            "period",
            unique=True,
            postgresql_where=OPEN_HOLD,
            sqlite_where=OPEN_HOLD,
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: str = Field(sa_column=_upstream_text())
    period: str = Field(max_length=7)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    held_by: str = Field(max_length=200)
    held_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    released_by: str | None = Field(default=None, max_length=200)
    released_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class InvoiceAdjustment(SQLModel, table=True):
    """A reviewer's signed adjustment of an org's draft of a period, on one meter or as a free
    text line; re-applied to every draft that replaces it and billed when it is finalized."""

    __tablename__ = "invoice_adjustment"
    __table_args__ = (
        Index("ix_adjustment_org_period", "org_id", "period"),
        _reference_index("ix_adjustment_applied", "applied_invoice_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: str = Field(sa_column=_upstream_text())
    period: str = Field(max_length=7)
    meter: str | None = Field(default=None, max_length=50)  # None: a free-text line
    description: str = Field(sa_column=Column(Text, nullable=False))
    amount: Decimal = Field(sa_column=_exact())  # as entered, before the org's discount
    currency: str = Field(max_length=3)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    cancelled_by: str | None = Field(default=None, max_length=200)
    cancelled_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    cancel_reason: str | None = Field(default=None, sa_column=Column(Text))
    applied_invoice_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("invoice.id", name="fk_adjustment_applied")),
    )


class CreditNote(SQLModel, table=True):
    """A document that credits part or all of a finalized invoice: its own gapless number per
    year (CN-YYYY-NNNNNN), refunded or kept as the org's credit balance. Never changes."""

    __tablename__ = "credit_note"
    __table_args__ = (Index("ix_credit_note_invoice", "invoice_id"),)

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=32, unique=True)
    invoice_id: int = Field(sa_column=Column(Integer, ForeignKey("invoice.id"), nullable=False))
    org_id: str = Field(sa_column=_upstream_text(index=True))
    org_name: str = Field(sa_column=_upstream_text())
    contact_emails: str = Field(default="", sa_column=Column(Text, nullable=False))
    billing_address: str = Field(default="", sa_column=Column(Text, nullable=False))
    period: str = Field(max_length=7)
    currency: str = Field(max_length=3)
    total: Decimal = Field(sa_column=_exact())  # the amount credited, positive
    reason: str = Field(sa_column=Column(Text, nullable=False))
    settlement: str = Field(max_length=16)  # CreditSettlement
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class CreditNoteLine(SQLModel, table=True):
    """What a credit note credits of one line of its invoice (meter, API key, user), positive."""

    __tablename__ = "credit_note_line"
    __table_args__ = (Index("ix_credit_note_line_note", "credit_note_id"),)

    id: int | None = Field(default=None, primary_key=True)
    credit_note_id: int = Field(
        sa_column=Column(Integer, ForeignKey("credit_note.id", ondelete="CASCADE"), nullable=False)
    )
    meter: str = Field(max_length=50)
    description: str = Field(sa_column=Column(Text, nullable=False))
    unit: str = Field(max_length=20)
    charge_class: str = Field(max_length=16)
    api_key_id: str | None = Field(default=None, sa_column=_upstream_text(nullable=True))
    user_id: str | None = Field(default=None, sa_column=_upstream_text(nullable=True))
    amount: Decimal = Field(sa_column=_exact())


class CreditNoteNumberSequence(SQLModel, table=True):
    """The last credit-note number issued in a year; locked while a number is handed out."""

    __tablename__ = "credit_note_number_sequence"

    year: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    last_number: int = 0


class CreditEntry(SQLModel, table=True):
    """One movement of an org's credit balance in one currency: a grant (+), a consumption by
    an invoice (-), an expiry (-) or a reversal of a consumption (+). The balance is their
    sum; consumptions and expiries name the grant they draw on."""

    __tablename__ = "credit_entry"
    __table_args__ = (
        Index("ix_credit_entry_org", "org_id", "currency"),
        _reference_index("ix_credit_entry_grant", "grant_id"),
        _reference_index("ix_credit_entry_invoice", "invoice_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    org_id: str = Field(sa_column=_upstream_text())
    currency: str = Field(max_length=3)
    kind: str = Field(max_length=16)  # CreditEntryKind
    amount: Decimal = Field(sa_column=_exact())
    grant_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("credit_entry.id", name="fk_credit_entry_grant")),
    )
    invoice_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("invoice.id", name="fk_credit_entry_invoice")),
    )
    credit_note_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("credit_note.id", name="fk_credit_entry_note")),
    )
    reason: str = Field(sa_column=Column(Text, nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class ConsoleUser(SQLModel, table=True):
    """A person who signs in to the console: a role and an argon2 password hash (0011)."""

    __tablename__ = "console_user"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    role: str = Field(max_length=16)  # Role
    password_hash: str = Field(sa_column=Column(Text, nullable=False))
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    disabled_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class ApiToken(SQLModel, table=True):
    """A bearer token of the REST API: only its SHA-256 is stored, with a short prefix to
    recognise it by; revoked tokens stay on record (0011)."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    role: str = Field(max_length=16)  # Role
    token_hash: str = Field(max_length=64, unique=True)
    token_prefix: str = Field(max_length=16)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class WebSession(SQLModel, table=True):
    """A signed-in console session: the cookie's SHA-256, its CSRF token and expiry (0011)."""

    __tablename__ = "web_session"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("console_user.id", ondelete="CASCADE"), nullable=False)
    )
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_seen_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class LoginAttempt(SQLModel, table=True):
    """One sign-in attempt, kept to slow down repeated failures by name and by address (0011)."""

    __tablename__ = "login_attempt"
    __table_args__ = (
        Index("ix_login_attempt_name_at", "name", "at"),
        Index("ix_login_attempt_remote_at", "remote", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    remote: str = Field(max_length=64)
    succeeded: bool = False
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class WebhookEvent(SQLModel, table=True):
    """An event for webhook endpoints, written in the same transaction as the change it
    reports (an outbox); `event_id` is stable for the receiver's idempotency (0011)."""

    __tablename__ = "webhook_event"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=40, unique=True)
    type: str = Field(max_length=40, index=True)  # WebhookEventType
    payload: str = Field(sa_column=Column(Text, nullable=False))  # the JSON body's "data"
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class WebhookDelivery(SQLModel, table=True):
    """One event's delivery to one configured endpoint: attempts, backoff, the last reply."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint", name="uq_webhook_delivery_event_endpoint"),
        Index("ix_webhook_delivery_status_next", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("webhook_event.id", ondelete="CASCADE"), nullable=False
        )
    )
    endpoint: str = Field(max_length=100)  # the endpoint's name in BILLING_WEBHOOKS
    url: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(max_length=16)  # WebhookDeliveryStatus
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    delivered_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class BudgetSpend(SQLModel, table=True):
    """A scope's latest month-to-date spend against its budget (one row per period, scope and
    currency, replaced by each daily check; 0013)."""

    __tablename__ = "budget_spend"
    __table_args__ = (
        UniqueConstraint(
            "period", "scope", "scope_id", "currency", name="uq_budget_spend_period_scope"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    period: str = Field(max_length=7)
    scope: str = Field(max_length=16)  # BudgetScope
    scope_id: str = Field(sa_column=_upstream_text())
    currency: str = Field(max_length=3)
    budget_amount: Decimal = Field(sa_column=_exact())
    spend: Decimal = Field(sa_column=_exact())
    forecast: Decimal = Field(sa_column=_exact())
    measured_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    usage_results: int = 0


class BudgetAlert(SQLModel, table=True):
    """A threshold a scope's spend reached: at most one per period, scope and threshold (the
    unique constraint is what makes an alert fire once, across runs and restarts; 0013)."""

    __tablename__ = "budget_alert"
    __table_args__ = (
        UniqueConstraint("period", "scope", "scope_id", "threshold", name="uq_budget_alert_once"),
    )

    id: int | None = Field(default=None, primary_key=True)
    period: str = Field(max_length=7, index=True)
    scope: str = Field(max_length=16)  # BudgetScope
    scope_id: str = Field(sa_column=_upstream_text())
    threshold: str = Field(max_length=12)  # the percent as written, normalised ("80", "12.5")
    currency: str = Field(max_length=3)
    budget_amount: Decimal = Field(sa_column=_exact())
    spend: Decimal = Field(sa_column=_exact())
    forecast: Decimal = Field(sa_column=_exact())
    fired_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    event_id: str | None = Field(default=None, max_length=40)  # its budget.threshold_reached
    email_to: str = Field(default="", sa_column=Column(Text, nullable=False))  # "; "-joined
    email_status: str = Field(max_length=16)  # AlertEmailStatus
    email_attempts: int = 0
    email_reply: str | None = Field(default=None, sa_column=Column(Text))


metadata = SQLModel.metadata
