"""A real webhook receiver on loopback for tests: a threaded http.server that records every
request, can answer 500 to the first N requests (or the first N of each event), and checks
signatures the way the README tells receivers to."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOLERANCE_SECONDS = 300


def verify_signature(
    secret: str, header: str, body: bytes, now: float | None = None
) -> bool:  # float-ok: unix time
    """The receiver's check from the README: recompute the HMAC over "t.body", compare in
    constant time, refuse a timestamp more than 5 minutes away."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        return False
    return abs((time.time() if now is None else now) - timestamp) <= TOLERANCE_SECONDS


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def event(self) -> dict[str, Any]:
        parsed = json.loads(self.body)
        assert isinstance(parsed, dict)
        return parsed


@dataclass
class Receiver:
    """What the server received and how it answers."""

    port: int = 0
    fail_first: int = 0  # answer 500 to the first N requests
    fail_each_first: int = 0  # answer 500 to the first N requests of each event id
    delay_seconds: float = 0.0  # float-ok: seconds, before answering
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            event_id = headers.get("billing-event-id", "")
            tries = sum(
                1 for seen in self.requests if seen.headers.get("billing-event-id") == event_id
            )
            failing = len(self.requests) < self.fail_first or tries < self.fail_each_first
            status = 500 if failing else 200
            self.requests.append(Request(path, headers, body, status))
            return status

    def delivered(self) -> list[Request]:
        with self.lock:
            return [request for request in self.requests if request.answered == 200]

    def delivered_events(self) -> list[dict[str, Any]]:
        return [request.event for request in self.delivered()]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if receiver.delay_seconds:
                time.sleep(receiver.delay_seconds)
            headers = {name.lower(): value for name, value in self.headers.items()}
            status = receiver.answer(self.path, headers, body)
            reply = b"ok" if status == 200 else b"receiver says no: try later"
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            return None

    return Handler


@contextmanager
def webhook_receiver(**options: Any) -> Iterator[Receiver]:
    """A receiver on a free loopback port for the length of the block."""
    receiver = Receiver(**options)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
