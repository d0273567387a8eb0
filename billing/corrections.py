"""Late-usage corrections: what is due now minus what was billed, at the chargeback grain."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from billing.domain import RatedInvoice
from billing.money import minor_to_decimal, round_quantity
from billing.states import ChargeClass

CORRECTION = ChargeClass.CORRECTION
USAGE = ChargeClass.USAGE


@dataclass(frozen=True, slots=True)
class BilledLine:
    """An amount for one meter, API key and user: billed already, or due after a re-rate."""

    meter: str
    description: str
    unit: str
    api_key_id: str | None
    user_id: str | None
    quantity: Decimal
    amount: Decimal

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        return (self.meter, self.api_key_id, self.user_id)


def due_lines(invoice: RatedInvoice) -> list[BilledLine]:
    """The lines a freshly rated invoice would bill, rounded as the ledger stores them."""
    return [
        BilledLine(
            meter=charge.meter,
            description=charge.description,
            unit=charge.unit,
            api_key_id=line.key.api_key_id,
            user_id=line.key.user_id,
            quantity=round_quantity(line.quantity),
            amount=minor_to_decimal(line.amount_minor, invoice.currency),
        )
        for charge in invoice.charges
        for line in charge.lines
    ]


def correction_lines(billed: Iterable[BilledLine], due: Iterable[BilledLine]) -> list[BilledLine]:
    """The lines that bring what was billed (the original invoice and earlier corrections) to
    what is due now; empty when the totals already agree.

    Every line whose amount moved is kept, so the corrections sum exactly to the difference of
    the totals and still say which API key and user the difference belongs to.
    """
    net: dict[tuple[str, str | None, str | None], list[Decimal]] = {}
    labels: dict[tuple[str, str | None, str | None], BilledLine] = {}
    for sign, lines in ((-1, billed), (1, due)):
        for line in lines:
            totals = net.setdefault(line.key, [Decimal(0), Decimal(0)])
            totals[0] += sign * line.quantity
            totals[1] += sign * line.amount
            if sign == 1 or line.key not in labels:
                labels[line.key] = line
    if sum(amount for _quantity, amount in net.values()) == 0:
        return []
    return [
        BilledLine(
            meter=key[0],
            description=labels[key].description,
            unit=labels[key].unit,
            api_key_id=key[1],
            user_id=key[2],
            quantity=quantity,
            amount=amount,
        )
        for key, (quantity, amount) in sorted(net.items(), key=lambda item: _order(item[0]))
        if amount != 0
    ]


def _order(key: tuple[str, str | None, str | None]) -> tuple[str, str, str]:
    return (key[0], key[1] or "", key[2] or "")
