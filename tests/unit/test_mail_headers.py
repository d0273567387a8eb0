"""Statement email headers: org data cannot add headers or recipients; bad addresses stop early."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from jinja2 import DictLoader, Environment

from billing.addresses import SmtpServer
from billing.catalog import load_org_directory
from billing.credit_notes import CreditNoteDocumentLine
from billing.email.messages import (
    Letterhead,
    StatementDocuments,
    VoidNotice,
    build_credit_note_email,
    build_statement_email,
    build_void_notice,
    envelope_recipients,
)
from billing.email.smtp import SmtpSender
from billing.email.transports import FileTransport
from billing.errors import ConfigError
from billing.statements.credit_notes import CreditNoteFiles
from billing.statements.formatting import PaymentInstructions
from billing.statements.pdf import template_environment
from tests.support.factories import statement
from tests.support.sample_statements import sample_credit_note

SENDER = "MKA1 Billing <billing@mka1.example>"
ORG_EMAILS = ("billing@acme.example", "ap@acme.example")
ENCODED_BCC = "=?utf-8?q?a=0D=0ABcc=3A_evil=40x.com?="
HOSTILE_NAMES = [
    "Acme\r\nBcc: evil@x.com",
    "Acme\nTo: evil@x.com",
    ENCODED_BCC,
    "=?utf-8?b?QWNtZQ0KQmNjOiBldmlsQHguY29t?=",  # base64 of "Acme\r\nBcc: evil@x.com"
    'Acme" <evil@x.com>, "x',
]
# A subject that shows the org name, as an operator's BILLING_TEMPLATES_DIR might.
NAMED_SUBJECT = Environment(
    loader=DictLoader(
        {
            "email/subject.txt": "Statement {{ s.invoice_number }} for {{ s.org_name }}",
            "email/statement.txt": "Hello {{ s.org_name }}, total {{ total }}",
            "email/statement.html": "<p>Hello {{ s.org_name }}</p>",
        }
    ),
    autoescape=True,
)


def documents(
    org_name: str = "Acme Robotics", emails: tuple[str, ...] = ORG_EMAILS
) -> StatementDocuments:
    base = replace(statement(org_name=org_name), emails=emails)
    return StatementDocuments(base, b"%PDF-1.7 fake", b"meter,amount\r\n", "org-0001")


def wire(message: EmailMessage) -> EmailMessage:
    """The message as a receiver sees it: serialized, then parsed back."""
    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


HEADERS = ["content-type", "date", "from", "message-id", "mime-version", "subject", "to"]


def raw_header_names(message: EmailMessage) -> list[str]:
    """The names of the header lines as written (continuation lines left out), sorted."""
    block = message.as_bytes().split(b"\n\n", 1)[0]
    lines = [line for line in block.split(b"\n") if line and not line[:1].isspace()]
    return sorted(line.split(b":", 1)[0].decode().lower() for line in lines)


@pytest.mark.parametrize("org_name", HOSTILE_NAMES)
def test_org_names_cannot_add_headers_or_recipients(org_name: str) -> None:
    message = build_statement_email(
        documents(org_name), NAMED_SUBJECT, SENDER, "MKA1, Inc.", "en_US"
    )
    received = wire(message)
    assert raw_header_names(message) == HEADERS
    assert sorted(name.lower() for name in received) == HEADERS
    assert len(received.get_all("To") or []) == 1
    assert [a.addr_spec for a in received["To"].addresses] == list(ORG_EMAILS)
    assert "\r" not in str(received["Subject"])
    assert "\n" not in str(received["Subject"])
    assert envelope_recipients(received) == ORG_EMAILS


def test_a_quoted_name_stays_inside_the_subject() -> None:
    message = build_statement_email(
        documents('Acme" <evil@x.com>, "x'), NAMED_SUBJECT, SENDER, "MKA1, Inc.", "en_US"
    )
    received = wire(message)
    assert "evil@x.com" in str(received["Subject"])
    assert [a.addr_spec for a in received["To"].addresses] == list(ORG_EMAILS)


@pytest.mark.parametrize(
    "emails",
    [
        ("billing@acme.example, evil@x.com",),
        ("billing@acme.example\r\nBcc: evil@x.com",),
        ("billing@acme.example\n",),
        ("Evil <evil@x.com>",),
        ("=?utf-8?q?evil=40x.com?=@x.com",),
        ("billing@acme.example", "evil@x.com>"),
        ("not an address",),
    ],
)
def test_tampered_contact_lists_stop_the_email_and_name_the_org(emails: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match=r"^org org-0001: contact address .* is not a plain"):
        build_statement_email(
            documents(emails=emails), NAMED_SUBJECT, SENDER, "MKA1, Inc.", "en_US"
        )


def test_bcc_is_only_in_the_envelope_and_reply_to_is_one_header() -> None:
    message = build_statement_email(
        documents(),
        template_environment(None, "en_US"),
        SENDER,
        "MKA1, Inc.",
        "en_US",
        reply_to="Billing desk <desk@mka1.example>",
    )
    received = wire(message)
    assert received["Bcc"] is None
    assert b"finance@mka1.example" not in message.as_bytes()
    assert [str(h) for h in received.get_all("Reply-To") or []] == [
        "Billing desk <desk@mka1.example>"
    ]
    assert envelope_recipients(received, ("finance@mka1.example", "ap@acme.example")) == (
        "billing@acme.example",
        "ap@acme.example",
        "finance@mka1.example",
    )
    with pytest.raises(ConfigError, match="not a plain email address"):
        envelope_recipients(received, ("Finance <finance@mka1.example>",))


@pytest.mark.parametrize(
    ("sender", "reply_to", "setting"),
    [
        ("MKA1\r\nBcc: evil@x.com <billing@mka1.example>", None, "BILLING_EMAIL_FROM"),
        ("=?utf-8?q?MKA1=0D=0ABcc:_e@x.com?= <billing@mka1.example>", None, "BILLING_EMAIL_FROM"),
        ("billing@mka1.example", "desk@mka1.example\nBcc: e@x.com", "BILLING_EMAIL_REPLY_TO"),
        ("billing@mka1.example", "Desk <desk@mka1>", "BILLING_EMAIL_REPLY_TO"),
    ],
)
def test_a_malformed_sender_or_reply_to_names_its_setting(
    sender: str, reply_to: str | None, setting: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^setting {setting}: "):
        build_statement_email(
            documents(), NAMED_SUBJECT, sender, "MKA1, Inc.", "en_US", reply_to=reply_to
        )


def test_the_message_id_is_derived_from_invoice_and_org() -> None:
    first = build_statement_email(documents(), NAMED_SUBJECT, SENDER, "MKA1, Inc.", "en_US")
    again = build_statement_email(documents(), NAMED_SUBJECT, SENDER, "MKA1, Inc.", "en_US")
    digest = hashlib.sha256(b"INV-2026-000001:org-0001").hexdigest()[:24]
    assert first["Message-ID"] == again["Message-ID"] == f"<statement-{digest}@billing.mka1>"


def test_the_file_backend_still_writes_the_message(tmp_path: Path) -> None:
    message = build_statement_email(documents(), NAMED_SUBJECT, SENDER, "MKA1, Inc.", "en_US")
    result = FileTransport(tmp_path).deliver(message, "org-0001")
    assert result.status == "sent"
    written = Path(result.reply)
    parsed = message_from_bytes(written.read_bytes())
    assert parsed["To"] == ", ".join(ORG_EMAILS)  # what the close test reads
    assert parsed["From"] == SENDER


def test_the_sender_refuses_a_message_whose_headers_would_be_rewritten() -> None:
    """Python's email package (before 3.11.10) writes a decoded encoded word's CR LF raw."""
    message = EmailMessage()
    message["From"] = "billing@mka1.example"
    message["To"] = "billing@acme.example"
    message["Subject"] = ENCODED_BCC
    message.set_content("hello")
    sender = SmtpSender(SmtpServer("127.0.0.1", 9), rate_per_second=None)  # nothing listens
    result = sender.deliver(message, ["billing@acme.example"])
    assert result.status == "failed"
    assert "not sent" in result.detail
    assert sender.connections_opened == 0


def write_orgs(tmp_path: Path, email_yaml: str) -> Path:
    path = tmp_path / "orgs.yaml"
    path.write_text(
        "default_rate_card: standard\norgs:\n"
        "  - org_id: org-7\n    name: Seven\n"
        f"    email: [ok@seven.example, {email_yaml}]\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("email_yaml", "problem"),
    [
        ('"a@seven.example\\r\\nBcc: evil@x.com"', "line break"),
        ('"a@seven.example\\n"', "line break"),
        ("no-at-sign.example", "no @"),
        ('"Seven <a@seven.example>"', "display name"),
        ('"=?utf-8?q?a=40x.com?=@seven.example"', "encoded word"),
        ('"a b@seven.example"', "space"),
        ('"a@@seven.example"', "more than one @"),
        ("a@localhost", "domain"),
    ],
)
def test_the_org_directory_rejects_addresses_that_are_not_plain(
    tmp_path: Path, email_yaml: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_org_directory(write_orgs(tmp_path, email_yaml))
    message = str(raised.value)
    assert "orgs.yaml:5: field orgs.0.email:" in message
    assert "is not a plain email address (name@example.com) of org org-7:" in message
    assert problem in message
    assert "\n" not in message


def test_the_org_directory_keeps_plain_addresses(tmp_path: Path) -> None:
    directory = load_org_directory(write_orgs(tmp_path, "first.last+bills@sub.seven-co.example"))
    assert directory.account_for("org-7").emails == (
        "ok@seven.example",
        "first.last+bills@sub.seven-co.example",
    )


def test_the_statement_email_reads_like_a_billing_email() -> None:
    """Subject: capitalised, invoice number, issuer, amount due, due date; body: the payment
    instructions, the payment reference and the PO; attachments named after the number."""
    base = replace(
        statement(invoice_number="INV-2026-000123", org_name="Acme Robotics"),
        emails=ORG_EMAILS,
        purchase_order="PO-4711/2026",
        due_at=datetime(2026, 12, 31, tzinfo=UTC),
    )
    priced = replace(base, total=Decimal("1234.56"))
    message = build_statement_email(
        StatementDocuments(priced, b"%PDF-1.7 fake", b"a\r\n", "org-0001"),
        template_environment(None, "en_US"),
        SENDER,
        "MKA1, Inc.",
        "en_US",
        payment=PaymentInstructions(
            "IBAN DE89 3704 0044 0532 0130 00; BIC COBADEFFXXX",
            "https://pay.mka1.example/{invoice_number}",
        ),
    )
    received = wire(message)
    assert str(received["Subject"]) == (
        "Invoice INV-2026-000123 from MKA1, Inc.: $1,234.56 due Dec 31, 2026"
    )
    plain = received.get_body(preferencelist=("plain",))
    html = received.get_body(preferencelist=("html",))
    assert plain is not None
    assert html is not None
    text = plain.get_content()
    assert text.startswith("Dear Acme Robotics,\n")
    for expected in (
        "invoice INV-2026-000123 from MKA1, Inc. for your sandbox usage in October 2026",
        "PO number:          PO-4711/2026",
        "Amount due:         $1,234.56",
        "Due date:           Dec 31, 2026",
        "Payment reference:  INV-2026-000123",
        "    IBAN DE89 3704 0044 0532 0130 00\n    BIC COBADEFFXXX",
        "Online: https://pay.mka1.example/INV-2026-000123",
    ):
        assert expected in text, expected
    assert 'href="https://pay.mka1.example/INV-2026-000123"' in html.get_content()
    names = [part.get_filename() for part in received.iter_attachments()]
    assert names == ["INV-2026-000123.pdf", "INV-2026-000123.csv"]


def test_nothing_due_says_so_and_asks_for_no_payment() -> None:
    zero = replace(statement(invoice_number="INV-2026-000124"), emails=ORG_EMAILS)
    zero = replace(zero, total=Decimal("0.00"))
    message = build_statement_email(
        StatementDocuments(zero, b"%PDF", b"a\r\n", "org-0001"),
        template_environment(None, "en_US"),
        SENDER,
        "MKA1, Inc.",
        "en_US",
        payment=PaymentInstructions("IBAN X", ""),
    )
    assert (
        str(message["Subject"]) == "Invoice INV-2026-000124 from MKA1, Inc.: $0.00, nothing to pay"
    )
    plain = message.get_body(preferencelist=("plain",))
    assert plain is not None
    assert "Nothing is due on this invoice." in plain.get_content()
    assert "IBAN" not in plain.get_content()


def test_an_org_name_in_the_shipped_templates_stays_out_of_the_headers() -> None:
    for hostile in HOSTILE_NAMES:
        message = build_statement_email(
            documents(hostile), template_environment(None, "en_US"), SENDER, "MKA1, Inc.", "en_US"
        )
        received = wire(message)
        assert raw_header_names(message) == HEADERS
        assert str(received["Subject"]).startswith("Invoice INV-2026-000001 from MKA1, Inc.: ")
        assert envelope_recipients(received) == ORG_EMAILS


def test_void_notice_and_credit_note_emails_read_like_billing_emails() -> None:
    environment = template_environment(None, "en_US")
    letterhead = Letterhead(SENDER, "MKA1, Inc.", "en_US")
    notice = VoidNotice(
        invoice_number="INV-2026-000100",
        org_id="org-1",
        org_name="Acme\r\nBcc: evil@x.com",
        period="2026-10",
        currency="USD",
        total=Decimal("12.00"),
        voided_at=datetime(2026, 11, 5, tzinfo=UTC),
        recipients=("ap@acme.example",),
        replaced_by="INV-2026-000123",
    )
    void = wire(build_void_notice(notice, environment, letterhead))
    assert str(void["Subject"]) == (
        "Invoice INV-2026-000100 from MKA1, Inc. is cancelled (void): nothing is due on it"
    )
    assert "It is replaced by invoice INV-2026-000123" in void.get_content()
    assert "for October 2026 ($12.00) is cancelled" in void.get_content()
    base = sample_credit_note()
    note = replace(
        base,
        total=Decimal("3.57"),
        lines=(
            *base.lines,
            CreditNoteDocumentLine("de-vat", "VAT 19%", "", "tax", None, None, Decimal("0.57")),
        ),
    )
    files = CreditNoteFiles(note, b"%PDF", b"x\r\n")
    credit = wire(build_credit_note_email(files, "ap@acme.example", environment, letterhead))
    assert str(credit["Subject"]) == (
        "Credit note CN-2026-000003 from MKA1, Inc.: $3.57 credited on invoice INV-2026-000001"
    )
    body = credit.get_body(preferencelist=("plain",))
    assert body is not None
    for expected in ("Net credited:        $3.00", "VAT 19%:             $0.57", "$3.57"):
        assert expected in body.get_content(), expected
    assert [p.get_filename() for p in credit.iter_attachments()] == [
        "CN-2026-000003.pdf",
        "CN-2026-000003.csv",
    ]
