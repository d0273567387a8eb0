"""SMTP delivery against real servers on loopback: aiosmtpd, and a raw socket one that drops."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
from contextlib import closing
from dataclasses import replace
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr

from billing.addresses import SmtpServer, parse_smtp_url
from billing.cli.app import main
from billing.config import Settings
from billing.email.messages import StatementDocuments, build_statement_email, envelope_recipients
from billing.email.smtp import (
    RateLimiter,
    SmtpSender,
    SmtpTransport,
    smtp_retry_delays,
    smtp_sender,
)
from billing.email.transports import open_transport
from billing.errors import ConfigError
from billing.statements.pdf import template_environment
from tests.support.factories import charge, statement
from tests.support.processes import free_port
from tests.support.smtp_servers import (
    PASSWORD,
    RawSmtpServer,
    Received,
    Recorder,
    RunningServer,
)

PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n.\n..\r\n.leading dot\n\x00\xff" * 64
CSV = "meter,amount\r\nsession_hours,12.50\r\n.dot,0.01\r\nZürich,1\r\n".encode()
SENDER = "MKA1 Billing <billing@mka1.example>"
FINANCE = "finance-copy@mka1.example"


def statement_message(
    invoice: str = "INV-2026-000001",
    emails: tuple[str, ...] = ("billing@acme.example", "ap@acme.example"),
) -> EmailMessage:
    """A real statement email (shipped templates) of an org with a non-ASCII name."""
    base = statement(
        invoice_number=invoice,
        org_name="Zürich Robotics",
        charges=(charge("session_hours", "12.50", "unit"),),
    )
    documents = StatementDocuments(replace(base, emails=emails), PDF, CSV, "org-0001")
    return build_statement_email(
        documents, template_environment(None, "en_US"), SENDER, "MKA1, Inc.", "en_US"
    )


def plain_sender(port: int, **options: Any) -> SmtpSender:
    options.setdefault("rate_per_second", None)
    options.setdefault("timeout", 5.0)
    return SmtpSender(SmtpServer("127.0.0.1", port), local_hostname="localhost", **options)


def parsed(received: Received) -> EmailMessage:
    message = message_from_bytes(received.content, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


# --- (a) a statement with attachments, parsed back from the bytes the server got ---------


def test_statement_arrives_with_its_attachments_and_finance_only_in_the_envelope(
    smtp_server: RunningServer,
) -> None:
    message = statement_message()
    recipients = envelope_recipients(message, (FINANCE,))
    with plain_sender(smtp_server.port) as sender:
        result = sender.deliver(message, recipients)

    assert result.status == "sent", result
    assert result.reply == "250 2.0.0 Ok: queued as Q1"
    [received] = smtp_server.recorder.messages
    assert received.mail_from == "billing@mka1.example"
    assert received.rcpt_tos == ("billing@acme.example", "ap@acme.example", FINANCE)
    assert received.content.isascii()  # 8-bit text parts were re-encoded for the wire
    got = parsed(received)
    assert [a.addr_spec for a in got["To"].addresses] == [
        "billing@acme.example",
        "ap@acme.example",
    ]
    assert str(got["From"]) == SENDER
    assert got["Bcc"] is None
    assert FINANCE.encode() not in received.content
    assert got["Message-ID"] == message["Message-ID"]
    attachments = {str(part.get_filename()): part for part in got.iter_attachments()}
    assert sorted(attachments) == ["INV-2026-000001.csv", "INV-2026-000001.pdf"]
    assert attachments["INV-2026-000001.pdf"].get_content_type() == "application/pdf"
    assert attachments["INV-2026-000001.pdf"].get_payload(decode=True) == PDF
    assert attachments["INV-2026-000001.csv"].get_payload(decode=True) == CSV
    body = got.get_body(preferencelist=("plain",))
    assert body is not None
    assert "Zürich Robotics" in body.get_content()


# --- (b) (c) replies: 4xx then 2xx, 5xx, recipients refused one by one ---------------------


def test_451_at_data_is_retried_and_then_sent(smtp_server: RunningServer) -> None:
    smtp_server.recorder.data_replies.append("451 4.3.0 Mailbox busy, try again later")
    slept: list[float] = []
    with plain_sender(smtp_server.port, sleep=slept.append) as sender:
        result = sender.deliver_with_retries(
            statement_message(), ["billing@acme.example"], attempts=3, backoff=[7.5]
        )
    assert (result.status, result.attempts) == ("sent", 2)
    assert result.reply.startswith("250 ")
    assert slept == [7.5]
    assert smtp_server.recorder.data_commands == 2
    assert len(smtp_server.recorder.messages) == 1


def test_550_at_data_is_failed_with_the_reason_and_not_retried(
    smtp_server: RunningServer,
) -> None:
    smtp_server.recorder.data_replies.append("550 5.7.1 Message refused: looks like spam")
    with plain_sender(smtp_server.port, sleep=lambda _: None) as sender:
        result = sender.deliver_with_retries(statement_message(), ["billing@acme.example"], 3)
    assert (result.status, result.attempts) == ("failed", 1)
    assert result.reply == "550 5.7.1 Message refused: looks like spam"
    assert smtp_server.recorder.data_commands == 1


def test_a_recipient_refused_for_good_does_not_stop_the_others(
    smtp_server: RunningServer,
) -> None:
    smtp_server.recorder.rcpt_replies["gone@acme.example"] = "550 5.1.1 No such user"
    with plain_sender(smtp_server.port) as sender:
        result = sender.deliver(statement_message(), ["billing@acme.example", "gone@acme.example"])
    assert result.status == "sent"
    assert result.refused == {"gone@acme.example": "550 5.1.1 No such user"}
    assert "gone@acme.example: 550 5.1.1 No such user" in result.detail
    assert [m.rcpt_tos for m in smtp_server.recorder.messages] == [("billing@acme.example",)]


def test_a_recipient_refused_for_now_postpones_the_whole_message(
    smtp_server: RunningServer,
) -> None:
    smtp_server.recorder.rcpt_replies["full@acme.example"] = "452 4.2.2 Mailbox full"
    smtp_server.recorder.rcpt_replies["nope@acme.example"] = "550 5.1.1 No such user"
    with plain_sender(smtp_server.port) as sender:
        result = sender.deliver(statement_message(), ["billing@acme.example", "full@acme.example"])
        every_refused = sender.deliver(statement_message(), ["nope@acme.example"])
    assert result.status == "retry"
    assert "full@acme.example: 452 4.2.2 Mailbox full" in result.detail
    assert smtp_server.recorder.data_commands == 0  # nobody got it, so nobody gets it twice
    assert every_refused.status == "failed"
    assert every_refused.refused == {"nope@acme.example": "550 5.1.1 No such user"}
    assert smtp_server.recorder.messages == []


@pytest.mark.parametrize("raw_server", ["drop", "silence"], indirect=True)
def test_lost_after_the_content_is_unknown_and_never_retried(raw_server: RawSmtpServer) -> None:
    with plain_sender(raw_server.port, timeout=0.5, sleep=lambda _: None) as sender:
        result = sender.deliver_with_retries(statement_message(), ["billing@acme.example"], 5)
    assert (result.status, result.attempts) == ("unknown", 1)
    assert "may have been delivered" in result.detail
    assert raw_server.contents == 1


@pytest.mark.parametrize("raw_server", ["reply"], indirect=True)
def test_a_connection_the_server_closed_is_replaced_without_losing_the_message(
    raw_server: RawSmtpServer,
) -> None:
    with plain_sender(raw_server.port) as sender:
        first = sender.deliver(statement_message("INV-1"), ["billing@acme.example"])
        second = sender.deliver(statement_message("INV-2"), ["billing@acme.example"])
        opened = sender.connections_opened
    assert (first.status, second.status) == ("sent", "sent")
    assert (opened, raw_server.connections, raw_server.contents) == (2, 2, 2)


def test_connection_refused_is_retry() -> None:
    port = free_port()  # nothing listens there any more
    with plain_sender(port, sleep=lambda _: None) as sender:
        result = sender.deliver_with_retries(statement_message(), ["billing@acme.example"], 2)
    assert (result.status, result.attempts) == ("retry", 2)
    assert "cannot connect" in result.detail


# --- (e) one connection for many messages -------------------------------------------------


@pytest.mark.parametrize(("per_connection", "connections"), [(100, 1), (10, 3)])
def test_connections_are_reused_up_to_the_cap(
    smtp_server: RunningServer, per_connection: int, connections: int
) -> None:
    with plain_sender(smtp_server.port, max_per_connection=per_connection) as sender:
        results = [
            sender.deliver(statement_message(f"INV-{n}"), ["billing@acme.example"])
            for n in range(25)
        ]
    assert {result.status for result in results} == {"sent"}
    received = smtp_server.recorder.messages
    assert len(received) == 25
    assert len({message.peer for message in received}) == connections
    assert sender.connections_opened == connections


# --- (f) the rate limit, on an injected clock ----------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_rate_limiter_spaces_acquisitions_and_allows_bursts() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4, burst=2, clock=clock, sleep=clock.sleep)
    waits = [limiter.acquire() for _ in range(5)]
    assert waits == pytest.approx([0, 0, 0.25, 0.25, 0.25])
    clock.now += 10  # idle: the bucket refills, but only up to the burst
    assert [limiter.acquire() for _ in range(3)] == pytest.approx([0, 0, 0.25])
    assert clock.slept == pytest.approx([0.25] * 4)


def test_sender_waits_between_messages_at_the_configured_rate(
    smtp_server: RunningServer,
) -> None:
    clock = FakeClock()
    with plain_sender(
        smtp_server.port, rate_per_second=2, clock=clock, sleep=clock.sleep
    ) as sender:
        statuses = [
            sender.deliver(statement_message(f"INV-{n}"), ["billing@acme.example"]).status
            for n in range(3)
        ]
    assert statuses == ["sent"] * 3
    assert clock.slept == pytest.approx([0.5, 0.5])


def test_retry_delays_grow_and_are_capped() -> None:
    assert smtp_retry_delays(4) == (5.0, 20.0, 80.0)
    assert smtp_retry_delays(6, first=10, factor=3, cap=100) == (10, 30, 90, 100, 100)
    assert smtp_retry_delays(1) == ()


# --- settings: the URL, and the password that must never show ------------------------------


def test_smtp_url_forms_and_percent_decoded_credentials() -> None:
    starttls = parse_smtp_url("smtp://mailer%40acme:p%40ss%2Fw%3Ard@Mail.Example.com:587")
    assert (starttls.host, starttls.port, starttls.implicit_tls) == ("mail.example.com", 587, False)
    assert starttls.username == "mailer@acme"
    assert starttls.password is not None
    assert starttls.password.get_secret_value() == "p@ss/w:rd"
    assert "p@ss" not in repr(starttls)
    assert str(starttls) == "smtp://mailer@acme:***@mail.example.com:587"
    implicit = parse_smtp_url("smtps://u:pw12345@mail.example.com")
    assert (implicit.port, implicit.implicit_tls) == (465, True)
    local = parse_smtp_url("smtp://127.0.0.1:1025")
    assert (local.port, local.username, local.password) == (1025, None, None)


@pytest.mark.parametrize(
    "url",
    [
        "smtp://mailer:hunter2/x@mail.example.com:587",
        "smtp://mailer:hunter2#x@mail.example.com:587",
        "smtp://mailer:hunter2?x@mail.example.com:587",
        "smtp://mailer:hunter2@mail.example.com:99999",
        "smtp://mailer:hunter2@mail.example.com:587/inbox",
        "smtp://mailer:hunter2@:587",
        "smtp://:hunter2@mail.example.com",
        "http://mailer:hunter2@mail.example.com",
        "mailer:hunter2@mail.example.com",
    ],
)
def test_a_malformed_smtp_url_is_one_line_naming_the_setting_without_the_password(
    url: str,
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings(_env_file=None, smtp_url=url)
    message = str(raised.value)
    assert message.startswith("setting BILLING_SMTP_URL: ")
    assert "\n" not in message
    assert "hunter2" not in message


def test_the_cli_reports_a_malformed_smtp_url_on_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BILLING_SMTP_URL", "smtp://mailer:hunter2/x@mail.example.com:587")
    with pytest.raises(SystemExit) as exited:
        main(["ratecards", "check"])
    assert exited.value.code == 1
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert len(lines) == 1
    assert "BILLING_SMTP_URL" in lines[0]
    assert "hunter2" not in captured.out + captured.err


def test_email_settings_parse_and_check_their_addresses() -> None:
    settings = Settings(
        _env_file=None,
        email_bcc=" finance@mka1.example, audit@mka1.example ",
        email_reply_to="Billing desk <desk@mka1.example>",
        smtp_url="smtp://mailer:pw@mail.example.com:587",
        email_backend="smtp",
    )
    assert settings.email_bcc == ("finance@mka1.example", "audit@mka1.example")
    assert "pw@" not in repr(settings)
    with pytest.raises(ConfigError, match=r"^setting BILLING_EMAIL_BCC: 'Finance <f@x.io>'"):
        Settings(_env_file=None, email_bcc="Finance <f@x.io>")
    with pytest.raises(ConfigError, match=r"^setting BILLING_EMAIL_REPLY_TO: .*line break"):
        Settings(_env_file=None, email_reply_to="a@x.io\r\nBcc: e@x.io")
    with pytest.raises(ConfigError, match=r"smtp needs BILLING_SMTP_URL"):
        Settings(_env_file=None, email_backend="smtp")


def test_bcc_from_the_environment_is_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_EMAIL_BCC", "finance@mka1.example,audit@mka1.example")
    assert Settings(_env_file=None).email_bcc == (
        "finance@mka1.example",
        "audit@mka1.example",
    )


# --- the smtp transport of BILLING_EMAIL_BACKEND (what the outbox sender uses) -------------


def smtp_settings(port: int, **values: Any) -> Settings:
    return Settings(
        _env_file=None,
        email_backend="smtp",
        smtp_url=f"smtp://127.0.0.1:{port}",
        email_bcc=FINANCE,
        smtp_rate_per_second=1000,
        **values,
    )


def test_smtp_backend_sends_with_finance_in_the_envelope(
    smtp_server: RunningServer, tmp_path: Path
) -> None:
    settings = smtp_settings(smtp_server.port)
    transport = open_transport(settings, tmp_path)
    assert isinstance(transport, SmtpTransport)
    with closing(transport):
        result = transport.deliver(statement_message(), "org-0001")
    assert (result.status, result.reply) == ("sent", "250 2.0.0 Ok: queued as Q1")
    [received] = smtp_server.recorder.messages
    assert received.rcpt_tos[-1] == FINANCE
    assert parsed(received)["Bcc"] is None


# --- (g) STARTTLS, implicit TLS and credentials, with a throwaway certificate --------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: no certificate for the TLS tests")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def tls_server(
    certificate: tuple[Path, Path], *, implicit: bool = False
) -> tuple[Controller, Recorder]:
    """aiosmtpd with STARTTLS (or implicit TLS) and AUTH only after TLS."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(*certificate)
    recorder = Recorder()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=free_port(),
        ssl_context=server_context if implicit else None,
        tls_context=None if implicit else server_context,
        authenticator=recorder.authenticate,
        auth_require_tls=True,
    )
    controller.start()
    return controller, recorder


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def test_starttls_then_login_with_percent_encoded_credentials(
    certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    controller, recorder = tls_server(certificate)
    url = f"smtp://mailer:{quote(PASSWORD, safe='')}@127.0.0.1:{controller.port}"
    assert "%40" in url
    assert "%2F" in url
    caplog.set_level(logging.DEBUG)
    try:
        server = parse_smtp_url(url)
        with SmtpSender(
            server, ssl_context=client_context(certificate), local_hostname="localhost"
        ) as sender:
            result = sender.deliver(statement_message(), ["billing@acme.example"])
    finally:
        controller.stop()
    assert result.status == "sent", result
    assert recorder.logins == [("mailer", PASSWORD)]
    assert recorder.tls_sessions == 1
    assert PASSWORD not in repr(result) + repr(sender) + caplog.text


def test_implicit_tls(certificate: tuple[Path, Path]) -> None:
    controller, recorder = tls_server(certificate, implicit=True)
    try:
        server = parse_smtp_url(f"smtps://127.0.0.1:{controller.port}")
        with SmtpSender(
            server, ssl_context=client_context(certificate), local_hostname="localhost"
        ) as sender:
            result = sender.deliver(statement_message(), ["billing@acme.example"])
    finally:
        controller.stop()
    assert result.status == "sent", result
    assert recorder.tls_sessions == 1


def test_wrong_password_fails_without_showing_it(
    certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    controller, recorder = tls_server(certificate)
    caplog.set_level(logging.DEBUG)
    try:
        wrong = quote(f"wrong-{PASSWORD}", safe="")
        server = parse_smtp_url(f"smtp://mailer:{wrong}@127.0.0.1:{controller.port}")
        with SmtpSender(
            server, ssl_context=client_context(certificate), local_hostname="localhost"
        ) as sender:
            result = sender.deliver(statement_message(), ["billing@acme.example"])
    finally:
        controller.stop()
    assert result.status == "failed"
    assert result.reply.startswith("535 ")
    assert recorder.messages == []
    assert PASSWORD not in repr(result) + caplog.text


def test_an_untrusted_certificate_fails(certificate: tuple[Path, Path]) -> None:
    controller, recorder = tls_server(certificate)
    try:
        with SmtpSender(
            parse_smtp_url(f"smtp://127.0.0.1:{controller.port}"), local_hostname="localhost"
        ) as sender:
            result = sender.deliver(statement_message(), ["billing@acme.example"])
    finally:
        controller.stop()
    assert result.status == "failed"
    assert "certificate" in result.detail
    assert recorder.messages == []


def test_credentials_are_never_sent_without_starttls(
    smtp_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = smtp_server.port
    server = parse_smtp_url(f"smtp://mailer:{quote(PASSWORD, safe='')}@127.0.0.1:{port}")
    with SmtpSender(server, local_hostname="localhost") as sender:
        result = sender.deliver(statement_message(), ["billing@acme.example"])
    assert result.status == "failed"
    assert "does not offer STARTTLS" in result.detail
    assert smtp_server.recorder.logins == []
    assert smtp_server.recorder.messages == []
    assert PASSWORD not in repr(result) + caplog.text + repr(server)


def test_the_password_is_hidden_in_settings_and_sender_reprs() -> None:
    settings = Settings(
        _env_file=None, smtp_url=SecretStr(f"smtps://mailer:{quote(PASSWORD, safe='')}@h.io")
    )
    sender = smtp_sender(settings)
    assert str(sender.server) == "smtps://mailer:***@h.io:465"
    assert PASSWORD not in repr(settings) + repr(sender) + repr(sender.server)
