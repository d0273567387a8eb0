"""A trail the customer can follow: a void keeps the invoice's files (marked VOID), tells its
contacts once through the outbox, and its replacement says what it replaces everywhere."""

from __future__ import annotations

import csv
import email
import io
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from pydantic import SecretStr

from billing.close.inline import close_period
from billing.config import Settings
from billing.errors import BillingError
from billing.finance.emails import send_pending
from billing.finance.invoices import invoice_detail, void
from billing.periods import BillingPeriod
from billing.statements.csv_files import STATEMENT_COLUMNS
from billing.usage.emulator import running_emulator
from tests.support.agreement import pdf_text, rows

PERIOD = BillingPeriod.parse("2026-10")


def csv_header_and_first_row(path: Path) -> tuple[list[str], list[str]]:
    header, first, *_ = csv.reader(io.StringIO(path.read_text(encoding="utf-8")))
    return header, first


def read_message(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


@pytest.mark.postgres
def test_void_keeps_marked_files_notifies_once_and_the_replacement_says_what_it_replaces(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with running_emulator(orgs=3, seed=4) as base_url:
        settings = make_settings(
            database_url=database_url, mka1_base_url=base_url, mka1_api_key=SecretStr("t")
        )
        first = close_period(settings, PERIOD)
        target = next(s for s in first.statements if s.emails)
        org, number = target.org_id, target.invoice_number
        folder = first.folder
        others = {
            path: path.stat().st_mtime_ns
            for path in folder.glob("*.pdf")
            if path.name not in (f"{org}.pdf", "summary.pdf")
        }
        original_csv = (folder / f"{org}.csv").read_bytes()
        assert (folder / "emails" / f"{number}.eml").exists()

        void(settings, number, "wrong rate card")

        # The void invoice's files are kept under their own name, marked VOID.
        kept_pdf = folder / f"{org}-{number}-VOID.pdf"
        kept_csv = folder / f"{org}-{number}-VOID.csv"
        assert "VOID" in pdf_text(kept_pdf)
        header, row = csv_header_and_first_row(kept_csv)
        assert header == [*STATEMENT_COLUMNS, "x_InvoiceStatus"]
        assert row[header.index("InvoiceId")] == number
        assert row[-1] == "VOID"
        assert not (folder / f"{org}.pdf").exists()
        # Only what changed was written again: no other statement was re-rendered.
        assert {path: path.stat().st_mtime_ns for path in others} == others

        # The notice went through the outbox, once, to each contact sent the statement.
        notices = rows(
            database_url,
            "SELECT recipient, status, attempts FROM email_delivery "
            "WHERE kind = 'void_notice' ORDER BY recipient",
        )
        assert notices == [(address, "sent", 1) for address in sorted(target.emails)]
        notice = read_message(folder / "emails" / f"{number}-void.eml")
        assert number in str(notice["Subject"])
        assert "is cancelled" in body(notice)
        assert list(notice.iter_attachments()) == []
        assert send_pending(settings, PERIOD).messages == 0
        assert rows(
            database_url, "SELECT count(*) FROM email_delivery WHERE kind = 'void_notice'"
        ) == [(len(set(target.emails)),)]

        second = close_period(settings, PERIOD, org_ids=[org])

    replacement = next(s for s in second.statements if s.org_id == org)
    assert replacement.invoice_number != number
    assert replacement.replaces == number
    # Both directions of the link, as `billing invoices show` prints them.
    assert invoice_detail(settings, replacement.invoice_number).replaces == number
    assert invoice_detail(settings, number).replaced_by == replacement.invoice_number
    # The replacement's PDF, CSV and email say so; the original's message and files stand.
    assert f"Replaces {number}" in pdf_text(folder / f"{org}.pdf")
    header, row = csv_header_and_first_row(folder / f"{org}.csv")
    assert header == [*STATEMENT_COLUMNS, "x_Replaces"]
    assert row[-1] == number
    assert original_csv != (folder / f"{org}.csv").read_bytes()
    message = read_message(folder / "emails" / f"{replacement.invoice_number}.eml")
    assert f"Replaces {number}" in body(message)
    names = sorted(str(part.get_filename()) for part in message.iter_attachments())
    assert names == [f"{replacement.invoice_number}.csv", f"{replacement.invoice_number}.pdf"]
    original = read_message(folder / "emails" / f"{number}.eml")
    assert f"Replaces {number}" not in body(original)
    assert kept_pdf.exists()
    assert kept_csv.exists()


def test_ids_are_refused_and_nothing_is_voided(make_settings: Callable[..., Settings]) -> None:
    with running_emulator(orgs=2, seed=3) as base_url:
        settings = make_settings(mka1_base_url=base_url, mka1_api_key=SecretStr("t"))
        result = close_period(settings, PERIOD)
    with pytest.raises(BillingError, match=r"^'1' is not an invoice number: billing void takes"):
        void(settings, "1", "by id")
    with pytest.raises(BillingError, match=r"^no invoice numbered 'INV-1999-000001'"):
        void(settings, "INV-1999-000001", "unknown")
    states = {invoice_detail(settings, s.invoice_number).invoice.status for s in result.statements}
    assert "void" not in states
