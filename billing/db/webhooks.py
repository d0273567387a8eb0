"""The webhook outbox: events written in the changing transaction, fanned out to the endpoints
that want them, deliveries claimed under a lease and settled with the receiver's reply."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import exists, insert, literal, select, update
from sqlmodel import Session, col

from billing.db.bulk import upsert_insert
from billing.db.tables import BillingRun, CreditNote, Invoice, WebhookDelivery, WebhookEvent
from billing.db.types import UTCDateTime
from billing.money import format_minor
from billing.states import RunStatus, WebhookDeliveryStatus, WebhookEventType

# An event is offered to every endpoint that wants it for this long after it was written: an
# endpoint added later gets the last week's events, and the fan-out never scans all history.
FAN_OUT_WINDOW = timedelta(days=7)
LAST_ERROR_CHARS = 500


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def encode_data(data: Mapping[str, Any]) -> str:
    """An event's data as JSON text: ids and names verbatim, amounts as decimal strings."""
    return json.dumps(dict(data), default=_plain)


def money(amount: Decimal, currency: str) -> str:
    """An amount at the currency's places, as the payload's decimal string ("1234.50")."""
    return format_minor(amount, currency)


def record_event(
    session: Session, type: WebhookEventType, data: Mapping[str, Any], now: datetime
) -> str:
    """Write one event in the caller's transaction (it is delivered only if that commits);
    returns its event id ("evt_" + 32 hex)."""
    return record_events(session, type, [data], now)[0]


def record_events(
    session: Session, type: WebhookEventType, items: Sequence[Mapping[str, Any]], now: datetime
) -> list[str]:
    """Several events of one type in one INSERT (a finalize batch); returns their ids."""
    rows = [
        {
            "event_id": new_event_id(),
            "type": str(type),
            "payload": encode_data(data),
            "created_at": now,
        }
        for data in items
    ]
    if rows:
        session.execute(insert(WebhookEvent), rows)
    return [str(row["event_id"]) for row in rows]


def invoice_data(
    *,
    number: str | None,
    org_id: str,
    period: str,
    currency: str,
    total: Decimal,
    status: str,
    **more: object,
) -> dict[str, object]:
    """The data of an invoice event."""
    return {
        "number": number,
        "org_id": org_id,
        "period": period,
        "currency": currency,
        "total": money(total, currency),
        "status": status,
        **more,
    }


def invoice_event_data(invoice: Invoice, **more: object) -> dict[str, object]:
    return invoice_data(
        number=invoice.number,
        org_id=invoice.org_id,
        period=invoice.period,
        currency=invoice.currency,
        total=invoice.total,
        status=invoice.status,
        **more,
    )


def _invoice_rows(session: Session, invoice_ids: Collection[int]) -> list[dict[str, object]]:
    rows = session.execute(
        select(
            col(Invoice.number),
            col(Invoice.org_id),
            col(Invoice.period),
            col(Invoice.currency),
            col(Invoice.total),
            col(Invoice.status),
        )
        .where(col(Invoice.id).in_(list(invoice_ids)))
        .order_by(col(Invoice.number), col(Invoice.id))
    )
    return [
        invoice_data(
            number=number,
            org_id=org_id,
            period=period,
            currency=currency,
            total=total,
            status=status,
        )
        for number, org_id, period, currency, total, status in rows
    ]


def record_finalized(session: Session, invoice_ids: Collection[int], now: datetime) -> None:
    """`invoice.finalized` for each invoice of a finalize batch: one SELECT, one INSERT."""
    record_events(
        session, WebhookEventType.INVOICE_FINALIZED, _invoice_rows(session, invoice_ids), now
    )


def record_sent(session: Session, invoice_id: int, now: datetime) -> None:
    """`invoice.sent` for an invoice that has just become sent."""
    record_events(session, WebhookEventType.INVOICE_SENT, _invoice_rows(session, [invoice_id]), now)


def record_credit_note(session: Session, note: CreditNote, invoice_number: str | None) -> None:
    """`credit_note.created` in the transaction that writes the note."""
    data = {
        "number": note.number,
        "invoice_number": invoice_number,
        "org_id": note.org_id,
        "period": note.period,
        "currency": note.currency,
        "total": money(note.total, note.currency),
        "settlement": note.settlement,
        "reason": note.reason,
        "created_by": note.created_by,
    }
    record_event(session, WebhookEventType.CREDIT_NOTE_CREATED, data, note.created_at)


RUN_EVENTS: dict[str, WebhookEventType] = {
    RunStatus.SUCCEEDED: WebhookEventType.RUN_SUCCEEDED,
    RunStatus.FAILED: WebhookEventType.RUN_FAILED,
}


def record_run_end(session: Session, run: BillingRun, now: datetime) -> None:
    """`run.succeeded` or `run.failed` where a run's end is written (nothing for another
    status)."""
    kind = RUN_EVENTS.get(run.status)
    if kind is None:
        return
    data = {
        "run_id": run.id,
        "period": run.period,
        "operation": run.operation,
        "status": run.status,
        "error": run.error,
        "trigger": run.trigger,
        "started_by": run.started_by,
        "invoice_count": run.invoice_count,
        "finalized_count": run.finalized_count,
    }
    record_event(session, kind, data, now)


@dataclass(frozen=True)
class Subscription:
    """An endpoint as the outbox sees it: its name, URL and the event types it wants."""

    name: str
    url: str
    types: frozenset[str]


def fan_out(session: Session, subscriptions: Sequence[Subscription], now: datetime) -> int:
    """A pending delivery for each event of the last FAN_OUT_WINDOW that an endpoint wants and
    has none of yet (one INSERT ... SELECT per endpoint; a row another process made at the same
    moment is skipped by the unique constraint). Returns how many were made."""
    made = 0
    for subscription in subscriptions:
        if not subscription.types:
            continue
        delivered = exists().where(
            col(WebhookDelivery.event_id) == col(WebhookEvent.id),
            col(WebhookDelivery.endpoint) == subscription.name,
        )
        wanted = select(
            col(WebhookEvent.id),
            literal(subscription.name),
            literal(subscription.url),
            literal(str(WebhookDeliveryStatus.PENDING)),
            literal(0),
            literal(now, UTCDateTime()),
        ).where(
            col(WebhookEvent.type).in_(sorted(subscription.types)),
            col(WebhookEvent.created_at) >= now - FAN_OUT_WINDOW,
            ~delivered,
        )
        statement = (
            upsert_insert(session, WebhookDelivery)
            .from_select(
                ["event_id", "endpoint", "url", "status", "attempts", "next_attempt_at"], wanted
            )
            .on_conflict_do_nothing()
        )
        made += session.execute(statement).rowcount or 0  # type: ignore[attr-defined]
    return made


@dataclass(frozen=True)
class Due:
    """A claimed delivery and its event, ready to send."""

    delivery_id: int
    endpoint: str
    attempts: int
    event_id: str
    type: str
    payload: str
    created_at: datetime


def claim_due(
    session: Session,
    endpoints: Collection[str],
    now: datetime,
    lease_until: datetime,
    limit: int,
) -> list[Due]:
    """Claim up to `limit` due deliveries of these endpoints, oldest event first: each is
    leased (its next attempt moved to `lease_until`) by a conditional update, so no other
    sender takes it until it is settled or the lease runs out (a sender that died). On
    PostgreSQL rows another sender is claiming are skipped (SKIP LOCKED); SQLite writes one
    transaction at a time. Commit before sending."""
    if not endpoints:
        return []
    due = (
        (col(WebhookDelivery.status) == WebhookDeliveryStatus.PENDING)
        & (col(WebhookDelivery.next_attempt_at) <= now)
        & col(WebhookDelivery.endpoint).in_(sorted(endpoints))
    )
    candidates = (
        select(col(WebhookDelivery.id))
        .where(due)
        .order_by(col(WebhookDelivery.event_id), col(WebhookDelivery.id))
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    ids = list(session.execute(candidates).scalars())
    if not ids:
        return []
    claimed = set(
        session.execute(
            update(WebhookDelivery)
            .where(col(WebhookDelivery.id).in_(ids), due)
            .values(next_attempt_at=lease_until)
            .returning(col(WebhookDelivery.id))
        ).scalars()
    )
    rows = session.execute(
        select(
            col(WebhookDelivery.id),
            col(WebhookDelivery.endpoint),
            col(WebhookDelivery.attempts),
            col(WebhookEvent.event_id),
            col(WebhookEvent.type),
            col(WebhookEvent.payload),
            col(WebhookEvent.created_at),
        )
        .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
        .where(col(WebhookDelivery.id).in_(claimed))
        .order_by(col(WebhookDelivery.event_id), col(WebhookDelivery.id))
    )
    return [Due(*row) for row in rows]


def release(session: Session, delivery_ids: Collection[int], now: datetime) -> None:
    """Claimed deliveries not tried after all (their endpoint is down this pass): due again,
    no attempt counted."""
    if delivery_ids:
        session.execute(
            update(WebhookDelivery)
            .where(
                col(WebhookDelivery.id).in_(list(delivery_ids)),
                col(WebhookDelivery.status) == WebhookDeliveryStatus.PENDING,
            )
            .values(next_attempt_at=now)
        )


def settle(
    session: Session,
    delivery_id: int,
    *,
    url: str,
    status_code: int | None,
    error: str | None,
    now: datetime,
    retry_at: datetime | None,
) -> str:
    """Record one attempt: delivered when `error` is None; else pending again at `retry_at`,
    or failed for good when it is None. Returns the delivery's new status."""
    if error is None:
        status = WebhookDeliveryStatus.DELIVERED
    elif retry_at is None:
        status = WebhookDeliveryStatus.FAILED
    else:
        status = WebhookDeliveryStatus.PENDING
    session.execute(
        update(WebhookDelivery)
        .where(col(WebhookDelivery.id) == delivery_id)
        .values(
            url=url,
            status=status,
            attempts=WebhookDelivery.attempts + 1,
            next_attempt_at=retry_at or now,
            last_status_code=status_code,
            last_error=error[:LAST_ERROR_CHARS] if error is not None else None,
            delivered_at=now if error is None else None,
        )
    )
    return str(status)


@dataclass(frozen=True)
class DeliveryRow:
    """One delivery as `billing webhooks status` lists it."""

    event_id: str
    type: str
    created_at: datetime
    period: str | None
    endpoint: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None  # None once delivered or failed
    delivered_at: datetime | None


def delivery_rows(session: Session, period: str | None = None) -> list[DeliveryRow]:
    """Every delivery, oldest event first; with `period`, those of events about that month."""
    query = (
        select(WebhookDelivery, WebhookEvent)
        .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
        .order_by(col(WebhookEvent.id), col(WebhookDelivery.endpoint))
    )
    if period is not None:  # narrowed in SQL, decided on the parsed payload
        query = query.where(col(WebhookEvent.payload).contains(json.dumps(period)))
    found = []
    for delivery, event in session.execute(query):
        event_period = json.loads(event.payload).get("period")
        if period is not None and event_period != period:
            continue
        pending = delivery.status == WebhookDeliveryStatus.PENDING
        found.append(
            DeliveryRow(
                event_id=event.event_id,
                type=event.type,
                created_at=event.created_at,
                period=event_period if isinstance(event_period, str) else None,
                endpoint=delivery.endpoint,
                status=delivery.status,
                attempts=delivery.attempts,
                last_status_code=delivery.last_status_code,
                last_error=delivery.last_error,
                next_attempt_at=delivery.next_attempt_at if pending else None,
                delivered_at=delivery.delivered_at,
            )
        )
    return found
