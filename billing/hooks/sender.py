"""The webhook sender: an event's JSON body POSTed to an endpoint, signed in the style of
Stripe (`Billing-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`)."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

import httpx

from billing.usage.client import tls_context

SIGNATURE_HEADER = "Billing-Signature"
EVENT_ID_HEADER = "Billing-Event-Id"
REPLY_CHARS = 500


def body_of(event_id: str, type: str, created_at: datetime, data_json: str) -> bytes:
    """The request body: the stored data (JSON text) kept byte for byte, so every attempt of an
    event sends the same body."""
    created = created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    head = json.dumps({"id": event_id, "type": type, "created": created})
    return f'{head[:-1]}, "data": {data_json}}}'.encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The v1 signature: hex HMAC-SHA256 of "<timestamp>.<body>" keyed with the secret."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


@dataclass(frozen=True)
class Reply:
    """How one POST went: delivered (2xx), or the status and the reply's first characters, or
    the transport's error (`reached` is False: the endpoint could not be reached)."""

    delivered: bool
    status_code: int | None
    error: str | None
    reached: bool


class WebhookSender:
    """One httpx client for a pass of deliveries; redirects are not followed (a 3xx fails)."""

    def __init__(
        self,
        timeout_seconds: float,  # float-ok: seconds
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = httpx.Client(
            timeout=timeout_seconds,
            follow_redirects=False,
            transport=transport,
            verify=tls_context(),
        )

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._client.close()

    def post(self, url: str, secret: str, event_id: str, body: bytes, timestamp: int) -> Reply:
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_header(secret, timestamp, body),
            EVENT_ID_HEADER: event_id,
            "User-Agent": "mka1-billing-webhooks",
        }
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as error:
            return Reply(False, None, f"timed out ({type(error).__name__})", reached=False)
        except httpx.HTTPError as error:
            return Reply(False, None, f"{type(error).__name__}: {error}"[:REPLY_CHARS], False)
        if 200 <= response.status_code < 300:
            return Reply(True, response.status_code, None, reached=True)
        text = response.text[:REPLY_CHARS]
        detail = f"HTTP {response.status_code}" + (f": {text}" if text else "")
        return Reply(False, response.status_code, detail[:REPLY_CHARS], reached=True)
