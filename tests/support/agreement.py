"""Checks that the database, summary, CSV statements and PDFs of a period agree to the cent."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

from pypdf import PdfReader
from sqlalchemy import create_engine, text

from billing.db.engine import normalise_url
from billing.statements.formatting import money
from tests.support.focus_spec_check import focus_problems

# Text of PDFs by their bytes' digest: the suite prints the same documents again and again
# (tests/support/print_memo.py), and pypdf's extraction was 7% of its time.
_PDF_TEXTS: dict[str, str] = {}


def pdf_text(source: Path | bytes) -> str:
    """The text of every page of a PDF (a file or its bytes), in order."""
    data = source if isinstance(source, bytes) else source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest not in _PDF_TEXTS:
        pages = PdfReader(io.BytesIO(data)).pages
        _PDF_TEXTS[digest] = "".join(page.extract_text() or "" for page in pages)
    return _PDF_TEXTS[digest]


def database_taxes(
    database_url: str, period: str, charge_class: str = "tax"
) -> dict[str, list[Decimal]]:
    """org -> its charges of a class (tax by default; in position order) on the live
    invoices."""
    engine = create_engine(normalise_url(database_url))
    with engine.connect() as connection:
        found = connection.execute(
            text(
                "SELECT i.org_id, c.amount FROM invoice_charge c JOIN invoice i "
                "ON i.id = c.invoice_id WHERE i.period = :p AND i.status <> 'void' "
                "AND c.charge_class = :c ORDER BY i.org_id, c.position"
            ),
            {"p": period, "c": charge_class},
        ).all()
    engine.dispose()
    taxes: dict[str, list[Decimal]] = defaultdict(list)
    for org, amount in found:
        taxes[org].append(Decimal(amount))
    return taxes


def database_totals(
    database_url: str, period: str
) -> dict[str, tuple[str, Decimal, Decimal, Decimal]]:
    """org -> (invoice number, invoice total, sum of charges, sum of lines) of the live (not void)
    invoices, summed in Python; drafts have the number DRAFT."""
    engine = create_engine(normalise_url(database_url))
    with engine.connect() as connection:
        invoices = connection.execute(
            text(
                "SELECT id, org_id, COALESCE(number, 'DRAFT'), total FROM invoice "
                "WHERE period = :p AND status <> 'void'"
            ),
            {"p": period},
        ).all()
        charge_sums: dict[int, Decimal] = defaultdict(Decimal)
        for invoice_id, amount in connection.execute(
            text("SELECT invoice_id, amount FROM invoice_charge")
        ):
            charge_sums[invoice_id] += Decimal(amount)
        line_sums: dict[int, Decimal] = defaultdict(Decimal)
        for invoice_id, amount in connection.execute(
            text("SELECT invoice_id, amount FROM invoice_line")
        ):
            line_sums[invoice_id] += Decimal(amount)
    engine.dispose()
    return {
        org: (number, Decimal(total), charge_sums[invoice_id], line_sums[invoice_id])
        for invoice_id, org, number, total in invoices
    }


def assert_period_agrees(
    database_url: str, folder: Path, period: str, locale: str = "en_US"
) -> dict[str, Decimal]:
    """Every format agrees with the database; returns the invoice total per org."""
    db = database_totals(database_url, period)
    assert db, "the period has no invoices"
    summary = list(
        csv.DictReader(io.StringIO((folder / "summary.csv").read_text(encoding="utf-8")))
    )
    assert {row["org_id"] for row in summary} == set(db)
    taxes = database_taxes(database_url, period)
    credits = database_taxes(database_url, period, "credit")
    currencies = {}
    for row in summary:
        number, total, charges, lines = db[row["org_id"]]
        assert Decimal(row["total"]) == total == charges == lines, row["org_id"]
        assert row["invoice_number"] == number
        # net + tax (- credit applied, + a negative total carried) = total, the amount due
        tax_total = sum(taxes.get(row["org_id"], []), Decimal(0))
        assert Decimal(row["tax"]) == tax_total, row["org_id"]
        credit = sum(credits.get(row["org_id"], []), Decimal(0))
        assert Decimal(row["net"]) + tax_total + credit == total, row["org_id"]
        currencies[row["org_id"]] = row["currency"]
        statement_rows = list(
            csv.DictReader(
                io.StringIO((folder / f"{row['org_id']}.csv").read_text(encoding="utf-8"))
            )
        )
        assert sum((Decimal(r["BilledCost"]) for r in statement_rows), Decimal(0)) == total
        assert {r["InvoiceId"] for r in statement_rows} == {number}
        tax_rows = [
            Decimal(r["BilledCost"]) for r in statement_rows if r["ChargeCategory"] == "Tax"
        ]
        assert tax_rows == taxes.get(row["org_id"], []), row["org_id"]
        text = pdf_text(folder / f"{row['org_id']}.pdf")
        assert number in text
        assert money(total, row["currency"], locale) in text
        printed = re.sub(r"\s+", "", text)
        for tax in taxes.get(row["org_id"], []):
            shown = re.sub(r"\s+", "", money(tax, row["currency"], locale))
            assert shown in printed, (row["org_id"], tax)
        # The breakdown closes on the total too, whichever BILLING_STATEMENT_DETAIL printed it:
        # every line ("Total of lines") or the exact subtotals per API key. It leaves the tax
        # lines out, so it closes on the total less the tax.
        amount = re.sub(r"\s+", "", money(total - tax_total, row["currency"], locale))
        assert f"Totaloflines{amount}" in printed or f"Totalofsubtotals{amount}" in printed
    totals = {org: values[1] for org, values in db.items()}
    assert_period_exports_reconcile(folder, summary, totals)
    return totals


def assert_period_exports_reconcile(
    folder: Path, summary: list[dict[str, str]], totals: dict[str, Decimal]
) -> None:
    """focus.csv passes the FOCUS conformance check and its BilledCost sums to each org's
    invoice total (`totals`, by org); allocation.csv's billed_cost sums per currency to the
    invoices' totals less their tax (fixed overheads of shared rules, rows without an org,
    aside)."""
    content = (folder / "focus.csv").read_bytes()
    assert focus_problems(content) == []
    by_org: dict[str, Decimal] = {}
    for row in csv.DictReader(io.StringIO(content.decode("utf-8"))):
        org = row["BillingAccountId"]
        by_org[org] = by_org.get(org, Decimal(0)) + Decimal(row["BilledCost"])
    assert by_org == totals
    untaxed: dict[str, Decimal] = {}
    for row in summary:
        amount = Decimal(row["total"]) - Decimal(row["tax"])
        untaxed[row["currency"]] = untaxed.get(row["currency"], Decimal(0)) + amount
    allocated: dict[str, Decimal] = {}
    allocation = (folder / "allocation.csv").read_text(encoding="utf-8")
    for row in csv.DictReader(io.StringIO(allocation)):
        if row["org_id"]:
            allocated[row["currency"]] = allocated.get(row["currency"], Decimal(0)) + Decimal(
                row["billed_cost"]
            )
    for currency, amount in untaxed.items():
        assert allocated.get(currency, Decimal(0)) == amount, currency


def query_one(database_url: str, sql: str) -> tuple[object, ...]:
    """The single row a query returns, on either database."""
    engine = create_engine(normalise_url(database_url))
    with engine.connect() as connection:
        row = connection.execute(text(sql)).one()
    engine.dispose()
    return tuple(row)


def count(database_url: str, table: str) -> int:
    value = query_one(database_url, f"SELECT count(*) FROM {table}")[0]  # noqa: S608
    assert isinstance(value, int)
    return value


def rows(database_url: str, sql: str) -> list[tuple[object, ...]]:
    """Every row a query returns, as tuples, on either database."""
    engine = create_engine(normalise_url(database_url))
    with engine.connect() as connection:
        result = [tuple(row) for row in connection.execute(text(sql))]
    engine.dispose()
    return result


def csv_files(folder: Path) -> dict[str, bytes]:
    """Every CSV a close wrote in a period folder (statements and reports), name -> bytes."""
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.csv"))}


def assert_same_csv_bytes(folder: Path, other: Path) -> None:
    """Two closes of the same usage wrote the same CSV files, byte for byte."""
    written, again = csv_files(folder), csv_files(other)
    assert {"summary.csv", "changes.csv", "allocation.csv"} < set(written)
    assert sorted(written) == sorted(again)
    for name, content in written.items():
        differing = [
            (left, right)
            for left, right in zip(content.splitlines(), again[name].splitlines(), strict=False)
            if left != right
        ]
        assert content == again[name], (name, differing[:1])
