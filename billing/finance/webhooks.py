"""Webhooks as finance drives them: deliver what is due (fan-out, claim, POST, settle with
backoff) and the deliveries' state."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from sqlmodel import Session

from billing.catalog.webhooks import WebhookEndpoint, load_webhooks
from billing.config import Settings
from billing.db.engine import existing_ledger, ledger
from billing.db.locks import write_transaction
from billing.db.webhooks import (
    DeliveryRow,
    Due,
    Subscription,
    claim_due,
    delivery_rows,
    fan_out,
    release,
    settle,
)
from billing.hooks.sender import Reply, WebhookSender, body_of
from billing.periods import BillingPeriod
from billing.states import WebhookDeliveryStatus

Clock = Callable[[], datetime]

FIRST_RETRY = timedelta(seconds=30)
LONGEST_RETRY = timedelta(hours=6)
CLAIM_BATCH = 20


def _now() -> datetime:
    return datetime.now(UTC)


def retry_delay(attempts: int, first: timedelta = FIRST_RETRY) -> timedelta:
    """The wait after the `attempts`-th failed try: `first` (BILLING_WEBHOOK_FIRST_RETRY_SECONDS,
    30 s), then twice as long each time (1 min, 2 min, 4 min ...), at most 6 h."""
    doublings = min(max(attempts - 1, 0), 20)  # 2**20 x 30 s is far past the longest wait
    return min(first * (1 << doublings), LONGEST_RETRY)


@dataclass
class DeliveryCounts:
    """What one pass did."""

    queued: int = 0  # deliveries made by the fan-out
    delivered: int = 0
    retrying: int = 0  # failed this time, tried again later
    failed: int = 0  # failed for good (BILLING_WEBHOOK_MAX_ATTEMPTS)
    deferred: int = 0  # not tried: their endpoint could not be reached this pass
    unreachable: list[str] = field(default_factory=list)  # endpoints that could not be reached

    @property
    def tried(self) -> int:
        return self.delivered + self.retrying + self.failed

    def describe(self) -> str:
        parts = [f"{self.delivered} delivered"]
        if self.retrying:
            parts.append(f"{self.retrying} to retry")
        if self.failed:
            parts.append(f"{self.failed} failed for good")
        if self.deferred:
            parts.append(f"{self.deferred} deferred")
        if self.unreachable:
            parts.append(f"unreachable: {', '.join(self.unreachable)}")
        return ", ".join(parts)


def endpoints_of(settings: Settings) -> tuple[WebhookEndpoint, ...]:
    """The configured endpoints (none when BILLING_WEBHOOKS is unset)."""
    return () if settings.webhooks is None else load_webhooks(settings.webhooks)


def deliver_due(
    settings: Settings,
    *,
    now: Clock = _now,
    transport: httpx.BaseTransport | None = None,
) -> DeliveryCounts:
    """Deliver every webhook due now to the endpoints configured now: events not yet fanned
    out get a pending delivery per endpoint that wants them, then each due delivery is claimed
    (never by two senders at once), POSTed and settled: delivered on a 2xx, else retried after
    retry_delay until BILLING_WEBHOOK_MAX_ATTEMPTS, then failed. An endpoint that cannot be
    reached is not tried again in this pass (its other deliveries wait, no attempt counted).
    Nothing is done, and no ledger opened, without BILLING_WEBHOOKS."""
    counts = DeliveryCounts()
    endpoints = {endpoint.name: endpoint for endpoint in endpoints_of(settings)}
    if not endpoints:
        return counts
    subscriptions = [
        Subscription(endpoint.name, endpoint.url, frozenset(str(kind) for kind in endpoint.events))
        for endpoint in endpoints.values()
    ]
    with ledger(settings) as engine:
        with write_transaction(engine) as session:
            counts.queued = fan_out(session, subscriptions, now())
        reachable = set(endpoints)
        lease = timedelta(seconds=settings.webhook_timeout_seconds * CLAIM_BATCH + 60)
        with WebhookSender(settings.webhook_timeout_seconds, transport) as sender:
            while reachable:
                with write_transaction(engine) as session:
                    started = now()
                    claimed = claim_due(session, reachable, started, started + lease, CLAIM_BATCH)
                if not claimed:
                    break
                for due in claimed:
                    if due.endpoint not in reachable:
                        with write_transaction(engine) as session:
                            release(session, [due.delivery_id], now())
                        counts.deferred += 1
                        continue
                    endpoint = endpoints[due.endpoint]
                    reply = _send(sender, endpoint, due, now())
                    if not reply.reached:
                        reachable.discard(endpoint.name)
                        counts.unreachable.append(endpoint.name)
                    with write_transaction(engine) as session:
                        status = _settle(session, settings, endpoint, due, reply, now())
                    _count(counts, status)
    return counts


def _send(sender: WebhookSender, endpoint: WebhookEndpoint, due: Due, at: datetime) -> Reply:
    body = body_of(due.event_id, due.type, due.created_at, due.payload)
    secret = endpoint.secret.get_secret_value()
    return sender.post(endpoint.url, secret, due.event_id, body, int(at.timestamp()))


def _settle(
    session: Session,
    settings: Settings,
    endpoint: WebhookEndpoint,
    due: Due,
    reply: Reply,
    at: datetime,
) -> str:
    attempts = due.attempts + 1
    if reply.delivered or attempts >= settings.webhook_max_attempts:
        retry_at = None
    else:
        retry_at = at + retry_delay(
            attempts, timedelta(seconds=settings.webhook_first_retry_seconds)
        )
    return settle(
        session,
        due.delivery_id,
        url=endpoint.url,
        status_code=reply.status_code,
        error=None if reply.delivered else (reply.error or "not delivered"),
        now=at,
        retry_at=retry_at,
    )


def _count(counts: DeliveryCounts, status: str) -> None:
    if status == WebhookDeliveryStatus.DELIVERED:
        counts.delivered += 1
    elif status == WebhookDeliveryStatus.FAILED:
        counts.failed += 1
    else:
        counts.retrying += 1


def webhook_status(settings: Settings, period: BillingPeriod | None = None) -> list[DeliveryRow]:
    """Every webhook delivery (of events about `period`, when given), oldest event first.
    Reads only: a missing ledger is one line."""
    with existing_ledger(settings) as engine, Session(engine) as session:
        return delivery_rows(session, None if period is None else str(period))


def pending_count(rows: Sequence[DeliveryRow]) -> int:
    return sum(1 for row in rows if row.status == WebhookDeliveryStatus.PENDING)
