"""Credit notes on SQLite and PostgreSQL: gapless numbers under concurrent creation, never more
than the invoice, exact splits, PDF = CSV = database, each email once through the outbox, the
credit balance grant, the void refusal, and the `billing` commands end to end."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlmodel import col, select

from billing.close.inline import close_period
from billing.config import Settings
from billing.db.engine import ledger, ledger_engine
from billing.db.ledger import invoice_number, reserve_numbers
from billing.db.locks import period_lock, write_transaction
from billing.db.tables import BillingRun, Invoice, InvoiceCharge, InvoiceLine
from billing.errors import BillingError, InvoiceStateError
from billing.finance.credit_notes import (
    CreditRequest,
    create_credit_note,
    credit_note_detail,
    issue_credit_note,
    list_credit_notes,
)
from billing.finance.emails import email_status, send_pending
from billing.finance.invoices import invoice_detail, void
from billing.money import at_minor_units, format_minor
from billing.periods import BillingPeriod
from billing.statements.formatting import money
from billing.states import CreditSettlement
from billing.usage.emulator import running_emulator
from billing.wording import plural
from tests.support.agreement import pdf_text, rows
from tests.support.processes import run_billing
from tests.support.smtp_servers import RunningServer

OCTOBER = BillingPeriod.parse("2026-10")
ISSUED_AT = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 5, 9, 30, tzinfo=UTC)
CONTACTS = ("ap@hand.example", "cfo@hand.example")

# The hand-made invoice: (class, meter, key, user, amount). Usage 23.00, a reviewer's
# adjustment of -1.00 on duration key-a/alice, and 2.00 of credit applied: total 20.00, of
# which 22.00 is on creditable lines (usage, adjustment, correction; never the credit).
HAND_LINES = (
    ("usage", "duration", "key-a", "alice", "10.00"),
    ("usage", "duration", "key-a", "bob", "5.00"),
    ("usage", "duration", "key-b", None, "5.00"),
    ("usage", "memory", "key-a", "alice", "3.00"),
    ("adjustment", "duration", "key-a", "alice", "-1.00"),
    ("credit", "credit", None, None, "-2.00"),
)
DESCRIPTIONS = {"duration": "Session time", "memory": "Reserved memory", "credit": "Credit applied"}


def seed_invoice(
    database_url: str,
    org_id: str = "org-hand",
    lines: Sequence[tuple[str, str, str | None, str | None, str]] = HAND_LINES,
    *,
    finalize: bool = True,
    contacts: Sequence[str] = CONTACTS,
) -> str:
    """A USD invoice of October with exactly these lines (one charge per class and meter),
    finalized with the next invoice number as the ledger does; returns its number (or the
    draft's id)."""
    engine = ledger_engine(database_url)
    try:
        with write_transaction(engine) as session:
            run = BillingRun(
                period=str(OCTOBER),
                status="succeeded",
                trigger="test",
                started_at=ISSUED_AT,
                upstream_url="test://hand",
            )
            session.add(run)
            session.flush()
            total = sum((Decimal(amount) for *_, amount in lines), Decimal(0))
            invoice = Invoice(
                run_id=run.id or 0,
                org_id=org_id,
                org_name="Hand & Co <Ltd>",
                contact_emails=", ".join(contacts),
                period=str(OCTOBER),
                currency="USD",
                rate_card_id="standard",
                rate_card_version="2026-07-01",
                rate_card_hash="0" * 64,
                total=total,
                issued_at=ISSUED_AT,
                billing_address="1 Hand Street\nSpringfield",
            )
            session.add(invoice)
            session.flush()
            charges: dict[tuple[str, str], Decimal] = {}
            for charge_class, meter, key, user, amount in lines:
                charges[(charge_class, meter)] = charges.get((charge_class, meter), Decimal(0))
                charges[(charge_class, meter)] += Decimal(amount)
                session.add(
                    InvoiceLine(
                        invoice_id=invoice.id or 0,
                        meter=meter,
                        api_key_id=key,
                        user_id=user,
                        quantity=Decimal(1),
                        unit="hour",
                        amount=Decimal(amount),
                        charge_class=charge_class,
                    )
                )
            for position, ((charge_class, meter), amount) in enumerate(charges.items()):
                session.add(
                    InvoiceCharge(
                        invoice_id=invoice.id or 0,
                        position=position,
                        meter=meter,
                        description=DESCRIPTIONS[meter],
                        unit="hour",
                        quantity=Decimal(1),
                        included=Decimal(0),
                        billable=Decimal(1),
                        pricing="by hand",
                        amount=amount,
                        charge_class=charge_class,
                    )
                )
            session.flush()
            invoice_id = invoice.id or 0
        if not finalize:
            return str(invoice_id)
        with write_transaction(engine) as session:
            number = invoice_number(2026, reserve_numbers(session, 2026, 1))
            stored = session.get(Invoice, invoice_id)
            assert stored is not None
            stored.number, stored.status, stored.finalized_at = number, "finalized", ISSUED_AT
        return number
    finally:
        engine.dispose()


def credit_lines(database_url: str, number: str) -> list[tuple[str, str | None, str | None, str]]:
    """A credit note's lines as (meter, key, user, amount) with the amount at 2 places."""
    found = rows(
        database_url,
        "SELECT n.number, l.meter, l.api_key_id, l.user_id, l.amount FROM credit_note_line l "
        "JOIN credit_note n ON n.id = l.credit_note_id ORDER BY l.id",
    )
    return [
        (str(meter), key, user, f"{Decimal(str(amount)):.2f}")  # type: ignore[misc]
        for note, meter, key, user, amount in found
        if note == number
    ]


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def assert_documents_agree(database_url: str, folder: Path, number: str) -> Decimal:
    """The credit note's PDF, CSV and database rows say the same, to the cent; returns its
    total."""
    ((total, reason, settlement, invoice, org, currency),) = [
        found[1:]
        for found in rows(
            database_url,
            "SELECT n.number, n.total, n.reason, n.settlement, i.number, n.org_id, n.currency "
            "FROM credit_note n JOIN invoice i ON i.id = n.invoice_id",
        )
        if found[0] == number
    ]
    total = at_minor_units(Decimal(str(total)), str(currency))
    lines = credit_lines(database_url, number)
    assert sum((Decimal(amount) for *_, amount in lines), Decimal(0)) == total
    written = csv_rows((folder / f"{org}-{number}.csv").read_bytes())
    assert sum((Decimal(row["BilledCost"]) for row in written), Decimal(0)) == -total
    assert {row["InvoiceId"] for row in written} == {invoice}
    assert {row["x_CreditNote"] for row in written} == {number}
    assert {row["ChargeCategory"] for row in written} == {"Credit"}
    assert {row["x_Settlement"] for row in written} == {settlement}
    assert sorted(
        (row["x_Meter"], row["SubAccountId"] or None, row["x_UserId"] or None, row["BilledCost"])
        for row in written
    ) == sorted((meter, key, user, f"-{amount}") for meter, key, user, amount in lines)
    for row in written:
        assert row["BilledCost"] == row["EffectiveCost"] == row["ListCost"]
    text = pdf_text((folder / f"{org}-{number}.pdf").read_bytes())
    assert f"Credit note {number}" in text
    assert str(invoice) in text
    assert money(total, str(currency), "en_US") in text
    assert str(reason) in text
    assert ("Refunded" if settlement == "refund" else "Added to your credit balance") in text
    for amount in {amount for *_, amount in lines}:
        assert money(Decimal(amount), str(currency), "en_US") in text
    return total


def request(reason: str = "outage on Oct 3", **values: object) -> CreditRequest:
    return CreditRequest(reason=reason, **values)  # type: ignore[arg-type]


def test_lines_and_amounts_split_exactly_by_hand_and_pdf_csv_database_agree(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    number = seed_invoice(database_url)
    folder = settings.output_dir / str(OCTOBER)

    first = create_credit_note(
        settings,
        number,
        request(lines=("duration:key-a:alice=4.50", "memory=1.00")),
        now=lambda: NOW,
    )
    # A meter alone splits over its lines by largest remainder of what each still has:
    # alice 4.50 (9.00 less 4.50), bob 5.00, key-b 5.00: 7.00 -> 2.17, 2.42, 2.41.
    second = create_credit_note(
        settings, number, request(lines=("duration=7.00",)), now=lambda: NOW
    )
    # --amount over every line still creditable: 2.33, 2.58, 2.59 and memory 2.00 -> 3.00 is
    # 0.74, 0.81, 0.82, 0.63 (the two largest remainders get the two cents left over).
    third = create_credit_note(
        settings,
        number,
        request(amount="3.00", settlement=CreditSettlement.REFUND),
        now=lambda: NOW,
    )

    numbers = [c.document.number for c in (first, second, third)]
    assert numbers == ["CN-2026-000001", "CN-2026-000002", "CN-2026-000003"]
    assert credit_lines(database_url, numbers[0]) == [
        ("duration", "key-a", "alice", "4.50"),
        ("memory", "key-a", "alice", "1.00"),
    ]
    assert credit_lines(database_url, numbers[1]) == [
        ("duration", "key-a", "alice", "2.17"),
        ("duration", "key-a", "bob", "2.42"),
        ("duration", "key-b", None, "2.41"),
    ]
    assert credit_lines(database_url, numbers[2]) == [
        ("duration", "key-a", "alice", "0.74"),
        ("duration", "key-a", "bob", "0.81"),
        ("duration", "key-b", None, "0.82"),
        ("memory", "key-a", "alice", "0.63"),
    ]
    totals = [assert_documents_agree(database_url, folder, n) for n in numbers]
    assert totals == [Decimal("5.50"), Decimal("7.00"), Decimal("3.00")]
    # The credit-note CSV has the statement's columns and two of its own.
    header = next(csv.reader(io.StringIO((folder / f"org-hand-{numbers[0]}.csv").read_text())))
    assert header[-2:] == ["x_CreditNote", "x_Settlement"]

    # --credit grants the total to the org's balance; --refund only records it.
    assert sorted(
        (str(kind), f"{Decimal(str(amount)):.2f}", n)
        for kind, amount, n in rows(
            database_url,
            "SELECT e.kind, e.amount, n.number FROM credit_entry e "
            "JOIN credit_note n ON n.id = e.credit_note_id",
        )
    ) == [("grant", "5.50", numbers[0]), ("grant", "7.00", numbers[1])]
    assert rows(database_url, "SELECT count(*) FROM credit_entry") == [(2,)]

    # The invoice totals 20.00 (2.00 of credit applied): 15.50 is credited, 4.50 is left,
    # although its lines still have 6.50.
    with pytest.raises(BillingError) as over:
        create_credit_note(settings, number, request(amount="5.00"), now=lambda: NOW)
    assert str(over.value) == (
        f"{number} totals 20.00 USD and its credit notes CN-2026-000001, CN-2026-000002, "
        "CN-2026-000003 already credit 15.50 USD: at most 4.50 USD can still be credited, "
        "not 5.00 USD"
    )
    with pytest.raises(BillingError) as line_over:
        create_credit_note(
            settings, number, request(lines=("memory:key-a:alice=1.38",)), now=lambda: NOW
        )
    assert str(line_over.value) == (
        f"{number}: line 'memory:key-a:alice' has 1.37 USD still creditable (charged 3.00 USD, "
        "credited 1.63 USD), less than the 1.38 USD asked"
    )
    with pytest.raises(BillingError, match=r"has more than 2 decimal places, the most USD has"):
        create_credit_note(settings, number, request(amount="1.001"), now=lambda: NOW)
    with pytest.raises(BillingError, match=r"has no line 'storage' to credit"):
        create_credit_note(settings, number, request(lines=("storage=1",)), now=lambda: NOW)
    assert len(list_credit_notes(settings, invoice=number)) == 3
    assert [n.number for n in invoice_detail(settings, number).credit_notes] == numbers

    # What is left can be credited, to the cent, and not a cent more.
    create_credit_note(settings, number, request(amount="4.50"), now=lambda: NOW)
    with pytest.raises(BillingError, match=r"at most 0.00 USD can still be credited"):
        create_credit_note(settings, number, request(amount="0.01"), now=lambda: NOW)


def test_numbers_are_gapless_and_unique_when_created_at_once_on_different_invoices(
    database_url: str,
) -> None:
    invoices = [seed_invoice(database_url, f"org-{index:02d}") for index in range(6)]
    numbers = run_at_once(database_url, [(number, request(amount="1.00")) for number in invoices])
    assert sorted(n for n in numbers if isinstance(n, str)) == [
        f"CN-2026-{index:06d}" for index in range(1, 7)
    ]
    assert rows(database_url, "SELECT year, last_number FROM credit_note_number_sequence") == [
        (2026, 6)
    ]
    stored = rows(
        database_url,
        "SELECT n.number, i.number FROM credit_note n JOIN invoice i ON i.id = n.invoice_id",
    )
    assert len({cn for cn, _ in stored}) == 6
    assert sorted(inv for _, inv in stored) == sorted(invoices)


def test_concurrent_credit_notes_of_one_invoice_never_exceed_its_total(
    database_url: str,
) -> None:
    # 30.00 of usage less 10.00 of credit applied: the invoice's total (20.00), not its
    # lines, is the limit.
    number = seed_invoice(
        database_url,
        lines=(
            ("usage", "duration", "key-a", "alice", "30.00"),
            ("credit", "credit", None, None, "-10.00"),
        ),
    )
    outcomes = run_at_once(database_url, [(number, request(amount="4.00"))] * 6)

    created = sorted(o for o in outcomes if isinstance(o, str))
    refused = [o for o in outcomes if isinstance(o, BillingError)]
    assert created == [f"CN-2026-{index:06d}" for index in range(1, 6)]
    assert len(refused) == 1
    assert str(refused[0]) == (
        f"{number} totals 20.00 USD and its credit notes {', '.join(created)} already credit "
        "20.00 USD: at most 0.00 USD can still be credited, not 4.00 USD"
    )
    totals = rows(database_url, "SELECT total FROM credit_note")
    assert sum((Decimal(str(total)) for (total,) in totals), Decimal(0)) == Decimal("20.00")


def run_at_once(
    database_url: str, requests: Sequence[tuple[str, CreditRequest]]
) -> list[str | BillingError]:
    """Each request in its own thread with its own engine, all released at once; returns the
    numbers created, or the refusals."""
    gate = threading.Barrier(len(requests))
    outcomes: list[str | BillingError] = [BillingError("not run")] * len(requests)

    def create(index: int, number: str, wanted: CreditRequest) -> None:
        engine = ledger_engine(database_url, migrate=False)
        try:
            gate.wait(timeout=30)
            issued = issue_credit_note(engine, number, wanted, created_by="test@host", now=NOW)
            outcomes[index] = issued.number
        except BillingError as error:
            outcomes[index] = error
        finally:
            engine.dispose()

    threads = [
        threading.Thread(target=create, args=(index, number, wanted))
        for index, (number, wanted) in enumerate(requests)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all("not run" not in str(outcome) for outcome in outcomes)
    return outcomes


def parsed(content: bytes) -> EmailMessage:
    message = message_from_bytes(content, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_each_contact_gets_the_credit_note_once_with_both_files(
    make_settings: Callable[..., Settings], database_url: str, smtp_server: RunningServer
) -> None:
    settings = make_settings(
        database_url=database_url,
        email_backend="smtp",
        smtp_url=SecretStr(f"smtp://127.0.0.1:{smtp_server.port}"),
        smtp_retry_seconds=(0.05,),
    )
    number = seed_invoice(database_url)
    created = create_credit_note(settings, number, request(amount="2.00"), now=lambda: NOW)
    cn = created.document.number

    received = smtp_server.recorder.messages
    assert sorted(item.rcpt_tos for item in received) == [(c,) for c in CONTACTS]
    for item in received:
        message = parsed(item.content)
        assert [a.addr_spec for a in message["To"].addresses] == list(item.rcpt_tos)
        assert cn in str(message["Subject"])
        assert number in str(message["Subject"])
        files = {
            str(part.get_filename()): part.get_content() for part in message.iter_attachments()
        }
        assert sorted(files) == [f"{cn}.csv", f"{cn}.pdf"]
        assert f"Credit note {cn}" in pdf_text(files[f"{cn}.pdf"])
        assert sum(
            (Decimal(r["BilledCost"]) for r in csv_rows(files[f"{cn}.csv"].encode())), Decimal(0)
        ) == Decimal("-2.00")
    assert len({parsed(item.content)["Message-ID"] for item in received}) == 2

    # Nothing more goes out on a second pass; the outbox shows them sent.
    assert send_pending(settings, OCTOBER).messages == 0
    assert len(received) == 2
    sent = [row for row in email_status(settings, OCTOBER) if row.kind == "credit_note"]
    assert sorted((row.recipient, row.status, row.credit_note) for row in sent) == [
        (contact, "sent", cn) for contact in CONTACTS
    ]
    assert {e.status for e in credit_note_detail(settings, cn).emails} == {"sent"}

    # While another run holds the period the emails wait in the outbox; `billing email send`
    # sends them once.
    with ledger(settings) as engine, period_lock(engine, str(OCTOBER)):
        waiting = create_credit_note(
            settings, number, request(amount="1.00"), now=lambda: NOW, wait_seconds=0
        )
    assert waiting.emails is None
    assert len(received) == 2
    assert {e.status for e in credit_note_detail(settings, waiting.document.number).emails} == {
        "pending"
    }
    assert send_pending(settings, OCTOBER).messages == 2
    assert send_pending(settings, OCTOBER).messages == 0
    later = [parsed(item.content) for item in received[2:]]
    assert len(later) == 2
    assert all(waiting.document.number in str(m["Subject"]) for m in later)


def test_a_void_of_a_credited_invoice_is_refused_and_drafts_and_void_invoices_are_not_credited(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    number = seed_invoice(database_url)
    for amount in ("5.00", "3.25"):
        create_credit_note(settings, number, request(amount=amount), now=lambda: NOW)

    with pytest.raises(InvoiceStateError) as refused:
        void(settings, number, "wrong card")
    assert str(refused.value) == (
        f"{number} has credit notes CN-2026-000001, CN-2026-000002; a void would credit the "
        "customer twice: issue a credit note for the rest instead (billing credit-notes create "
        f"{number} --amount 11.75)"
    )
    assert invoice_detail(settings, number).invoice.status == "finalized"

    draft = seed_invoice(database_url, "org-draft", finalize=False)
    with pytest.raises(InvoiceStateError, match=r"is a draft, not yet issued: adjust it instead"):
        create_credit_note(settings, draft, request(amount="1.00"), now=lambda: NOW)
    other = seed_invoice(database_url, "org-void")
    void(settings, other, "duplicate")
    with pytest.raises(InvoiceStateError, match=r"is void: nothing is due on it"):
        create_credit_note(settings, other, request(amount="1.00"), now=lambda: NOW)
    assert [n.number for n in list_credit_notes(settings)] == ["CN-2026-000001", "CN-2026-000002"]


def test_credit_note_of_a_closed_month_through_the_billing_command(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    with running_emulator(orgs=3, seed=4) as base_url:
        settings = make_settings(
            database_url=database_url, mka1_base_url=base_url, mka1_api_key=SecretStr("t")
        )
        result = close_period(settings, OCTOBER)
    statement = next(s for s in result.statements if s.emails)
    number, org = statement.invoice_number, statement.org_id
    line = statement.lines[0]
    env = {
        "BILLING_DATABASE_URL": database_url,
        "BILLING_OUTPUT_DIR": str(settings.output_dir),
        "BILLING_EMAIL_BACKEND": "file",
        "BILLING_BROKER_URL": "",
        "MKA1_API_KEY": "t",
    }
    spec = f"{line.meter}:{line.api_key_id or ''}:{line.user_id or ''}=0.50"

    created = run_billing(
        "credit-notes",
        "create",
        number,
        "--line",
        spec,
        "--amount",
        "1",
        "--reason",
        "x",
        env=env,
        cwd=tmp_path,
    )
    assert created.returncode == 1
    assert created.stderr.strip().splitlines() == [
        "error: say what to credit: --line METER[:KEY[:USER]]=AMOUNT (one or more), or "
        "--amount X to split over every line of the invoice, not both"
    ]
    created = run_billing(
        "credit-notes",
        "create",
        number,
        "--line",
        spec,
        "--reason",
        "SLA breach, Oct 3",
        "--refund",
        env=env,
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    cn = "CN-" + number.split("-")[1] + "-000001"
    assert created.stdout.splitlines()[0].startswith(f"{cn} credits ")
    assert f"of {number} ({org}, 2026-10): refunded" in created.stdout.splitlines()[0]
    contacts = len(set(statement.emails))
    assert f"emails: {plural(contacts, 'message')} ({contacts} sent)" in created.stdout
    assert_documents_agree(database_url, settings.output_dir / str(OCTOBER), cn)

    listed = run_billing(
        "credit-notes", "list", "--invoice", number, "--format", "json", env=env, cwd=tmp_path
    )
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert (entry["number"], entry["invoice"], entry["org"], entry["total"]) == (
        cn,
        number,
        org,
        "0.50",
    )
    assert entry["settlement"] == "refund"

    shown = run_billing("credit-notes", "show", cn, "--format", "json", env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["lines"] == [
        {
            "api_key": line.api_key_id,
            "user": line.user_id,
            "meter": line.meter,
            "charge": detail["lines"][0]["charge"],
            "class": "usage",
            "currency": statement.currency,
            "amount": "0.50",
        }
    ]
    assert detail["credit_grant"] is None
    assert sorted(e["recipient"] for e in detail["emails"]) == sorted(set(statement.emails))
    assert {e["state"] for e in detail["emails"]} == {"sent"}
    table = run_billing("credit-notes", "show", cn, env=env, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "reason: SLA breach, Oct 3" in table.stdout
    assert "settlement: refund" in table.stdout

    invoice = run_billing("invoices", "show", number, "--format", "json", env=env, cwd=tmp_path)
    assert invoice.returncode == 0, invoice.stderr
    [noted] = json.loads(invoice.stdout)["credit_notes"]
    assert (noted["number"], noted["total"], noted["settlement"]) == (cn, "0.50", "refund")
    invoice_table = run_billing("invoices", "show", number, env=env, cwd=tmp_path)
    assert f"credit note {cn} of " in invoice_table.stdout

    voided = run_billing("void", number, "--reason", "wrong", env=env, cwd=tmp_path)
    assert voided.returncode == 1
    assert voided.stderr.strip().splitlines() == [
        f"error: {number} has credit notes {cn}; a void would credit the customer twice: issue "
        f"a credit note for the rest instead (billing credit-notes create {number} --amount "
        f"{format_minor(statement.total - Decimal('0.50'), statement.currency)})"
    ]
    with ledger(settings) as engine, write_transaction(engine) as session:
        status = session.execute(
            select(col(Invoice.status)).where(col(Invoice.number) == number)
        ).scalar_one()
    assert status in ("finalized", "sent")
