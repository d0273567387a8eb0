"""Real SMTP servers on loopback for tests: an aiosmtpd recorder and a raw socket server that
misbehaves after the message content."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.processes import free_port

PASSWORD = "s3cret-p@ss/word"


# --- an aiosmtpd server that records what it receives ------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    peer: tuple[str, int]


@dataclass
class Recorder:
    """aiosmtpd handler: records messages; replies can be scripted per RCPT and per DATA."""

    messages: list[Received] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_commands: int = 0
    tls_sessions: int = 0
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_commands += 1
        if self.data_replies:
            return self.data_replies.pop(0)
        if session.ssl is not None or server.transport.get_extra_info("ssl_object"):
            self.tls_sessions += 1
        self.messages.append(
            Received(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.content, session.peer)
        )
        return f"250 2.0.0 Ok: queued as Q{len(self.messages)}"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=login == "mailer" and password == PASSWORD, handled=False)


@dataclass
class RunningServer:
    port: int
    recorder: Recorder


@pytest.fixture
def smtp_server() -> Iterator[RunningServer]:
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield RunningServer(controller.port, recorder)
    finally:
        controller.stop()


# --- (d) a raw socket server: drops and silences around the final reply --------------------


class RawSmtpServer:
    """A minimal SMTP server in a thread that misbehaves on purpose after the content.

    `after_content`: "drop" closes the socket without replying, "silence" never replies,
    "reply" answers 250 and then closes the connection (a server that does not keep it).
    """

    def __init__(self, after_content: str, silence_seconds: float = 3) -> None:
        self.after_content = after_content
        self.silence_seconds = silence_seconds
        self.contents = 0
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with connection:
                self._session(connection)

    def _session(self, connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        connection.sendall(b"220 raw.test ESMTP\r\n")
        for line in reader:
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                connection.sendall(b"250 raw.test\r\n")
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                connection.sendall(b"250 OK\r\n")
            elif verb == b"QUIT":
                connection.sendall(b"221 Bye\r\n")
                return
            elif verb == b"DATA":
                connection.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                for content_line in reader:
                    if content_line == b".\r\n":
                        break
                self.contents += 1
                if self.after_content == "silence":
                    self._stop.wait(self.silence_seconds)
                    return
                if self.after_content == "reply":
                    connection.sendall(b"250 OK queued\r\n")
                return  # "drop", "silence" and "reply" all close the connection here

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


@pytest.fixture
def raw_server(request: pytest.FixtureRequest) -> Iterator[RawSmtpServer]:
    server = RawSmtpServer(request.param)
    try:
        yield server
    finally:
        server.close()
