"""The REST API's request and response bodies: money as decimal strings (never a JSON number),
times as ISO 8601 in UTC, ids and names verbatim."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, ValidationInfo

from billing.finance.lookup import Delivery, RunRef, TimelineEntry
from billing.money import format_minor, format_quantity

DECIMAL_PATTERN = r"^[+-]?[0-9]+(\.[0-9]+)?$"


def _at_minor_units(value: object, info: ValidationInfo) -> object:
    """A service layer's Decimal amount as its currency's string: the currency is the body's own
    `currency` (declared before its amounts), else the one given as validation context (the
    invoice's or credit note's, for their lines)."""
    if not isinstance(value, Decimal):
        return value
    own = info.data.get("currency") if isinstance(info.data, dict) else None
    currency = own or (info.context or {}).get("currency")
    if not isinstance(currency, str):
        raise ValueError("an amount without its currency")
    return format_minor(value, currency)


def _exact(value: object) -> object:
    return format_quantity(value) if isinstance(value, Decimal) else value


def _totals(value: object) -> object:
    """Per-currency Decimal totals as strings at each currency's places."""
    if not isinstance(value, dict):
        return value
    return {
        currency: format_minor(Decimal(total), currency)
        if isinstance(total, Decimal | str)
        else total
        for currency, total in value.items()
    }


Money = Annotated[
    str,
    BeforeValidator(_at_minor_units),
    Field(
        pattern=DECIMAL_PATTERN,
        description="An amount as a decimal string with exactly its currency's minor-unit "
        "digits (USD 108.37, JPY 1234, BHD 1.250); never a JSON number.",
        examples=["108.37"],
    ),
]
Quantity = Annotated[
    str,
    BeforeValidator(_exact),
    Field(
        pattern=DECIMAL_PATTERN,
        description="An exact quantity as a decimal string, without trailing zeros.",
        examples=["60.4057175"],
    ),
]
AmountIn = Annotated[
    StrictStr,
    Field(
        pattern=DECIMAL_PATTERN,
        description='An amount as a decimal string such as "-12.50" (a JSON number is '
        "refused, so no float ever enters), at most the currency's places.",
        examples=["-12.50"],
    ),
]
Totals = Annotated[dict[str, Money], BeforeValidator(_totals)]
Reason = Annotated[StrictStr, Field(min_length=1, max_length=2000, description="Why (on record).")]


class Body(BaseModel):
    """A response body: fields as declared, nothing else; read from the service layer's
    objects by attribute (`Model.model_validate(obj)`), amounts converted by `Money`."""

    model_config = ConfigDict(frozen=True, from_attributes=True)


class RequestBody(BaseModel):
    """A request body: unknown fields and loose types are refused with 422."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorBody(Body):
    """Every 4xx and 5xx answer: one line saying what went wrong and what to do."""

    error: str


class InvoiceItem(Body):
    id: int
    number: str | None
    status: str
    held: bool
    org_id: str
    org_name: str
    period: str
    currency: str
    total: Money
    issued_at: datetime
    finalized_at: datetime | None
    line_items: int
    run_id: int


class InvoiceList(Body):
    """A page of invoices (period newest first, then org, then id) and the cursor of the next
    page (null: this is the last)."""

    items: list[InvoiceItem]
    next_cursor: str | None


class Charge(Body):
    meter: str
    description: str
    charge_class: str
    unit: str
    quantity: Quantity
    included: Quantity
    billable: Quantity
    pricing: str
    amount: Money
    corrects_invoice_id: int | None
    # Before the org's discount, when one applied; a tax charge's rate and treatment (else null).
    list_amount: Money | None = None
    tax_percent: Quantity | None = None
    tax_treatment: str | None = None


class Line(Body):
    """A charge's share for one API key and user (the chargeback grain)."""

    meter: str
    charge_class: str
    api_key_id: str | None
    user_id: str | None
    quantity: Quantity
    unit: str
    amount: Money


class Correction(Body):
    meter: str
    amount: Money
    target_period: str
    billed_on: str | None
    run_id: int


class Adjustment(Body):
    id: int
    state: str
    meter: str | None
    description: str
    amount: Money
    currency: str
    reason: str
    created_by: str
    created_at: datetime
    cancelled_by: str | None
    cancelled_at: datetime | None
    cancel_reason: str | None
    applied_to: str | None


class Hold(Body):
    reason: str
    held_by: str
    held_at: datetime
    released_by: str | None = None
    released_at: datetime | None = None


class CreditNoteItem(Body):
    number: str
    invoice_number: str
    org_id: str
    period: str
    currency: str
    total: Money
    settlement: str
    reason: str
    created_by: str
    created_at: datetime


class InvoiceDetail(Body):
    """One invoice: header, charges, lines, corrections, adjustments, holds, credit notes,
    emails, the runs that made and finalized it, and its timeline (its deliveries, runs and
    timeline entries are the service layer's dataclasses, which have the API's fields)."""

    id: int
    number: str | None
    status: str
    org_id: str
    org_name: str
    period: str
    currency: str
    total: Money
    contacts: list[str]
    billing_address: str
    rate_card_id: str
    rate_card_version: str
    rate_card_hash: str
    discount_percent: Quantity | None
    minimum_charge: Money | None
    run_id: int
    issued_at: datetime
    due_at: datetime | None
    finalized_at: datetime | None
    sent_at: datetime | None
    voided_at: datetime | None
    voided_by: str | None
    void_reason: str | None
    replaces: str | None
    replaced_by: str | None
    # Net (every charge but tax and credit) + tax = gross; total (the amount due) is gross less
    # any credit balance applied. No tax configured: tax is 0.
    net: Money
    tax: Money
    purchase_order: str = ""
    customer_tax_id: str = ""
    customer_country: str = ""
    charges: list[Charge]
    lines: list[Line]
    corrections: list[Correction]
    adjustments: list[Adjustment]
    hold: Hold | None
    holds: list[Hold]
    credit_notes: list[CreditNoteItem]
    deliveries: list[Delivery]
    created_by_run: RunRef | None
    finalized_by_run: RunRef | None
    timeline: list[TimelineEntry]


class RunItem(Body):
    id: int
    period: str
    operation: str
    status: str
    mode: str
    stage: str | None
    trigger: str
    started_by: str
    started_at: datetime
    finished_at: datetime | None
    invoice_count: int
    pages_fetched: int
    review_deadline: datetime | None


class RateCardUse(Body):
    id: str
    version: str
    content_hash: str


class StepProgress(Body):
    done: int
    total: int
    problems: int


class RunDetail(RunItem):
    """A run's audit: who, parameters, checksum, rate cards, totals, outcomes, per-step
    progress on the workers, warnings."""

    upstream_url: str
    request: dict[str, object] | None
    usage_checksum: str | None
    completeness: str | None
    usage_results: int
    results_without_memory: int
    duplicate_results: int
    invoices_stored: int
    finalized_count: int
    corrections_count: int
    error: str | None
    rate_cards: list[RateCardUse]
    totals: Totals
    org_outcomes: list[dict[str, str]]
    steps: dict[str, StepProgress]
    warnings: list[str]


class PeriodSummary(Body):
    """A month at a glance; `totals` (live invoices per currency) equal summary.csv's."""

    period: str
    counts: dict[str, int]
    totals: Totals
    emails: dict[str, int]
    runs: list[RunItem]
    review_deadline: datetime | None
    review_open: bool


class AllocationRow(Body):
    """One row of allocation.csv: `amount` is its billed_cost (direct_cost + shared_cost); a
    share of a shared rule has mapped_by `shared` (docs/CHARGEBACK.md)."""

    cost_centre: str
    org_id: str
    org_name: str
    invoice_number: str
    api_key_id: str | None
    user_id: str | None
    currency: str
    amount: Money
    line_items: int
    mapped_by: str
    direct_cost: Money
    shared_cost: Money
    allocated_from: str
    method: str
    ratio: str


class BudgetRow(Body):
    """One budget of BILLING_BUDGETS in a period: the last month-to-date check's spend, the
    percent used, the linear forecast, the thresholds that fired, and once the period has
    invoices the invoiced spend and the difference (late usage)."""

    scope: str
    scope_id: str
    currency: str
    budget: Money
    spend: Money | None
    used_percent: str | None
    forecast: Money | None
    alerts: list[str]
    measured_at: datetime | None
    invoiced: Money | None
    difference: Money | None


class BudgetList(Body):
    """Every budget of a period, in the file's order."""

    period: str
    forecast: str = "linear: spend so far x days in the month / days elapsed"
    items: list[BudgetRow]


class PeriodAllocation(Body):
    """allocation.csv's rows; per currency they sum exactly to the period's totals,
    plus the shared rules' fixed overheads."""

    period: str
    rows: list[AllocationRow]
    totals: Totals


class OrgOverview(Body):
    org_id: str
    name: str
    listed: bool
    contacts: list[str]
    billing_address: str
    invoices: list[InvoiceItem]
    more_invoices: bool
    balances: Totals


class CreditNoteLine(Body):
    meter: str
    description: str
    unit: str
    charge_class: str
    api_key_id: str | None
    user_id: str | None
    amount: Money


class CreditNoteEmail(Body):
    recipient: str
    status: str
    attempts: int
    detail: str
    sent_at: datetime | None


class CreditNoteDetail(Body):
    number: str
    invoice_number: str
    org_id: str
    org_name: str
    period: str
    currency: str
    total: Money
    invoice_total: Money
    reason: str
    settlement: str
    created_by: str
    created_at: datetime
    rate_card: str
    lines: list[CreditNoteLine]
    emails: list[CreditNoteEmail]
    grant_id: int | None


class CreditNoteList(Body):
    items: list[CreditNoteItem]


class RunList(Body):
    items: list[RunItem]


class SendResult(Body):
    """What a pass over the outbox did: messages handed to the server, outcomes per state."""

    messages: int
    outcomes: dict[str, int]
    cut_off: list[str]


class FinalizeResult(Body):
    period: str
    run_id: int
    invoices: int
    finalized: int
    drafts: int
    totals: Totals
    emails_sent: int
    outcomes: list[dict[str, str]]


class HoldChange(Body):
    invoice_id: int
    org_id: str
    period: str
    reason: str
    by: str
    at: datetime
    window_ends: datetime | None


class AdjustmentChange(Body):
    adjustment_id: int
    org_id: str
    period: str
    currency: str
    amount: Money
    draft_id: int | None
    total: Money | None


class CreditNoteCreated(Body):
    credit_note: CreditNoteDetail
    emails: SendResult | None = Field(
        description="How its emails went; null: they wait in the outbox (the period was busy)."
    )


# Requests ----------------------------------------------------------------------------------


class HoldRequest(RequestBody):
    reason: Reason


class ReleaseRequest(RequestBody):
    reason: Reason | None = None


class ReasonRequest(RequestBody):
    reason: Reason


class AdjustRequest(RequestBody):
    """A signed adjustment of a draft on one meter, or a free-text line (description only)."""

    meter: StrictStr | None = None
    description: StrictStr | None = None
    amount: AmountIn
    reason: Reason


class CreditLineRequest(RequestBody):
    """Credit `amount` of a line: a meter, and (to pin them) an API key and a user; a key or
    user given as null means none; left out, the amount is split over the matching lines."""

    meter: StrictStr = Field(min_length=1)
    api_key_id: StrictStr | None = None
    user_id: StrictStr | None = None
    amount: AmountIn


class CreditNoteRequest(RequestBody):
    """Lines, or one amount split over every creditable line; why; how it is settled."""

    lines: list[CreditLineRequest] | None = None
    amount: AmountIn | None = None
    reason: Reason
    settlement: Literal["credit", "refund"] = "credit"


class ResendRequest(RequestBody):
    to: StrictStr = Field(min_length=3, max_length=320, description="One of the org's contacts.")
