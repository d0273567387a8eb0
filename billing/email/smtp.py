"""The smtp transport: SMTP delivery over one reused connection, rate-limited, classified.

`SmtpSender.deliver` returns a `DeliveryResult` whose `status` is one of:

    sent     the server answered 2xx to the message content; `reply` holds its words
             ("250 2.0.0 Ok: queued as ...") for the mail log
    retry    nothing was accepted: a 4xx reply at any step, or the connection was refused,
             reset or timed out before the message content was completely transmitted
    failed   a 5xx reply (the reason is in `reply` and `detail`), or a set-up problem that
             trying again cannot fix (untrusted TLS certificate, credentials without STARTTLS)
    unknown  the content was transmitted but the connection dropped or timed out before the
             server's final reply: the message may have been delivered. Never retry it
             automatically; a person checks the mail log (by Message-ID) first.

Recipients refused one by one at RCPT TO:

- 5xx for some while others are accepted: the message goes to the accepted ones, the status is
  "sent" and `refused` maps each refused address to the server's reply (it will never work
  as written; the org directory needs fixing).
- 4xx for any recipient: the transaction is abandoned (RSET) and the status is "retry", so a
  later attempt reaches everyone in one message and nobody gets it twice.
- every recipient refused: "failed" when all refusals are 5xx, else "retry".

The password of the SMTP URL never appears in a log line, an error, a repr or a result.

`SmtpTransport` is the `Transport` (billing.email.transports) of BILLING_EMAIL_BACKEND=smtp:
an SmtpSender for the settings, BILLING_EMAIL_BCC in every envelope, and a "retry" result tried
again after each wait of BILLING_SMTP_RETRY_SECONDS. There is no database here.

What counts as a plain address is decided in `billing.addresses`.
"""

from __future__ import annotations

import copy
import logging
import re
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email import policy
from email.errors import MessageError
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from functools import partial
from types import TracebackType
from typing import Literal
from urllib.parse import quote

from pydantic import SecretStr

from billing.addresses import SmtpServer, parse_smtp_url, plain_address_problem
from billing.config import Settings
from billing.email.messages import envelope_recipients
from billing.errors import ConfigError

log = logging.getLogger(__name__)

# How one hand-over went (what a Transport reports); not the outbox row's DeliveryStatus.
SendStatus = Literal["sent", "retry", "failed", "unknown"]

# The wire form: CRLF line ends and 7-bit bodies (8-bit text parts are re-encoded).
_WIRE_POLICY = policy.SMTP.clone(cte_type="7bit")


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one delivery attempt (or of the last of several)."""

    status: SendStatus
    reply: str = ""
    detail: str = ""
    refused: Mapping[str, str] = field(default_factory=dict)
    attempts: int = 1

    @property
    def sent(self) -> bool:
        return self.status == "sent"


def smtp_retry_delays(
    attempts: int = 3,
    first: float = 5.0,  # float-ok: seconds
    factor: float = 4.0,  # float-ok: ratio
    cap: float = 300.0,  # float-ok: seconds
) -> tuple[float, ...]:  # float-ok: seconds
    """Waits between `attempts` tries of a "retry" result: 5 s, 20 s, 80 s, ... at most `cap`."""
    return tuple(min(cap, first * factor**index) for index in range(max(attempts - 1, 0)))


class RateLimiter:
    """A token bucket: `rate_per_second` on average, bursts of up to `burst` at once."""

    def __init__(
        self,
        rate_per_second: float,  # float-ok: a rate
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,  # float-ok: seconds
        sleep: Callable[[float], None] = time.sleep,  # float-ok: seconds
    ) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("rate_per_second must be above 0 and burst at least 1")
        self._rate = rate_per_second
        self._capacity = float(burst)  # float-ok: tokens of a rate limit
        self._tokens = float(burst)  # float-ok: tokens of a rate limit
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()

    def acquire(self) -> float:  # float-ok: seconds
        """Take one token, sleeping first if none is free; returns the seconds slept."""
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        if self._tokens >= 1:
            self._tokens -= 1
            self._updated = now
            return 0.0
        wait = (1 - self._tokens) / self._rate
        self._sleep(wait)
        self._tokens = 0.0
        self._updated = now + wait
        return wait


class _Dropped(Exception):
    """The connection went away; `content_sent` says whether the final dot was transmitted."""

    def __init__(self, step: str, reason: str, *, content_sent: bool = False) -> None:
        super().__init__(reason)
        self.step = step
        self.content_sent = content_sent


class _HeaderInjection(Exception):
    """The message would not be transmitted with the headers it has."""


class _SetupRefused(Exception):
    """Connecting cannot work as configured (no point in trying again)."""


def _reply_text(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return " ".join(f"{code} {text}".split())


def _by_code(code: int) -> SendStatus:
    return "failed" if 500 <= code < 600 else "retry"


class SmtpSender:
    """Sends messages over one SMTP connection at a time, reconnecting when needed.

    A connection is reused for up to `max_per_connection` messages, then closed politely and
    a new one opened; a dropped connection is replaced on the next message (and once at once
    when a reused connection turns out stale at MAIL FROM, where nothing was sent yet).
    Not thread-safe: use one sender per worker.
    """

    def __init__(
        self,
        server: SmtpServer,
        *,
        timeout: float = 30.0,  # float-ok: seconds
        rate_per_second: float | None = 10.0,  # float-ok: a rate
        max_per_connection: int = 100,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        clock: Callable[[], float] = time.monotonic,  # float-ok: seconds
        sleep: Callable[[float], None] = time.sleep,  # float-ok: seconds
    ) -> None:
        if max_per_connection < 1:
            raise ValueError("max_per_connection must be at least 1")
        self.server = server
        self._timeout = timeout
        self._max_per_connection = max_per_connection
        self._ssl_context = ssl_context
        self._local_hostname = local_hostname
        self._sleep = sleep
        self._limiter = (
            RateLimiter(rate_per_second, clock=clock, sleep=sleep) if rate_per_second else None
        )
        self._connection: smtplib.SMTP | None = None
        self._messages_on_connection = 0
        self.connections_opened = 0

    def __repr__(self) -> str:
        return f"SmtpSender({self.server})"

    def __enter__(self) -> SmtpSender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """QUIT the open connection, if any (errors while quitting are of no consequence)."""
        connection, self._connection = self._connection, None
        self._messages_on_connection = 0
        if connection is None:
            return
        try:
            connection.quit()
        except (smtplib.SMTPException, OSError):
            connection.close()

    def deliver_with_retries(
        self,
        message: EmailMessage,
        recipients: Sequence[str],
        attempts: int = 3,
        backoff: Sequence[float] | None = None,  # float-ok: seconds
    ) -> DeliveryResult:
        """`deliver`, tried again after each "retry" result only (never after "unknown").

        `backoff` are the waits between tries (the last one repeats); by default
        `smtp_retry_delays(attempts)`. The result carries the number of attempts made.
        """
        delays = tuple(backoff) if backoff is not None else smtp_retry_delays(attempts)
        attempt = 1
        while True:
            result = self.deliver(message, recipients)
            if result.status != "retry" or attempt >= attempts:
                return replace(result, attempts=attempt)
            delay = delays[min(attempt - 1, len(delays) - 1)] if delays else 0.0
            log.warning(
                "smtp: attempt %d of %d will be retried in %.0f s: %s",
                attempt,
                attempts,
                delay,
                result.detail,
            )
            self._sleep(delay)
            attempt += 1

    def deliver(self, message: EmailMessage, recipients: Sequence[str]) -> DeliveryResult:
        """One attempt to hand `message` to the server for `recipients` (the envelope).

        The envelope sender is the From address. Bcc headers, if any, are never transmitted.
        """
        unique = tuple(dict.fromkeys(recipients))
        problem = self._envelope_problem(message, unique)
        if problem is not None:
            return self._result("failed", "", problem)
        envelope_from = getaddresses([str(message["From"])])[0][1]
        try:
            payload = _wire_bytes(message)
        except _HeaderInjection as error:
            return self._result("failed", "", str(error))
        if self._limiter is not None:
            self._limiter.acquire()
        result = self._attempt(envelope_from, unique, payload)
        log.info(
            "smtp: %s for %s to %d recipients: %s",
            result.status,
            message["Message-ID"],
            len(unique),
            result.reply or result.detail,
        )
        return result

    @staticmethod
    def _envelope_problem(message: EmailMessage, recipients: tuple[str, ...]) -> str | None:
        if not recipients:
            return "no recipients"
        bad = [r for r in recipients if plain_address_problem(r) is not None]
        if bad:
            return f"not plain addresses, not sent: {', '.join(repr(r) for r in bad)}"
        senders = getaddresses([str(message["From"] or "")])
        if len(senders) != 1 or plain_address_problem(senders[0][1]) is not None:
            return "the message needs exactly one plain From address"
        return None

    def _attempt(
        self, envelope_from: str, recipients: tuple[str, ...], payload: bytes
    ) -> DeliveryResult:
        for _ in range(2):
            try:
                connection, reused = self._open()
            except _SetupRefused as error:
                return self._result("failed", "", f"{self.server}: {error}")
            except ssl.SSLCertVerificationError as error:
                return self._result(
                    "failed", "", f"{self.server}: TLS certificate not trusted ({error.reason})"
                )
            except smtplib.SMTPResponseException as error:
                reply = _reply_text(error.smtp_code, error.smtp_error)
                return self._result(
                    _by_code(error.smtp_code), reply, f"{self.server}: refused the session"
                )
            except (smtplib.SMTPException, OSError) as error:
                return self._result("retry", "", f"{self.server}: cannot connect ({error})")
            self._messages_on_connection += 1
            try:
                return self._transaction(connection, envelope_from, recipients, payload)
            except _Dropped as dropped:
                self._forget_connection()
                if dropped.content_sent:
                    return self._result(
                        "unknown",
                        "",
                        f"the connection was lost after the message was sent ({dropped}) and "
                        "before the server confirmed it; it may have been delivered: check "
                        "the mail log before sending again",
                    )
                if reused and dropped.step == "MAIL FROM":
                    log.info("smtp: reused connection was stale (%s); reconnecting", dropped)
                    continue
                return self._result(
                    "retry", "", f"the connection was lost at {dropped.step} ({dropped})"
                )
        return self._result("retry", "", "the connection was lost twice at MAIL FROM")

    def _transaction(
        self,
        connection: smtplib.SMTP,
        envelope_from: str,
        recipients: tuple[str, ...],
        payload: bytes,
    ) -> DeliveryResult:
        code, text = self._command(connection, "MAIL FROM", lambda: connection.mail(envelope_from))
        if code == 421:  # the server is closing the (perhaps idle) connection
            raise _Dropped("MAIL FROM", _reply_text(code, text))
        if not 200 <= code < 300:
            return self._refused(connection, code, text, "MAIL FROM")
        accepted: list[str] = []
        temporary: dict[str, str] = {}
        permanent: dict[str, str] = {}
        for recipient in recipients:
            code, text = self._command(connection, "RCPT TO", partial(connection.rcpt, recipient))
            reply = _reply_text(code, text)
            if 200 <= code < 300:
                accepted.append(recipient)
            elif code == 421:
                return self._refused(connection, code, text, "RCPT TO")
            elif 500 <= code < 600:
                permanent[recipient] = reply
            else:
                temporary[recipient] = reply
        if temporary or not accepted:
            self._reset(connection)
            refusals = {**temporary, **permanent}
            listed = "; ".join(f"{r}: {reply}" for r, reply in refusals.items())
            status: SendStatus = "retry" if temporary else "failed"
            return self._result(
                status, next(iter(refusals.values())), f"recipients refused: {listed}", permanent
            )
        code, text = self._command(connection, "DATA", lambda: self._data_command(connection))
        if code != 354:
            return self._refused(connection, code, text, "DATA")
        try:
            connection.send(payload)
        except smtplib.SMTPServerDisconnected as error:
            raise _Dropped("the message content", str(error)) from None
        try:
            code, text = connection.getreply()
        except smtplib.SMTPServerDisconnected as error:
            raise _Dropped("the final reply", str(error), content_sent=True) from None
        reply = _reply_text(code, text)
        if 200 <= code < 300:
            detail = f"sent to {len(accepted)} of {len(recipients)} recipients"
            if permanent:
                detail += "; refused: " + "; ".join(f"{r}: {t}" for r, t in permanent.items())
            return self._result("sent", reply, detail, permanent)
        if 400 <= code < 600:
            if code == 421:
                self._forget_connection()
            return self._result(_by_code(code), reply, "the server refused the message", permanent)
        self._forget_connection()
        return self._result("unknown", reply, "unexpected reply to the message content")

    @staticmethod
    def _data_command(connection: smtplib.SMTP) -> tuple[int, bytes]:
        connection.putcmd("data")
        return connection.getreply()

    @staticmethod
    def _command(
        connection: smtplib.SMTP, step: str, call: Callable[[], tuple[int, bytes]]
    ) -> tuple[int, bytes]:
        try:
            return call()
        except smtplib.SMTPServerDisconnected as error:
            raise _Dropped(step, str(error)) from None

    def _refused(
        self, connection: smtplib.SMTP, code: int, text: bytes, step: str
    ) -> DeliveryResult:
        """A non-2xx reply before the content: 5xx failed, anything else retry."""
        if code == 421 or not 400 <= code < 600:
            self._forget_connection()
        else:
            self._reset(connection)
        return self._result(_by_code(code), _reply_text(code, text), f"refused at {step}")

    def _reset(self, connection: smtplib.SMTP) -> None:
        try:
            code, _ = connection.rset()
        except (smtplib.SMTPException, OSError):
            code = -1
        if code != 250:
            self._forget_connection()

    def _open(self) -> tuple[smtplib.SMTP, bool]:
        """The current connection (reused: True), or a new one after the per-connection cap."""
        if self._connection is not None:
            if self._messages_on_connection < self._max_per_connection:
                return self._connection, True
            self.close()
        self._connection = self._connect()
        self._messages_on_connection = 0
        self.connections_opened += 1
        return self._connection, False

    def _connect(self) -> smtplib.SMTP:
        server = self.server
        context = self._ssl_context or ssl.create_default_context()
        connection: smtplib.SMTP
        if server.implicit_tls:
            connection = smtplib.SMTP_SSL(
                server.host,
                server.port,
                local_hostname=self._local_hostname,
                timeout=self._timeout,
                context=context,
            )
        else:
            connection = smtplib.SMTP(
                server.host, server.port, local_hostname=self._local_hostname, timeout=self._timeout
            )
        try:
            connection.ehlo_or_helo_if_needed()
            if not server.implicit_tls:
                if connection.has_extn("starttls"):
                    connection.starttls(context=context)
                    connection.ehlo()
                elif server.username is not None:
                    raise _SetupRefused(
                        "the server does not offer STARTTLS and credentials are never sent in "
                        "clear; use smtps:// or a server with STARTTLS"
                    )
            if server.username is not None and server.password is not None:
                self._login(connection, server.username, server.password)
        except BaseException:
            connection.close()
            raise
        return connection

    @staticmethod
    def _login(connection: smtplib.SMTP, username: str, password: SecretStr) -> None:
        try:
            connection.login(username, password.get_secret_value())
        except smtplib.SMTPNotSupportedError:
            raise _SetupRefused("the server does not offer AUTH") from None
        except UnicodeEncodeError:
            raise _SetupRefused("the user or password is not ASCII") from None
        except smtplib.SMTPAuthenticationError:
            raise
        except smtplib.SMTPException as error:
            if isinstance(error, smtplib.SMTPResponseException):
                raise
            raise _SetupRefused("no AUTH method in common with the server") from None

    def _forget_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._messages_on_connection = 0
        if connection is not None:
            connection.close()

    def _result(
        self,
        status: SendStatus,
        reply: str,
        detail: str,
        refused: Mapping[str, str] | None = None,
    ) -> DeliveryResult:
        return DeliveryResult(
            status,
            self._scrub(reply),
            self._scrub(detail),
            {key: self._scrub(value) for key, value in (refused or {}).items()},
        )

    def _scrub(self, text: str) -> str:
        """Text with the password (plain or percent-encoded) blotted out, just in case."""
        password = self.server.password.get_secret_value() if self.server.password else ""
        if len(password) < 4:
            return text
        return text.replace(password, "***").replace(quote(password, safe=""), "***")


def _wire_bytes(message: EmailMessage) -> bytes:
    """The message as sent after DATA: Bcc removed, CRLF, dot-stuffed, ending with CRLF . CRLF.

    Raises _HeaderInjection when the serialized headers are not the message's own: the email
    package of some Python versions writes a decoded encoded word's CR LF as a line break.
    """
    if message["Bcc"] is not None or message["Resent-Bcc"] is not None:
        message = copy.deepcopy(message)
        del message["Bcc"]
        del message["Resent-Bcc"]
    try:
        data = message.as_bytes(policy=_WIRE_POLICY)
    except MessageError as error:  # HeaderWriteError on Pythons that check for injections
        raise _HeaderInjection(f"a header cannot be written safely ({error}); not sent") from None
    written = BytesHeaderParser(policy=policy.compat32).parsebytes(data).keys()
    if [name.lower() for name in written] != [name.lower() for name in message]:
        raise _HeaderInjection(
            "the serialized headers differ from the message's own (a header value holds a line "
            "break, perhaps through an encoded word); not sent"
        )
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", data) + b".\r\n"


def smtp_sender(settings: Settings) -> SmtpSender:
    """An SmtpSender for BILLING_SMTP_URL with the timeout, rate and per-connection settings."""
    if settings.smtp_url is None:
        raise ConfigError("setting BILLING_SMTP_URL: not set; SMTP delivery needs a server")
    return SmtpSender(
        parse_smtp_url(settings.smtp_url.get_secret_value(), "BILLING_SMTP_URL"),
        timeout=settings.smtp_timeout_seconds,
        rate_per_second=settings.smtp_rate_per_second,
        max_per_connection=settings.smtp_max_per_connection,
    )


class SmtpTransport:
    """Delivers each message over one SmtpSender, with finance (`bcc`) in every envelope.

    A "retry" result is tried again after each of the `backoff` waits; the connection stays
    open across messages until close().
    """

    def __init__(
        self,
        sender: SmtpSender,
        *,
        bcc: Sequence[str] = (),
        backoff: Sequence[float] = (),  # float-ok: seconds
    ) -> None:
        self._sender = sender
        self._bcc = tuple(bcc)
        self._backoff = tuple(backoff)

    def deliver(self, message: EmailMessage, name: str) -> DeliveryResult:
        recipients = envelope_recipients(message, self._bcc)
        attempts = len(self._backoff) + 1
        return self._sender.deliver_with_retries(message, recipients, attempts, self._backoff)

    def close(self) -> None:
        self._sender.close()


def smtp_transport(settings: Settings) -> SmtpTransport:
    """The smtp transport of the settings: BILLING_SMTP_* and BILLING_EMAIL_BCC."""
    return SmtpTransport(
        smtp_sender(settings), bcc=settings.email_bcc, backoff=settings.smtp_retry_seconds
    )
