"""Pure credit notes: their numbers, `--line` specs, what is still creditable and the exact split
of a credit over an invoice's lines (largest remainder), and the document's plain data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from billing.errors import BillingError
from billing.money import allocate_largest_remainder, decimal_to_minor, format_minor
from billing.money import minor_to_decimal as to_decimal
from billing.periods import BillingPeriod
from billing.states import ChargeClass, CreditSettlement

# The invoice lines a credit note may credit: what was charged, never the credit applied.
CREDITABLE_CLASSES = (ChargeClass.USAGE, ChargeClass.ADJUSTMENT, ChargeClass.CORRECTION)

LINE_SYNTAX = "METER[:KEY[:USER]]=AMOUNT"

LineKey = tuple[str, str | None, str | None]  # meter, API key, user


def credit_note_number(year: int, sequence_number: int) -> str:
    return f"CN-{year}-{sequence_number:06d}"


def _escaped(part: str | None) -> str:
    return "" if part is None else part.replace("\\", "\\\\").replace(":", "\\:")


def line_label(key: LineKey) -> str:
    """A line as `--line` names it: `meter:key:user` (an empty part is None; `:` and `\\`
    inside ids are escaped with a backslash)."""
    meter, api_key_id, user_id = key
    return f"{meter}:{_escaped(api_key_id)}:{_escaped(user_id)}"


@dataclass(frozen=True, slots=True)
class LineSpec:
    """One `--line METER[:KEY[:USER]]=AMOUNT`: the parts given pin the line (an empty part
    means None); the parts left out match every line, which share the amount."""

    text: str
    meter: str
    api_key_id: str | None
    user_id: str | None
    pinned: int  # 1: meter only, 2: meter and key, 3: meter, key and user
    amount: str

    def matches(self, key: LineKey) -> bool:
        meter, api_key_id, user_id = key
        return (
            meter == self.meter
            and (self.pinned < 2 or api_key_id == self.api_key_id)
            and (self.pinned < 3 or user_id == self.user_id)
        )

    @property
    def label(self) -> str:
        parts = [self.meter, _escaped(self.api_key_id), _escaped(self.user_id)]
        return ":".join(parts[: self.pinned])


def parse_line_spec(text: str) -> LineSpec:
    """`METER[:KEY[:USER]]=AMOUNT` with `\\:` for a colon inside an id; the amount follows the
    last `=`."""
    head, sep, amount = text.rpartition("=")
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in head:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":" and len(parts) < 2:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current) + ("\\" if escaped else ""))
    if not sep or not parts[0].strip() or not amount.strip():
        raise BillingError(
            f"--line {text!r}: write {LINE_SYNTAX}, e.g. session_hours:key-1:alice=12.50 "
            "(an empty KEY or USER means none; leave them out to split over the meter's lines)"
        )
    padded = [*parts, "", ""]
    return LineSpec(
        text=text,
        meter=parts[0].strip(),
        api_key_id=padded[1] or None,
        user_id=padded[2] or None,
        pinned=len(parts),
        amount=amount.strip(),
    )


def parse_amount(text: str | Decimal, currency: str, what: str) -> int:
    """A credited amount in minor units: a number above 0 with at most the currency's places."""
    try:
        amount = text if isinstance(text, Decimal) else Decimal(str(text).strip())
    except InvalidOperation:
        raise BillingError(f"{what}: {text!r} is not an amount like 12.50") from None
    if not amount.is_finite() or amount <= 0:
        raise BillingError(f"{what}: the amount must be more than 0, not {text}")
    try:
        return decimal_to_minor(amount, currency)
    except ValueError:
        places = len(format_minor(Decimal(0), currency).partition(".")[2])
        raise BillingError(
            f"{what}: {amount} has more than {places} decimal places, the most {currency} has"
        ) from None


@dataclass(frozen=True, slots=True)
class CreditableLine:
    """One line of an invoice (meter, API key, user) with what it charged (usage, adjustment
    and correction lines together) and what earlier credit notes took of it, in minor units."""

    meter: str
    api_key_id: str | None
    user_id: str | None
    description: str
    unit: str
    charge_class: str
    billed: int
    credited: int

    @property
    def key(self) -> LineKey:
        return (self.meter, self.api_key_id, self.user_id)

    @property
    def remaining(self) -> int:
        return self.billed - self.credited


def line_order(key: LineKey) -> tuple[str, bool, str, bool, str]:
    """Meter, then API key, then user (None last): the order splits hand out their cents in."""
    meter, api_key_id, user_id = key
    return (meter, api_key_id is None, api_key_id or "", user_id is None, user_id or "")


@dataclass(frozen=True, slots=True)
class PlannedLine:
    """What a new credit note credits of one invoice line, in minor units (> 0)."""

    line: CreditableLine
    amount: int


class CreditPlan:
    """The lines of one credit note being planned against an invoice's creditable lines."""

    def __init__(self, invoice_number: str, currency: str, lines: Sequence[CreditableLine]):
        self._number = invoice_number
        self._currency = currency
        self._lines = sorted(lines, key=lambda line: line_order(line.key))
        self._remaining = {line.key: line.remaining for line in self._lines}
        self._planned: dict[LineKey, int] = {}

    def _money(self, minor: int) -> str:
        return f"{format_minor(to_decimal(minor, self._currency), self._currency)} {self._currency}"

    def _spread(self, amount: int, lines: Sequence[CreditableLine]) -> None:
        """`amount` over the lines by largest remainder of what each still has (all > 0)."""
        weights = [self._remaining[line.key] for line in lines]
        for line, part in zip(lines, allocate_largest_remainder(amount, weights), strict=True):
            if part:
                self._planned[line.key] = self._planned.get(line.key, 0) + part
                self._remaining[line.key] -= part

    def add_line(self, spec: LineSpec) -> None:
        """Credit `spec`'s amount on its line, or split it over the lines it matches."""
        amount = parse_amount(spec.amount, self._currency, f"--line {spec.text}")
        matches = [line for line in self._lines if spec.matches(line.key)]
        if not matches:
            named = ", ".join(line_label(line.key) for line in self._lines[:5])
            more = ", …" if len(self._lines) > 5 else ""
            raise BillingError(
                f"{self._number} has no line {spec.label!r} to credit; its lines are "
                f"{named or 'none'}{more} (METER:KEY:USER, an empty part is none)"
            )
        open_lines = [line for line in matches if self._remaining[line.key] > 0]
        available = sum(self._remaining[line.key] for line in open_lines)
        if amount > available:
            billed = sum(line.billed for line in matches)
            taken = billed - sum(self._remaining[line.key] for line in matches)
            raise BillingError(
                f"{self._number}: line {spec.label!r} has {self._money(available)} still "
                f"creditable (charged {self._money(billed)}, credited {self._money(taken)}), "
                f"less than the {self._money(amount)} asked"
            )
        self._spread(amount, open_lines)

    def add_amount(self, text: str | Decimal) -> None:
        """Split an amount over every line with something still creditable."""
        amount = parse_amount(text, self._currency, "--amount")
        open_lines = [line for line in self._lines if self._remaining[line.key] > 0]
        available = sum(self._remaining[line.key] for line in open_lines)
        if amount > available:
            raise BillingError(
                f"{self._number}: its lines have {self._money(available)} still creditable, "
                f"less than the {self._money(amount)} asked"
            )
        self._spread(amount, open_lines)

    def lines(self) -> list[PlannedLine]:
        """The planned lines in line order, each credited amount > 0."""
        return [
            PlannedLine(line, self._planned[line.key])
            for line in self._lines
            if self._planned.get(line.key, 0) > 0
        ]

    def total(self) -> int:
        return sum(self._planned.values())


def check_within_invoice(
    invoice_number: str,
    currency: str,
    invoice_total: int,
    earlier: Sequence[tuple[str, int]],
    amount: int,
) -> None:
    """The credit notes of an invoice never add up to more than its total (the amount due)."""
    credited = sum(total for _, total in earlier)
    left = invoice_total - credited
    if amount <= left:
        return

    def money(minor: int) -> str:
        return f"{format_minor(to_decimal(minor, currency), currency)} {currency}"

    if earlier:
        numbers = ", ".join(number for number, _ in earlier)
        already = f" and its credit notes {numbers} already credit {money(credited)}"
    else:
        already = ""
    raise BillingError(
        f"{invoice_number} totals {money(invoice_total)}{already}: at most "
        f"{money(max(left, 0))} can still be credited, not {money(amount)}"
    )


SETTLEMENT_WORDING = {
    CreditSettlement.REFUND: "refunded: the amount is paid back to you",
    CreditSettlement.CREDIT: "added to your credit balance, used by your next invoices",
}


@dataclass(frozen=True, slots=True)
class CreditNoteDocumentLine:
    """One credited line as the PDF and CSV show it (amount positive)."""

    meter: str
    description: str
    unit: str
    charge_class: str
    api_key_id: str | None
    user_id: str | None
    amount: Decimal


@dataclass(frozen=True, slots=True)
class CreditNoteDocument:
    """Everything a credit note's PDF, CSV or email needs, read back from the ledger."""

    credit_note_id: int
    number: str
    org_id: str
    org_name: str
    emails: tuple[str, ...]
    billing_address: str
    period: str
    currency: str
    total: Decimal
    reason: str
    settlement: str
    created_by: str
    created_at: datetime
    invoice_number: str
    invoice_issued_at: datetime
    invoice_total: Decimal
    rate_card: str  # id@version of the credited invoice
    lines: tuple[CreditNoteDocumentLine, ...]
    customer_tax_id: str = ""
    purchase_order: str = ""

    @property
    def tax_lines(self) -> tuple[CreditNoteDocumentLine, ...]:
        """The tax credited, one line per rate (charge_class "tax", meter the rate's id,
        description as printed, e.g. "VAT 19%")."""
        return tuple(line for line in self.lines if line.charge_class == "tax")

    @property
    def tax_total(self) -> Decimal:
        return sum((line.amount for line in self.tax_lines), Decimal(0))

    @property
    def net_total(self) -> Decimal:
        return self.total - self.tax_total

    @property
    def billing_period(self) -> BillingPeriod:
        return BillingPeriod.parse(self.period)

    @property
    def settlement_wording(self) -> str:
        return SETTLEMENT_WORDING[CreditSettlement(self.settlement)]
