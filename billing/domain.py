"""Plain domain data: usage records, rate cards, org accounts and rated invoices (no I/O)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction

from billing.states import InvoiceStatus

MS_PER_HOUR = 3_600_000
MIB_PER_GIB = 1024
BYTES_PER_GIB = 2**30


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One usage result of the upstream, flattened with its bucket."""

    bucket_start: int
    bucket_end: int
    org_id: str
    api_key_id: str | None
    user_id: str | None
    duration_ms: int = 0
    reserved_memory_mib: int | None = None
    peak_memory_mib: Decimal | None = None
    workspace_bytes_in: int = 0
    workspace_bytes_out: int = 0
    num_sessions: int = 0
    request_count: int = 0
    num_operations: int = 0
    files_changed_count: int = 0
    oom_killed_count: int = 0
    session_kind: str | None = None


# The exact numerators rating sums per org, API key, user and session kind, in this order.
TOTALS_FIELDS = (
    "duration_ms",
    "memory_mib_ms",
    "peak_memory_mib_ms",
    "workspace_bytes_in",
    "workspace_bytes_out",
    "num_sessions",
    "request_count",
    "num_operations",
)


@dataclass(frozen=True, slots=True)
class MeterDefinition:
    """A measured quantity: its unit and how it comes from the summed usage numerators."""

    name: str
    unit: str
    description: str
    totals_field: str
    divisor: int

    @property
    def totals_index(self) -> int:
        return TOTALS_FIELDS.index(self.totals_field)


# Quantity of a meter = (exact integer or rational numerator summed over usage) / divisor.
METERS: dict[str, MeterDefinition] = {
    definition.name: definition
    for definition in (
        MeterDefinition("duration", "hour", "Session time", "duration_ms", MS_PER_HOUR),
        MeterDefinition(
            "memory", "gib_hour", "Reserved memory", "memory_mib_ms", MIB_PER_GIB * MS_PER_HOUR
        ),
        MeterDefinition(
            "peak_memory",
            "gib_hour",
            "Peak memory",
            "peak_memory_mib_ms",
            MIB_PER_GIB * MS_PER_HOUR,
        ),
        MeterDefinition(
            "workspace_in", "gib", "Workspace data in", "workspace_bytes_in", BYTES_PER_GIB
        ),
        MeterDefinition(
            "workspace_out", "gib", "Workspace data out", "workspace_bytes_out", BYTES_PER_GIB
        ),
        MeterDefinition("sessions", "session", "Sessions", "num_sessions", 1),
        MeterDefinition("requests", "request", "Requests", "request_count", 1),
        MeterDefinition("operations", "operation", "Operations", "num_operations", 1),
    )
}

SESSION_KINDS = ("standard", "browser")
MINIMUM_CHARGE_METER = "minimum_charge"


@dataclass(frozen=True, slots=True)
class Tier:
    """A tier: quantity up to `up_to` (None: unbounded) at `unit_price`."""

    up_to: Decimal | None
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class MeterPrice:
    """How a rate card prices one charge: which meter it measures and the charge model.

    Exactly one model: `unit_price`, `tiers` (graduated or volume by `tier_mode`), or
    `package_size` with `package_price`.
    """

    name: str
    meter: str
    unit: str
    unit_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    tier_mode: str = "graduated"
    package_size: Decimal | None = None
    package_price: Decimal | None = None
    included: Decimal = Decimal(0)
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    session_kind: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class RateCard:
    """One version of a rate card."""

    id: str
    currency: str
    effective_from: date
    meters: tuple[MeterPrice, ...]
    minimum_charge: Decimal | None = None
    effective_until: date | None = None
    source: str = ""
    content_hash: str = ""

    @property
    def version(self) -> str:
        return self.effective_from.isoformat()

    @property
    def needs_session_kind(self) -> bool:
        return any(price.session_kind for price in self.meters)


@dataclass(frozen=True, slots=True)
class OrgAccount:
    """An org as billing knows it; `listed` is False for orgs missing from the directory."""

    org_id: str
    name: str
    emails: tuple[str, ...] = ()
    rate_card_id: str | None = None
    listed: bool = True
    discount_percent: Decimal | None = None
    minimum_commitment: Decimal | None = None
    billing_address: str = ""
    overrides: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    country: str = ""  # ISO 3166-1 alpha-2, or ""
    tax_id: str = ""  # the org's VAT (tax) number as the directory gives it
    tax: OrgTax | None = None  # None: the issuer country's default rule
    purchase_order: str = ""  # printed literally on its invoices


@dataclass(frozen=True, slots=True)
class OrgTax:
    """An org's own tax rule in the directory: a rate of the tax file by id (`kind` "rate",
    `value` the id), "reverse_charge" (value ""), or "exempt" (value the reason)."""

    kind: str
    value: str = ""


@dataclass(frozen=True, slots=True)
class TaxRule:
    """The tax an invoice is drafted under, resolved once for its period and stored with it
    (invoice.tax_rule, JSON), so retaxing never reads the tax file again.

    `rate_id` is the tax charge's meter: the rate's id, or "reverse-charge" / "exempt";
    `note` is the printed wording of a reverse charge, or an exemption's reason."""

    rate_id: str
    name: str
    jurisdiction: str
    percent: Decimal
    treatment: str  # states.TaxTreatment
    note: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "rate_id": self.rate_id,
                "name": self.name,
                "jurisdiction": self.jurisdiction,
                "percent": str(self.percent),
                "treatment": self.treatment,
                "note": self.note,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> TaxRule:
        data = json.loads(text)
        return cls(
            rate_id=str(data["rate_id"]),
            name=str(data["name"]),
            jurisdiction=str(data["jurisdiction"]),
            percent=Decimal(str(data["percent"])),
            treatment=str(data["treatment"]),
            note=str(data.get("note", "")),
        )


@dataclass(frozen=True, slots=True)
class UsageKey:
    """Who used it: the cost-allocation grain below an org."""

    api_key_id: str | None
    user_id: str | None


@dataclass(frozen=True, slots=True)
class AllocatedLine:
    """A share of a meter charge allocated to one API key and user."""

    key: UsageKey
    quantity: Fraction
    amount_minor: int


@dataclass(frozen=True, slots=True)
class MeterCharge:
    """An org's charge for one meter in a period, rounded once, with its allocation."""

    meter: str
    unit: str
    description: str
    quantity: Fraction
    included: Decimal
    billable: Fraction
    pricing: str
    amount_minor: int
    lines: tuple[AllocatedLine, ...]
    # The charge before the org's discount, rounded half-up once; None: no discount applied.
    list_amount_minor: int | None = None


@dataclass(frozen=True, slots=True)
class RatedInvoice:
    """One org's priced period, before it is stored."""

    org: OrgAccount
    currency: str
    rate_card: RateCard
    charges: tuple[MeterCharge, ...]
    # Session time per UTC day: (the day's start, Unix seconds; milliseconds), for the chart.
    daily_duration_ms: tuple[tuple[int, int], ...] = ()
    # The tax rule of its period (None: untaxed), set by the close from BILLING_TAX_RATES.
    tax_rule: TaxRule | None = None

    @property
    def total_minor(self) -> int:
        return sum(charge.amount_minor for charge in self.charges)


@dataclass(slots=True)
class RatingReport:
    """What rating noticed that finance should see."""

    usage_results: int = 0
    results_without_memory: int = 0
    results_with_peak_only: int = 0
    orgs_without_contact: list[str] = field(default_factory=list)

    def count(self, results: int, without_memory: int, with_peak_only: int) -> None:
        """Count results already tallied elsewhere (rating's own loop)."""
        self.usage_results += results
        self.results_without_memory += without_memory
        self.results_with_peak_only += with_peak_only

    def tally(self, record: UsageRecord) -> None:
        """Count one usage result, and what its memory figures lacked."""
        self.usage_results += 1
        if record.reserved_memory_mib is None:
            if record.peak_memory_mib is None:
                self.results_without_memory += 1
            else:
                self.results_with_peak_only += 1


@dataclass(frozen=True, slots=True)
class InvoiceSummary:
    """One invoice of a period at a glance (no charges or lines): what a close reports."""

    org_id: str
    org_name: str
    invoice_number: str
    status: str
    currency: str
    total: Decimal
    emails: tuple[str, ...]

    @property
    def draft(self) -> bool:
        return self.status == InvoiceStatus.DRAFT


@dataclass(frozen=True, slots=True)
class StatementCharge:
    """A stored meter charge as statements show it."""

    meter: str
    description: str
    unit: str
    quantity: Decimal
    included: Decimal
    billable: Decimal
    pricing: str
    amount: Decimal
    charge_class: str = "usage"
    corrects_invoice_id: int | None = None
    # The charge before the org's discount (rounded half-up once), when a discount applied;
    # the statement prints it and the discount as its own line. None: no discount.
    list_amount: Decimal | None = None
    # Tax charges only (charge_class "tax"): the rate and how it applies; `quantity` and
    # `billable` hold the net amount taxed, `pricing` the printed wording.
    tax_percent: Decimal | None = None
    tax_treatment: str | None = None

    @property
    def is_tax(self) -> bool:
        return self.charge_class == "tax"

    @property
    def is_correction(self) -> bool:
        return self.charge_class == "correction"

    @property
    def charge_key(self) -> tuple[str, str, int | None]:
        """What ties lines to their charge: the meter, the class and the corrected invoice."""
        return (self.meter, self.charge_class, self.corrects_invoice_id)


@dataclass(frozen=True, slots=True)
class StatementLine:
    """A stored allocation line as statements show it."""

    meter: str
    api_key_id: str | None
    user_id: str | None
    quantity: Decimal
    unit: str
    amount: Decimal
    charge_class: str = "usage"
    corrects_invoice_id: int | None = None

    @property
    def charge_key(self) -> tuple[str, str, int | None]:
        return (self.meter, self.charge_class, self.corrects_invoice_id)


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """An org's session time on one UTC day of the period."""

    day: date
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Statement:
    """Everything a PDF, CSV or email of one invoice needs, read back from the ledger."""

    invoice_id: int
    invoice_number: str
    org_id: str
    org_name: str
    emails: tuple[str, ...]
    period: str
    period_start: datetime
    period_end: datetime
    currency: str
    issued_at: datetime
    rate_card_id: str
    rate_card_version: str
    charges: tuple[StatementCharge, ...]
    lines: tuple[StatementLine, ...]
    total: Decimal
    billing_address: str = ""
    due_at: datetime | None = None
    daily_usage: tuple[DailyUsage, ...] = ()
    draft: bool = False
    status: str = InvoiceStatus.FINALIZED
    replaces: str = ""  # the number of the void invoice this one replaces, if any
    purchase_order: str = ""  # the org's PO number from the directory, printed on its invoices
    customer_tax_id: str = ""  # the org's tax (VAT) id, as the directory gave it when drafted
    customer_country: str = ""  # ISO 3166-1 alpha-2, or ""

    @property
    def taxes(self) -> tuple[StatementCharge, ...]:
        """The tax charges, one per rate: net taxed (`billable`), rate, treatment, amount."""
        return tuple(charge for charge in self.charges if charge.is_tax)

    @property
    def tax_total(self) -> Decimal:
        return sum((charge.amount for charge in self.taxes), Decimal(0))

    @property
    def net_total(self) -> Decimal:
        """Every charge before tax and before the credit balance: what tax is computed on."""
        return sum(
            (c.amount for c in self.charges if c.charge_class not in ("tax", "credit")),
            Decimal(0),
        )

    @property
    def gross_total(self) -> Decimal:
        """Net plus tax; the amount due is this less any credit balance applied."""
        return self.net_total + self.tax_total


@dataclass(frozen=True, slots=True)
class OrgTotal:
    """One org's invoice total in a period: what month-over-month compares."""

    org_id: str
    org_name: str
    currency: str
    total: Decimal
