"""Taxes on SQLite and PostgreSQL: a close with BILLING_TAX_RATES taxes each treatment (reverse
charge, exempt, DE 19% and FR 20% in EUR, US-NY 8.875% in USD) as computed here by hand; PDF =
CSV = summary = database; an adjustment retaxes its draft; a credit note carries tax (the last
one exactly what is left); the CSV bytes are the same on both databases; a rule that cannot
apply stops the close before anything is stored."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlmodel import Session

from billing.close.inline import close_period, finalize_period
from billing.close.steps import CloseOptions
from billing.config import Settings
from billing.db.credit_notes import credit_note_documents
from billing.db.engine import ledger
from billing.errors import ConfigError
from billing.finance.adjustments import adjust, cancel
from billing.finance.credit_notes import CreditRequest, issue_credit_note
from billing.periods import BillingPeriod
from billing.states import CreditSettlement
from billing.usage.emulator import running_emulator
from tests.support.agreement import (
    assert_period_agrees,
    assert_same_csv_bytes,
    csv_files,
    rows,
)

OCTOBER = BillingPeriod.parse("2026-10")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DRAFT = CloseOptions(draft=True)
CENT = Decimal("0.01")
NOTE = (
    "Reverse charge: VAT to be accounted for by the recipient "
    "(Article 196, Council Directive 2006/112/EC)."
)

# Five orgs, one per treatment; the issuer is German, so an org without a rule gets DE 19%.
ORGS = """\
default_rate_card: standard
orgs:
  - org_id: org-0001
    name: Acme Robotics GmbH
    email: [billing@acme.example]
    rate_card: enterprise-eur
    country: DE
    tax_id: DE 123 456 789
    tax: reverse_charge
  - org_id: org-0002
    name: Globex Analytics
    email: [ap@globex.example]
    discount_percent: "10"
    country: US
    tax: {rate: us-ny-sales}
    purchase_order: "=PO 4500012345"
  - org_id: org-0003
    name: Initech Foundation
    email: [accounts@initech.example]
    rate_card: platform
    country: US
    tax_id: 12-3456789
    tax: {exempt: "Exempt organisation under section 501(c)(3)"}
  - org_id: org-0004
    name: Umbrella Recherche SARL
    email: [billing@umbrella.example]
    rate_card: enterprise-eur
    country: FR
    tax_id: FR40303265045
    tax: {rate: fr-vat-standard}
  - org_id: org-0005
    name: Hooli Deutschland
    email: [billing@hooli.example]
    rate_card: enterprise-eur
    country: DE
"""
# org -> (currency, rate id of its tax charge, percent, treatment)
EXPECTED = {
    "org-0001": ("EUR", "reverse-charge", Decimal(0), "reverse_charge"),
    "org-0002": ("USD", "us-ny-sales", Decimal("8.875"), "standard"),
    "org-0003": ("USD", "exempt", Decimal(0), "exempt"),
    "org-0004": ("EUR", "fr-vat-standard", Decimal(20), "standard"),
    "org-0005": ("EUR", "de-vat-standard", Decimal(19), "standard"),
}


@contextmanager
def taxed_upstream(
    make_settings: Callable[..., Settings], tmp_path: Path, **overrides: object
) -> Iterator[Callable[..., Settings]]:
    orgs = tmp_path / "orgs.yaml"
    orgs.write_text(ORGS, encoding="utf-8")
    with running_emulator(orgs=5, seed=5, page_size=200) as base_url:

        def build(**more: object) -> Settings:
            values: dict[str, object] = {
                "mka1_base_url": base_url,
                "mka1_api_key": SecretStr("t"),
                "orgs": orgs,
                "tax_rates": EXAMPLES / "tax_rates.yaml",
                "issuer_country": "DE",
                "cost_centres": EXAMPLES / "cost_centres.yaml",
                **overrides,
                **more,
            }
            return make_settings(**values)

        yield build


def decimal(value: object) -> Decimal:
    return Decimal(str(value))


def half_up(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def invoice_of(database_url: str, org_id: str) -> dict[str, object]:
    [row] = rows(
        database_url,
        "SELECT id, total, purchase_order, customer_tax_id, customer_country, tax_rule, number "  # noqa: S608
        f"FROM invoice WHERE org_id = '{org_id}' AND status <> 'void'",
    )
    keys = ("id", "total", "purchase_order", "tax_id", "country", "tax_rule", "number")
    return dict(zip(keys, row, strict=True))


def charges_of(database_url: str, invoice_id: object) -> list[tuple[object, ...]]:
    """(meter, class, description, billable, pricing, amount, list_amount, percent,
    treatment) in position order."""
    return rows(
        database_url,
        "SELECT meter, charge_class, description, billable, pricing, amount, list_amount, "  # noqa: S608
        f"tax_percent, tax_treatment FROM invoice_charge WHERE invoice_id = {invoice_id} "
        "ORDER BY position",
    )


def net_and_tax(database_url: str, org_id: str) -> tuple[Decimal, list[tuple[object, ...]]]:
    invoice = invoice_of(database_url, org_id)
    charges = charges_of(database_url, invoice["id"])
    net = sum((decimal(c[5]) for c in charges if c[1] not in ("tax", "credit")), Decimal(0))
    return net, [c for c in charges if c[1] == "tax"]


def assert_taxed_by_hand(database_url: str) -> dict[str, Decimal]:
    """Each org's one tax charge, computed here: net × percent, half-up to the cent once."""
    taxes = {}
    for org_id, (_currency, rate_id, percent, treatment) in EXPECTED.items():
        invoice = invoice_of(database_url, org_id)
        net, [tax] = net_and_tax(database_url, org_id)
        meter, _kind, description, billable, pricing, amount, _list, stored_percent, how = tax
        by_hand = half_up(net * percent / 100)
        assert (meter, decimal(amount), decimal(billable)) == (rate_id, by_hand, net), org_id
        assert (decimal(stored_percent), how) == (percent, treatment), org_id
        assert decimal(invoice["total"]) == net + by_hand, org_id
        if treatment == "standard":
            assert pricing == f"{percent.normalize():f}% of {net:.2f}", org_id
        taxes[org_id] = by_hand
        lines = rows(
            database_url,
            "SELECT meter, api_key_id, user_id, amount FROM invoice_line "  # noqa: S608
            f"WHERE invoice_id = {invoice['id']} AND charge_class = 'tax'",
        )
        assert [(m, k, u, decimal(a)) for m, k, u, a in lines] == [
            (rate_id, None, None, by_hand)
        ], org_id
        if org_id == "org-0001":
            assert (description, pricing) == ("Reverse charge", NOTE)
        if org_id == "org-0003":
            assert (description, pricing) == (
                "Exempt",
                "Exempt organisation under section 501(c)(3)",
            )
        if org_id == "org-0004":
            assert description == "TVA 20%"
    return taxes


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def test_a_taxed_close_adjustment_and_credit_notes_by_hand(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    with taxed_upstream(make_settings, tmp_path) as build:
        settings = build(database_url=database_url)
        close_period(settings, OCTOBER, options=DRAFT)
        folder = settings.output_dir / str(OCTOBER)
        taxes = assert_taxed_by_hand(database_url)
        assert all(taxes[org] == 0 for org in ("org-0001", "org-0003"))
        assert all(taxes[org] > 0 for org in ("org-0002", "org-0004", "org-0005"))

        # The customer's facts and the rule are kept on the invoice, as the directory gave them.
        globex = invoice_of(database_url, "org-0002")
        assert (globex["purchase_order"], globex["country"]) == ("=PO 4500012345", "US")
        rule = json.loads(str(globex["tax_rule"]))
        assert (rule["rate_id"], rule["percent"], rule["jurisdiction"]) == (
            "us-ny-sales",
            "8.875",
            "US-NY",
        )
        assert invoice_of(database_url, "org-0001")["tax_id"] == "DE 123 456 789"
        # A discounted usage charge keeps its list amount (before the 10%), rounded once.
        usage = [c for c in charges_of(database_url, globex["id"]) if c[1] == "usage"]
        assert any(c[6] is not None for c in usage)
        for charge in usage:
            if charge[6] is not None:
                assert decimal(charge[5]) <= decimal(charge[6])
        assert all(
            c[6] is None
            for c in charges_of(database_url, invoice_of(database_url, "org-0004")["id"])
        )

        # PDF = CSV = summary = database, the tax on each.
        assert_period_agrees(database_url, folder, str(OCTOBER))
        summary = {row["org_id"]: row for row in csv_rows((folder / "summary.csv").read_bytes())}
        for org_id, tax in taxes.items():
            row = summary[org_id]
            assert decimal(row["tax"]) == tax
            assert decimal(row["net"]) + decimal(row["tax"]) == decimal(row["total"])
        statement = csv_rows((folder / "org-0004.csv").read_bytes())
        [tax_row] = [row for row in statement if row["ChargeCategory"] == "Tax"]
        assert (tax_row["ChargeClass"], tax_row["ChargeDescription"]) == ("", "TVA 20%")
        assert (tax_row["ConsumedQuantity"], tax_row["x_ListUnitPrice"]) == ("", "")
        assert (tax_row["PricingQuantity"], tax_row["PricingUnit"]) == ("", "")
        assert decimal(tax_row["BilledCost"]) == taxes["org-0004"]
        assert tax_row["x_Meter"] == "fr-vat-standard"
        # Allocation stays on net amounts: the tax is nobody's cost centre.
        allocated: dict[str, Decimal] = {}
        for row in csv_rows((folder / "allocation.csv").read_bytes()):
            allocated[row["org_id"]] = allocated.get(row["org_id"], Decimal(0)) + decimal(
                row["billed_cost"]
            )
        for org_id, tax in taxes.items():
            assert allocated[org_id] == decimal(summary[org_id]["total"]) - tax

        # An adjustment of +100.00 (no discount) on the FR draft: its tax grows by 20.00.
        umbrella = invoice_of(database_url, "org-0004")
        before = decimal(umbrella["total"])
        added = adjust(settings, str(umbrella["id"]), None, Decimal("100.00"), "SOW 14", "Setup")
        assert added.total == before + Decimal("120.00")
        net, [charged] = net_and_tax(database_url, "org-0004")
        assert decimal(charged[5]) == half_up(net * Decimal("0.20")) == taxes["org-0004"] + 20
        assert_period_agrees(database_url, folder, str(OCTOBER))
        cancel(settings, added.adjustment_id, "entered on the wrong org")
        assert assert_taxed_by_hand(database_url) == taxes
        # -0.05 on the DE draft: the net falls by 0.05 and its 19% by 0.0095, so the tax is
        # taken again on the new net, half-up once: never the old tax less a rounded part.
        hooli = invoice_of(database_url, "org-0005")
        net_before, _ = net_and_tax(database_url, "org-0005")
        small = adjust(settings, str(hooli["id"]), None, Decimal("-0.05"), "typo", "Rounding")
        expected_tax = half_up((net_before - Decimal("0.05")) * Decimal("0.19"))
        assert small.total == net_before - Decimal("0.05") + expected_tax
        cancel(settings, small.adjustment_id, "undo")

        finalize_period(settings, OCTOBER)
        assert assert_taxed_by_hand(database_url) == taxes
        assert_period_agrees(database_url, folder, str(OCTOBER))

        # Credit notes of the FR invoice: 10.00 of net credits 2.00 of tax; the last note, for
        # the rest of the net, credits exactly the tax that is left.
        umbrella = invoice_of(database_url, "org-0004")
        net, _ = net_and_tax(database_url, "org-0004")
        with ledger(settings) as engine:
            first = issue_credit_note(
                engine,
                str(umbrella["number"]),
                CreditRequest(reason="outage", amount=Decimal("10.00")),
                created_by="test",
                now=datetime(2026, 11, 20, tzinfo=UTC),
            )
            rest = net - Decimal("10.00")
            last = issue_credit_note(
                engine,
                str(umbrella["number"]),
                CreditRequest(reason="cancelled", amount=rest, settlement=CreditSettlement.REFUND),
                created_by="test",
                now=datetime(2026, 11, 21, tzinfo=UTC),
            )
            with Session(engine) as session:
                documents = credit_note_documents(
                    session, [first.credit_note_id, last.credit_note_id]
                )
        one, two = documents[first.credit_note_id], documents[last.credit_note_id]
        assert (one.net_total, one.tax_total, one.total) == (
            Decimal("10.00"),
            Decimal("2.00"),
            Decimal("12.00"),
        )
        [tax_line] = one.tax_lines
        assert (tax_line.meter, tax_line.description) == ("fr-vat-standard", "TVA 20%")
        assert two.tax_total == taxes["org-0004"] - Decimal("2.00")
        assert two.net_total == rest
        assert one.total + two.total == decimal(umbrella["total"])  # all of it, not a cent more
        assert (one.customer_tax_id, one.purchase_order) == ("FR40303265045", "")


@pytest.mark.postgres
def test_taxed_csv_bytes_are_the_same_on_sqlite_and_postgresql(
    make_settings: Callable[..., Settings], sqlite_url: str, pg_url: str, tmp_path: Path
) -> None:
    after = datetime.now(UTC) + timedelta(days=1)
    with taxed_upstream(make_settings, tmp_path) as build:
        on_sqlite = build(database_url=sqlite_url, output_dir=tmp_path / "sqlite")
        close_period(on_sqlite, OCTOBER, now=lambda: max(after, OCTOBER.end))
        on_postgres = build(database_url=pg_url, output_dir=tmp_path / "postgres")
        close_period(on_postgres, OCTOBER, now=lambda: max(after, OCTOBER.end))
    left, right = tmp_path / "sqlite" / str(OCTOBER), tmp_path / "postgres" / str(OCTOBER)
    assert_same_csv_bytes(left, right)
    written = csv_files(right)
    summary = csv_rows(written["summary.csv"])
    assert list(summary[0])[3:6] == ["currency", "net", "tax"]
    assert {row["org_id"]: row["tax"] for row in summary}["org-0001"] == "0.00"
    assert any(row["ChargeCategory"] == "Tax" for row in csv_rows(written["org-0005.csv"]))


def test_a_rule_that_cannot_apply_stops_the_close_before_anything_is_stored(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    orgs = tmp_path / "orgs.yaml"
    orgs.write_text(
        "default_rate_card: standard\norgs:\n"
        "  - {org_id: org-0001, name: One, tax: {rate: it-vat}}\n",
        encoding="utf-8",
    )
    settings = make_settings(
        orgs=orgs, tax_rates=EXAMPLES / "tax_rates.yaml", mka1_base_url="http://127.0.0.1:9"
    )
    with pytest.raises(ConfigError, match=r"org org-0001: tax rate 'it-vat' does not exist"):
        close_period(settings, OCTOBER)
    assert not (settings.output_dir / str(OCTOBER)).exists()
