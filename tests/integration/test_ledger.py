"""The invoice ledger: drafts, finalization, numbering, corrections, reissue, immutability."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import SecretStr
from pypdf import PdfReader
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from billing.close.inline import close_period, finalize_period, rerate_period
from billing.close.steps import CloseOptions
from billing.config import Settings
from billing.db.engine import make_engine, normalise_url
from billing.db.ledger import attach_corrections, void_invoice
from billing.db.tables import Invoice
from billing.errors import InvoiceStateError
from billing.finance.invoices import invoice_detail, list_invoices, run_detail, void
from billing.periods import BillingPeriod
from billing.usage.emulator import running_emulator
from tests.support.agreement import (
    assert_period_agrees,
    count,
    database_totals,
    pdf_text,
    query_one,
    rows,
)
from tests.support.reference import reference_totals

OCTOBER = BillingPeriod.parse("2026-10")
NOVEMBER = BillingPeriod.parse("2026-11")
LATE_DAYS = 4  # the last days of October arrive after its invoices were finalized
DRAFT = CloseOptions(draft=True)


def after_november() -> datetime:
    """A clock past the end of November (a month is closed once it has ended)."""
    return max(datetime.now(UTC), NOVEMBER.end + timedelta(hours=1))


@contextmanager
def upstream(
    make_settings: Callable[..., Settings],
    database_url: str,
    *,
    late: bool = False,
    orgs: int = 5,
    seed: int = 5,
) -> Iterator[tuple[Settings, str]]:
    """Settings against an emulator; with `late` the last days of October are not reported."""
    reported_until = OCTOBER.end_unix - LATE_DAYS * 86_400 if late else None
    with running_emulator(
        orgs=orgs, seed=seed, page_size=200, reported_until=reported_until
    ) as base_url:
        settings = make_settings(
            database_url=database_url, mka1_base_url=base_url, mka1_api_key=SecretStr("t")
        )
        yield settings, base_url


def ledger_image(database_url: str) -> list[tuple[object, ...]]:
    """Every stored amount of every invoice, to prove that nothing changed."""
    return rows(
        database_url,
        "SELECT i.id, i.number, i.status, i.total, c.meter, c.amount, c.charge_class "
        "FROM invoice i JOIN invoice_charge c ON c.invoice_id = i.id ORDER BY i.id, c.position",
    ) + rows(
        database_url,
        "SELECT invoice_id, meter, api_key_id, user_id, amount FROM invoice_line "
        "ORDER BY invoice_id, id",
    )


def test_draft_then_finalize_numbers_gaplessly_and_emails_only_final(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with upstream(make_settings, database_url) as (settings, base_url):
        drafted = close_period(settings, OCTOBER, options=DRAFT)
        expected = reference_totals(base_url, OCTOBER)
    assert {s.status for s in drafted.statements} == {"draft"}
    assert drafted.emails_sent == 0
    assert not (drafted.folder / "emails").exists()
    assert rows(database_url, "SELECT count(*) FROM invoice WHERE number IS NOT NULL") == [(0,)]
    assert assert_period_agrees(database_url, drafted.folder, str(OCTOBER)) == expected
    pages = PdfReader(drafted.folder / "org-0001.pdf").pages
    assert all("DRAFT" in page.extract_text() for page in pages)

    final = finalize_period(settings, OCTOBER)
    year = datetime.now(UTC).year
    numbers = [s.invoice_number for s in final.statements]
    assert numbers == [f"INV-{year}-{n:06d}" for n in range(1, len(expected) + 1)]
    assert assert_period_agrees(database_url, final.folder, str(OCTOBER)) == expected
    with_contact = [s for s in final.statements if s.emails]
    assert final.emails_sent == len(with_contact) > 0
    states = dict(rows(database_url, "SELECT org_id, status FROM invoice"))
    assert states == {s.org_id: "sent" if s.emails else "finalized" for s in final.statements}
    assert "DRAFT" not in PdfReader(final.folder / "org-0001.pdf").pages[0].extract_text()

    with pytest.raises(InvoiceStateError, match="no draft invoices of 2026-10"):
        finalize_period(settings, OCTOBER)


def test_rerun_of_a_finalized_period_changes_nothing_and_sends_nothing_again(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with upstream(make_settings, database_url) as (settings, _base_url):
        first = close_period(settings, OCTOBER)
        before = ledger_image(database_url)
        emails = sorted(p.stat().st_mtime_ns for p in (first.folder / "emails").iterdir())
        again = close_period(settings, OCTOBER)
        rerated = rerate_period(settings, OCTOBER)
    assert ledger_image(database_url) == before
    assert {o["action"] for o in rerated.org_outcomes} == {"already finalized"}
    assert {o["action"] for o in again.org_outcomes} == {"already finalized"}
    assert again.emails_sent == 0
    assert sorted(p.stat().st_mtime_ns for p in (first.folder / "emails").iterdir()) == emails
    assert count(database_url, "invoice_correction") == 0


def test_a_second_draft_close_replaces_the_drafts_whole(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with upstream(make_settings, database_url, late=True) as (settings, _base_url):
        first = close_period(settings, OCTOBER, options=DRAFT)
    with upstream(make_settings, database_url) as (settings, base_url):
        second = close_period(settings, OCTOBER, options=DRAFT)
        expected = reference_totals(base_url, OCTOBER)
    assert first.run_id != second.run_id
    assert rows(database_url, "SELECT DISTINCT run_id FROM invoice") == [(second.run_id,)]
    assert count(database_url, "invoice") == len(expected)
    assert assert_period_agrees(database_url, second.folder, str(OCTOBER)) == expected
    assert {o["action"] for o in second.org_outcomes} == {"drafted"}
    assert count(database_url, "invoice_correction") == 0


def test_late_usage_becomes_a_correction_on_the_next_period_to_the_cent(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with upstream(make_settings, database_url, late=True) as (settings, base_url):
        close_period(settings, OCTOBER)
        billed = reference_totals(base_url, OCTOBER)
    before = ledger_image(database_url)
    with upstream(make_settings, database_url) as (settings, base_url):
        rerun = close_period(settings, OCTOBER)
        due = reference_totals(base_url, OCTOBER)
        november_usage = reference_totals(base_url, NOVEMBER)
        corrected = {o["org_id"] for o in rerun.org_outcomes if o["action"] == "corrected"}
        assert ledger_image(database_url) == before  # the finalized invoices did not move
        assert corrected == {org for org in due if due[org] != billed.get(org)}
        assert corrected, "the late days must change some totals"
        pending: dict[str, Decimal] = {}
        for org, amount in rows(
            database_url,
            "SELECT org_id, amount FROM invoice_correction "
            "WHERE target_period = '2026-11' AND applied_invoice_id IS NULL",
        ):  # summed here: SQLite's SUM of decimal text would go through a float
            pending[str(org)] = pending.get(str(org), Decimal(0)) + Decimal(str(amount))
        assert pending == {org: due[org] - billed.get(org, Decimal(0)) for org in corrected}
        november = close_period(settings, NOVEMBER, now=after_november)

    totals = assert_period_agrees(database_url, november.folder, str(NOVEMBER))
    for org in corrected:
        correction = due[org] - billed.get(org, Decimal(0))
        assert totals[org] == november_usage.get(org, Decimal(0)) + correction
        statement = next(s for s in november.statements if s.org_id == org)
        fixes = [c for c in statement.charges if c.is_correction]
        assert sum((c.amount for c in fixes), Decimal(0)) == correction
        original = query_one(
            database_url,
            f"SELECT number FROM invoice WHERE org_id = '{org}' AND period = '2026-10'",  # noqa: S608
        )[0]
        assert all(f"corrects {original} (2026-10)" == c.pricing for c in fixes)
        pdf = pdf_text(november.folder / f"{org}.pdf")
        assert "corrections to earlier invoices" in pdf.lower()
        assert f"Corrects {original}" in pdf  # the stored "corrects ..." as the page words it
        csv_text = (november.folder / f"{org}.csv").read_text(encoding="utf-8")
        assert ",Correction," in csv_text
    assert rows(
        database_url, "SELECT count(*) FROM invoice_correction WHERE applied_invoice_id IS NULL"
    ) == [(0,)]

    # A third close of October finds nothing new: the corrections already count as billed.
    with upstream(make_settings, database_url) as (settings, _base_url):
        third = close_period(settings, OCTOBER)
    assert {o["action"] for o in third.org_outcomes} == {"already finalized"}


def test_reissue_voids_the_original_and_issues_a_replacement(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with upstream(make_settings, database_url, late=True) as (settings, _base_url):
        first = close_period(settings, OCTOBER)
    originals = {s.org_id: s.invoice_number for s in first.statements}
    with upstream(make_settings, database_url) as (settings, base_url):
        reissued = close_period(settings, OCTOBER, options=CloseOptions(reissue=True))
        due = reference_totals(base_url, OCTOBER)
    assert assert_period_agrees(database_url, reissued.folder, str(OCTOBER)) == due
    changed = {o["org_id"] for o in reissued.org_outcomes if o["action"] == "reissued"}
    assert changed
    for org in changed:
        status, reason = query_one(
            database_url,
            f"SELECT status, void_reason FROM invoice WHERE number = '{originals[org]}'",  # noqa: S608
        )
        assert status == "void"
        assert "reissued by run" in str(reason)
        replacement = next(s for s in reissued.statements if s.org_id == org)
        assert replacement.invoice_number not in originals.values()
        detail = invoice_detail(settings, replacement.invoice_number)
        assert detail.replaces == originals[org]
    assert count(database_url, "invoice_correction") == 0
    live = rows(database_url, "SELECT count(*) FROM invoice WHERE status <> 'void'")
    assert live == [(len(due),)]


def test_void_frees_the_period_and_a_close_issues_a_replacement(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    with upstream(make_settings, sqlite_url) as (settings, _base_url):
        first = close_period(settings, OCTOBER)
        number = first.statements[0].invoice_number
        with pytest.raises(InvoiceStateError, match="needs a reason"):
            void(settings, number, "  ")
        folder = first.folder
        assert (folder / f"{first.statements[0].org_id}.pdf").exists()
        voided = void(settings, number, "customer disputed the session time")
        assert voided.status == "void"
        assert not (folder / f"{voided.org_id}.pdf").exists()
        assert voided.org_id not in (folder / "summary.csv").read_text(encoding="utf-8")
        with pytest.raises(InvoiceStateError, match="only finalized or sent"):
            void(settings, number, "twice")
        again = close_period(settings, OCTOBER, org_ids=[voided.org_id])
    replacement = next(s for s in again.statements if s.org_id == voided.org_id)
    assert replacement.invoice_number != number
    assert replacement.total == first.statements[0].total
    listed = list_invoices(settings, period=OCTOBER, org_id=voided.org_id)
    assert sorted((row.status, row.number) for row in listed) == sorted(
        [("void", number), (replacement.status, replacement.invoice_number)]
    )


def _finalized_invoice(database_url: str) -> tuple[int, int]:
    invoice_id, charge_id = query_one(
        database_url,
        "SELECT i.id, c.id FROM invoice i JOIN invoice_charge c ON c.invoice_id = i.id "
        "WHERE i.status <> 'draft' ORDER BY i.id, c.id LIMIT 1",
    )
    assert isinstance(invoice_id, int)
    assert isinstance(charge_id, int)
    return invoice_id, charge_id


def test_the_database_refuses_changes_to_a_finalized_invoice(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with upstream(make_settings, database_url, orgs=2) as (settings, _base_url):
        close_period(settings, OCTOBER)
    invoice_id, charge_id = _finalized_invoice(database_url)
    before = ledger_image(database_url)
    forbidden = [
        "UPDATE invoice SET total = total + 1 WHERE id = :invoice",
        "UPDATE invoice SET number = 'INV-1999-000001' WHERE id = :invoice",
        "UPDATE invoice SET status = 'draft' WHERE id = :invoice",
        # the terms and tax facts it was priced and taxed under (0012)
        "UPDATE invoice SET tax_rule = 'changed' WHERE id = :invoice",
        "UPDATE invoice SET purchase_order = 'changed' WHERE id = :invoice",
        "UPDATE invoice SET customer_tax_id = 'DE999999999' WHERE id = :invoice",
        "UPDATE invoice SET discount_percent = 50 WHERE id = :invoice",
        "DELETE FROM invoice WHERE id = :invoice",
        "UPDATE invoice_charge SET amount = 0 WHERE id = :charge",
        "DELETE FROM invoice_charge WHERE id = :charge",
        "DELETE FROM invoice_line WHERE invoice_id = :invoice",
        "INSERT INTO invoice_line (invoice_id, meter, quantity, unit, amount, charge_class) "
        "VALUES (:invoice, 'duration', '1', 'hour', '5', 'usage')",
    ]
    engine = create_engine(normalise_url(database_url))
    ids = {"invoice": invoice_id, "charge": charge_id}
    for statement in forbidden:
        with pytest.raises(DBAPIError, match="finalized"), engine.begin() as connection:
            connection.execute(text(statement), ids)
    engine.dispose()
    assert ledger_image(database_url) == before

    engine = make_engine(database_url)
    with Session(engine) as session:
        invoice = session.get(Invoice, invoice_id)
        assert invoice is not None
        with pytest.raises(InvoiceStateError, match="not a draft"):
            attach_corrections(session, invoice_id)
        void_invoice(session, invoice, "wrong org", datetime.now(UTC))
        session.commit()
        with pytest.raises(InvoiceStateError, match="only finalized or sent"):
            void_invoice(session, invoice, "again", datetime.now(UTC))
    engine.dispose()
    with pytest.raises(DBAPIError, match="finalized"), engine.begin() as connection:
        connection.execute(text("UPDATE invoice SET status = 'sent' WHERE id = :invoice"), ids)


def test_one_live_invoice_per_org_and_period_is_a_database_constraint(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with upstream(make_settings, database_url, orgs=1) as (settings, _base_url):
        close_period(settings, OCTOBER, options=DRAFT)
    copy = (
        "INSERT INTO invoice (run_id, number, status, org_id, org_name, contact_emails, period, "
        "currency, rate_card_id, rate_card_version, rate_card_hash, total, issued_at, "
        "billing_address) SELECT run_id, NULL, 'draft', org_id, org_name, contact_emails, "
        "period, currency, rate_card_id, rate_card_version, rate_card_hash, total, issued_at, "
        "billing_address FROM invoice"
    )
    engine = create_engine(normalise_url(database_url))
    with pytest.raises(DBAPIError, match=r"(?i)unique"), engine.begin() as connection:
        connection.execute(text(copy))
    with engine.begin() as connection:
        connection.execute(text("UPDATE invoice SET status = 'finalized', number = 'X-1'"))
        connection.execute(text("UPDATE invoice SET status = 'void'"))
        connection.execute(text(copy + " WHERE status = 'void'"))
    engine.dispose()
    assert rows(database_url, "SELECT status FROM invoice ORDER BY id") == [("void",), ("draft",)]


def test_runs_record_who_what_and_the_outcome(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    with upstream(make_settings, sqlite_url, orgs=3) as (settings, base_url):
        result = close_period(settings, OCTOBER, trigger="finance")
    detail = run_detail(settings, result.run_id)
    run = detail.run
    assert (run.status, run.operation, run.trigger) == ("succeeded", "close", "finance")
    assert "@" in run.started_by
    assert len(run.usage_checksum or "") == 64
    assert run.upstream_url == base_url
    assert str(OCTOBER.start_unix) in (run.request_params or "")
    assert {card["id"] for card in detail.rate_cards} == {s.rate_card_id for s in result.statements}
    assert all(len(card["content_hash"]) == 64 for card in detail.rate_cards)
    assert run.finalized_count == detail.invoices == len(result.statements)
    totals = database_totals(sqlite_url, str(OCTOBER))
    by_currency: dict[str, Decimal] = {}
    for statement in result.statements:
        by_currency[statement.currency] = (
            by_currency.get(statement.currency, Decimal(0)) + totals[statement.org_id][1]
        )
    assert {c: Decimal(v) for c, v in detail.totals.items()} == by_currency


def test_finalize_in_batches_numbers_in_org_order_and_bills_waiting_corrections(
    make_settings: Callable[..., Settings], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drafts are finalized a batch at a time (2 here, for 5 orgs): numbers stay consecutive
    in org order across batches, waiting corrections land on their org's invoice, and every
    contact of every invoice gets one pending delivery."""
    monkeypatch.setattr("billing.db.ledger.FINALIZE_BATCH", 2)
    with upstream(make_settings, database_url, late=True) as (settings, _base_url):
        close_period(settings, OCTOBER)
    with upstream(make_settings, database_url) as (settings, _base_url):
        close_period(settings, OCTOBER)  # the late days become corrections for November
        close_period(settings, NOVEMBER, options=DRAFT, now=after_november)
    waiting = rows(
        database_url,
        "SELECT DISTINCT org_id FROM invoice_correction WHERE applied_invoice_id IS NULL",
    )
    assert waiting, "the late days must leave corrections waiting for November"
    ((numbered,),) = rows(database_url, "SELECT count(*) FROM invoice WHERE number IS NOT NULL")

    final = finalize_period(settings, NOVEMBER, now=after_november)

    year = after_november().year
    november = rows(
        database_url,
        "SELECT org_id, number, status, contact_emails, id FROM invoice "
        "WHERE period = '2026-11' ORDER BY org_id",
    )
    assert len(november) == 5
    assert [number for _org, number, *_rest in november] == [
        f"INV-{year}-{n:06d}" for n in range(int(str(numbered)) + 1, int(str(numbered)) + 6)
    ]
    assert {s.invoice_number for s in final.statements} == {n for _o, n, *_r in november}
    assert {status for _o, _n, status, *_r in november} <= {"finalized", "sent"}
    applied = rows(
        database_url,
        "SELECT c.org_id, i.org_id FROM invoice_correction c "
        "JOIN invoice i ON i.id = c.applied_invoice_id WHERE c.target_period = '2026-11'",
    )
    assert {org for org, _ in applied} == {org for (org,) in waiting}
    assert all(org == invoice_org for org, invoice_org in applied)
    deliveries = rows(
        database_url,
        "SELECT invoice_id, recipient FROM email_delivery WHERE period = '2026-11' "
        "AND kind = 'statement' ORDER BY invoice_id, recipient",
    )
    expected = sorted(
        (invoice_id, address)
        for _org, _number, _status, emails, invoice_id in november
        for address in str(emails).split(", ")
        if address
    )
    assert deliveries == expected
    assert deliveries, "the example directory gives some orgs contacts"
