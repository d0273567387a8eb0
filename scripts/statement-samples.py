"""Render three sample statements through the real renderer and rasterise their first pages
for the README: docs/statement-small.png, docs/statement-corrections.png and
docs/statement-reverse-charge.png.

    .venv/bin/python scripts/statement-samples.py [--dpi 90] [--out docs]

The statements come from tests/support/sample_statements.py (a small USD invoice; one with the
org's discount, corrections of an earlier invoice and credit applied; an EUR invoice to a German
customer with a VAT id, reverse charged), their lines made to add up to their charges. The
renderer is built from Settings as a close builds it, with example payment details. pdftoppm
(poppler-utils, `make test-system-deps`) draws the first page of each PDF.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from billing.config import Settings  # noqa: E402
from billing.domain import Statement, StatementLine  # noqa: E402
from billing.statements.pdf import StatementRenderer  # noqa: E402
from tests.support.sample_statements import (  # noqa: E402
    REVERSE_CHARGE,
    make_statement,
)

KEYS = ("key_live_7f3a", "key_live_c21e", "key_ci_09b4")
USERS = ("ada@acme.example", None, "ci-runner")


def with_matching_lines(statement: Statement) -> Statement:
    """The statement with lines that add up to its charges: usage and corrections split over
    up to three API keys (the remainder on the first), everything else one line without a key.
    Tax lines stay as the sample made them."""
    minor = Decimal(1) if statement.currency == "JPY" else Decimal("0.01")
    lines: list[StatementLine] = []
    for charge in statement.charges:
        if charge.is_tax:
            continue
        if charge.charge_class in ("usage", "correction") and charge.meter != "minimum_charge":
            parts = 3 if charge.charge_class == "usage" else 1
            share = (charge.amount / parts).quantize(minor, rounding="ROUND_DOWN")
            quantity = charge.quantity / parts
            amounts = [charge.amount - share * (parts - 1), *[share] * (parts - 1)]
            for index, amount in enumerate(amounts):
                lines.append(
                    StatementLine(
                        charge.meter,
                        KEYS[index],
                        USERS[index],
                        quantity,
                        charge.unit,
                        amount,
                        charge.charge_class,
                        charge.corrects_invoice_id,
                    )
                )
        else:
            lines.append(
                StatementLine(
                    charge.meter,
                    None,
                    None,
                    charge.quantity,
                    charge.unit,
                    charge.amount,
                    charge.charge_class,
                    charge.corrects_invoice_id,
                )
            )
    taxes = [line for line in statement.lines if line.charge_class == "tax"]
    return replace(statement, lines=(*lines, *taxes))


def without_minimum(statement: Statement) -> Statement:
    """The statement without its minimum top-up, its amount due the sum of what is left."""
    charges = tuple(c for c in statement.charges if c.meter != "minimum_charge")
    return replace(statement, charges=charges, total=sum((c.amount for c in charges), Decimal(0)))


def samples() -> dict[str, tuple[Settings, Statement]]:
    """The three statements and the settings each is printed with."""
    common: dict[str, Any] = {
        "issuer_name": "MKA1, Inc.",
        "issuer_address": "548 Market Street\nSan Francisco, CA 94104\nUSA",
        "issuer_tax_id": "US 12-3456789",
        "payment_bank_details": (
            "Bank: First Republic Example Bank; Account: 000123456789; Routing (ABA): 121000248"
        ),
        "payment_link": "https://pay.mka1.example/invoices/{invoice_number}",
    }
    usd = Settings(**common)
    eur = Settings(
        **{
            **common,
            "payment_bank_details": (
                "Bank: Example Bank AG, Frankfurt; IBAN: DE89 3704 0044 0532 0130 00; "
                "BIC: COBADEFFXXX"
            ),
        }
    )
    small = make_statement(line_count=4, invoice_number="INV-2026-000123")
    corrections = make_statement(
        org_name="Northwind Analytics",
        discount_percent=Decimal(10),
        corrections=True,
        credit=Decimal("125.00"),
        purchase_order="PO-88231",
        invoice_number="INV-2026-000124",
        billing_address="Northwind Analytics LLC\nAccounts Payable\n200 Pine Street\nSeattle, WA",
    )
    corrections = without_minimum(corrections)  # its usage is above the card's minimum
    reverse = make_statement(
        org_name="Müller Datentechnik GmbH",
        currency="EUR",
        taxes=(REVERSE_CHARGE,),
        purchase_order="4500012345",
        customer_tax_id="DE811907980",
        customer_country="DE",
        invoice_number="INV-2026-000125",
        billing_address="Müller Datentechnik GmbH\nKreditorenbuchhaltung\nFriedrichstraße 68\n"
        "10117 Berlin\nGermany",
    )
    return {
        "statement-small": (usd, with_matching_lines(small)),
        "statement-corrections": (usd, with_matching_lines(corrections)),
        "statement-reverse-charge": (eur, with_matching_lines(reverse)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dpi", type=int, default=90)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for name, (settings, statement) in samples().items():
            pdf = Path(work) / f"{name}.pdf"
            pdf.write_bytes(StatementRenderer.from_settings(settings).pdf(statement))
            subprocess.run(
                [
                    "pdftoppm",
                    "-png",
                    "-r",
                    str(args.dpi),
                    "-f",
                    "1",
                    "-l",
                    "1",
                    "-singlefile",
                    str(pdf),
                    str(args.out / name),
                ],
                check=True,
                timeout=120,
            )
            print(f"wrote {args.out / name}.png")


if __name__ == "__main__":
    main()
