"""Statement email through the outbox against a real SMTP server on loopback: isolation between
orgs, retries, failures, lost replies, a killed sender, no duplicates, explicit resends."""

from __future__ import annotations

import csv
import io
import signal
import time
from collections.abc import Callable
from decimal import Decimal
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from pydantic import SecretStr

from billing.catalog import load_org_directory
from billing.close.inline import close_period
from billing.config import Settings
from billing.email.messages import statement_message_id
from billing.errors import BillingError
from billing.finance.emails import email_status, resend, send_pending
from billing.periods import BillingPeriod
from billing.usage.emulator import running_emulator
from tests.support.agreement import database_totals, pdf_text, rows
from tests.support.processes import run_billing, start_billing
from tests.support.smtp_servers import RawSmtpServer, Received, RunningServer

OCTOBER = BillingPeriod.parse("2026-10")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FINANCE = "finance-copy@mka1.example"


def smtp_settings(
    make_settings: Callable[..., Settings], port: int, base_url: str, **values: object
) -> Settings:
    return make_settings(
        mka1_base_url=base_url,
        mka1_api_key=SecretStr("t"),
        email_backend="smtp",
        smtp_url=SecretStr(f"smtp://127.0.0.1:{port}"),
        smtp_retry_seconds=(0.05,),
        **values,
    )


def parsed(received: Received) -> EmailMessage:
    message = message_from_bytes(received.content, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def attachments(message: EmailMessage) -> dict[str, bytes]:
    found = {}
    for part in message.iter_attachments():
        assert isinstance(part, EmailMessage)
        content = part.get_content()
        found[str(part.get_filename())] = (
            content if isinstance(content, bytes) else content.encode()
        )
    return found


def test_every_message_carries_only_its_own_orgs_statement(
    make_settings: Callable[..., Settings], smtp_server: RunningServer
) -> None:
    with running_emulator(orgs=12, seed=9, page_size=300) as base_url:
        settings = smtp_settings(make_settings, smtp_server.port, base_url, email_bcc=(FINANCE,))
        result = close_period(settings, OCTOBER)
        again = close_period(settings, OCTOBER)
        second_send = send_pending(settings, OCTOBER)
    directory = load_org_directory(settings.orgs)
    totals = database_totals(settings.database_url, str(OCTOBER))
    received = smtp_server.recorder.messages
    with_contact = sorted(s.org_id for s in result.statements if s.emails)
    assert result.orgs_without_contact  # the example directory leaves some orgs without one
    assert len(received) == len(with_contact) == result.emails_sent
    assert again.emails_sent == 0
    assert second_send.messages == 0
    seen_orgs = []
    for item in received:
        message = parsed(item)
        files = attachments(message)
        (pdf_name,) = [name for name in files if name.endswith(".pdf")]  # the invoice number
        org_id = next(org for org, found in totals.items() if f"{found[0]}.pdf" == pdf_name)
        seen_orgs.append(org_id)
        contacts = set(directory.account_for(org_id).emails)
        header_to = {address.addr_spec for address in message["To"].addresses}
        assert header_to == contacts
        assert set(item.rcpt_tos) == contacts | {FINANCE}
        assert "Bcc" not in message
        number, total = totals[org_id][0], totals[org_id][1]
        assert number in str(message["Subject"])
        statement_rows = list(csv.DictReader(io.StringIO(files[f"{number}.csv"].decode())))
        assert {r["BillingAccountId"] for r in statement_rows} == {org_id}
        assert {r["InvoiceId"] for r in statement_rows} == {number}
        assert sum((Decimal(r["BilledCost"]) for r in statement_rows), Decimal(0)) == total
        text = pdf_text(files[pdf_name])
        assert org_id in text
        assert number in text
        others = set(totals) - {org_id}
        assert not any(other in text for other in others)
    assert sorted(seen_orgs) == with_contact
    states = dict(rows(settings.database_url, "SELECT org_id, status FROM invoice"))
    assert states == {s.org_id: "sent" if s.emails else "finalized" for s in result.statements}
    deliveries = email_status(settings, OCTOBER)
    assert {d.status for d in deliveries} == {"sent"}
    assert all(d.detail.startswith("250") for d in deliveries)


def test_451_is_retried_and_550_is_failed_with_the_reason(
    make_settings: Callable[..., Settings], smtp_server: RunningServer
) -> None:
    directory = load_org_directory(EXAMPLES / "orgs.yaml")
    refused = directory.account_for("org-0002").emails
    assert refused
    smtp_server.recorder.data_replies = ["451 4.3.0 try again later"]
    smtp_server.recorder.rcpt_replies = dict.fromkeys(refused, "550 5.1.1 mailbox unavailable")
    with running_emulator(orgs=2, seed=9, page_size=300) as base_url:
        settings = smtp_settings(make_settings, smtp_server.port, base_url)
        result = close_period(settings, OCTOBER)
    by_org: dict[str, list[str]] = {}
    for delivery in email_status(settings, OCTOBER):
        by_org.setdefault(delivery.org_id, []).append(f"{delivery.status}: {delivery.detail}")
    assert result.email_outcomes == {"sent": 1, "failed": 1}
    assert [entry.split(":")[0] for entry in by_org["org-0001"]] == ["sent"] * len(
        by_org["org-0001"]
    )
    assert smtp_server.recorder.data_commands == 2  # the 451, then the message itself
    assert len(by_org["org-0002"]) == len(refused)
    assert all(
        entry.startswith("failed") and "550 5.1.1 mailbox unavailable" in entry
        for entry in by_org["org-0002"]
    )
    states = dict(rows(settings.database_url, "SELECT org_id, status FROM invoice"))
    assert states == {"org-0001": "sent", "org-0002": "finalized"}
    # A failed delivery is not retried by the next send: a person fixes the address first.
    assert send_pending(settings, OCTOBER).messages == 0


def test_a_refused_message_is_recorded_failed_naming_org_and_message(
    make_settings: Callable[..., Settings], smtp_server: RunningServer
) -> None:
    """A refusal of the content, as the outbox sender records it: on the org's deliveries, with
    the server's reply and the Message-ID, failed and never sent again by itself."""
    smtp_server.recorder.data_replies.append("554 5.7.0 Rejected by policy")
    with running_emulator(orgs=1, seed=9, page_size=300) as base_url:
        settings = smtp_settings(make_settings, smtp_server.port, base_url)
        result = close_period(settings, OCTOBER)
        again = send_pending(settings, OCTOBER)
    [statement] = result.statements
    recorded = rows(
        settings.database_url,
        "SELECT org_id, status, server_reply, message_id FROM email_delivery",
    )
    assert len(recorded) == len(statement.emails) > 0
    assert result.email_outcomes == {"failed": 1}
    for org_id, status, reply, message_id in recorded:
        retryable = status == "pending"
        assert (status, reply, retryable) == ("failed", "554 5.7.0 Rejected by policy", False)
        assert org_id == "org-0001"
        assert message_id == statement_message_id(statement)
    assert again.messages == 0
    assert smtp_server.recorder.data_commands == 1


@pytest.mark.parametrize("raw_server", ["drop"], indirect=True)
def test_a_reply_lost_after_the_content_is_unknown_and_never_sent_again(
    make_settings: Callable[..., Settings], raw_server: RawSmtpServer
) -> None:
    with running_emulator(orgs=1, seed=9, page_size=300) as base_url:
        settings = smtp_settings(make_settings, raw_server.port, base_url)
        result = close_period(settings, OCTOBER)
        assert result.email_outcomes == {"unknown": 1}
        assert send_pending(settings, OCTOBER).messages == 0
    assert raw_server.contents == 1
    deliveries = email_status(settings, OCTOBER)
    assert {d.status for d in deliveries} == {"unknown"}
    assert len({d.message_id for d in deliveries}) == 1  # one message to all the contacts
    assert deliveries[0].message_id.startswith("<statement-")


def test_a_sender_killed_while_waiting_for_the_reply_leaves_unknown_not_a_resend(
    make_settings: Callable[..., Settings], smtp_server: RunningServer, tmp_path: Path
) -> None:
    hanging = RawSmtpServer("silence", silence_seconds=60)
    try:
        with running_emulator(orgs=1, seed=9, page_size=300) as base_url:
            settings = smtp_settings(make_settings, hanging.port, base_url)
            close_period(settings.model_copy(update={"email_backend": "none"}), OCTOBER)
        rows_before = rows(settings.database_url, "SELECT status FROM email_delivery")
        # The `none` backend "sent" them: queue a real delivery by resending through SMTP.
        assert rows_before
        assert {status for (status,) in rows_before} == {"sent"}
        number = str(rows(settings.database_url, "SELECT number FROM invoice")[0][0])
        contact = str(rows(settings.database_url, "SELECT recipient FROM email_delivery")[0][0])
        env = {
            "BILLING_DATABASE_URL": settings.database_url,
            "BILLING_OUTPUT_DIR": str(settings.output_dir),
            "BILLING_EMAIL_BACKEND": "smtp",
            "BILLING_SMTP_URL": f"smtp://127.0.0.1:{hanging.port}",
            "BILLING_BROKER_URL": "",
        }
        sender = start_billing("email", "resend", number, "--to", contact, env=env, cwd=tmp_path)
        deadline = time.monotonic() + 60
        while hanging.contents == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hanging.contents == 1  # the content went over; the reply never comes
        sender.send_signal(signal.SIGKILL)
        sender.wait(timeout=10)
    finally:
        hanging.close()
    assert rows(
        settings.database_url, "SELECT status FROM email_delivery WHERE kind = 'resend'"
    ) == [("sending",)]
    env["BILLING_SMTP_URL"] = f"smtp://127.0.0.1:{smtp_server.port}"
    again = run_billing("email", "send", "--period", "2026-10", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "cut off before the server replied" in again.stdout
    assert smtp_server.recorder.messages == []
    assert rows(
        settings.database_url, "SELECT status FROM email_delivery WHERE kind = 'resend'"
    ) == [("unknown",)]


def test_resend_goes_only_to_a_contact_of_the_org_and_is_recorded(
    make_settings: Callable[..., Settings], smtp_server: RunningServer
) -> None:
    with running_emulator(orgs=1, seed=9, page_size=300) as base_url:
        settings = smtp_settings(make_settings, smtp_server.port, base_url)
        result = close_period(settings, OCTOBER)
    statement = result.statements[0]
    with pytest.raises(BillingError, match="is not a billing contact of org"):
        resend(settings, statement.invoice_number, "someone@elsewhere.example")
    report = resend(settings, statement.invoice_number, statement.emails[0])
    assert report.sent == 1
    original, again = smtp_server.recorder.messages
    assert again.rcpt_tos == (statement.emails[0],)
    assert parsed(original)["Message-ID"] != parsed(again)["Message-ID"]
    recorded = rows(
        settings.database_url,
        "SELECT recipient, status, requested_by FROM email_delivery WHERE kind = 'resend'",
    )
    assert len(recorded) == 1
    assert recorded[0][:2] == (statement.emails[0], "sent")
    assert "@" in str(recorded[0][2])
