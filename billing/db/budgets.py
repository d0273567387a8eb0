"""Budget spend and alerts in the ledger: the latest month-to-date spend per scope, and each
threshold's alert written once (a unique constraint) with its webhook event, in one
transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlmodel import Session, col

from billing.db.bulk import upsert_insert
from billing.db.tables import BudgetAlert, BudgetSpend
from billing.db.webhooks import money, record_event
from billing.states import AlertEmailStatus, BudgetScope, WebhookEventType


@dataclass(frozen=True)
class Measured:
    """One scope's month-to-date spend against its budget."""

    scope: BudgetScope
    scope_id: str
    currency: str
    budget_amount: Decimal
    spend: Decimal
    forecast: Decimal


def store_spend(
    session: Session,
    period: str,
    measured: Sequence[Measured],
    measured_at: datetime,
    usage_results: int,
) -> None:
    """Replace each scope's month-to-date spend of the period with this measurement."""
    for row in measured:
        values = {
            "period": period,
            "scope": str(row.scope),
            "scope_id": row.scope_id,
            "currency": row.currency,
            "budget_amount": row.budget_amount,
            "spend": row.spend,
            "forecast": row.forecast,
            "measured_at": measured_at,
            "usage_results": usage_results,
        }
        statement = upsert_insert(session, BudgetSpend).values(**values)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["period", "scope", "scope_id", "currency"],
                set_={
                    name: statement.excluded[name]
                    for name in (
                        "budget_amount",
                        "spend",
                        "forecast",
                        "measured_at",
                        "usage_results",
                    )
                },
            )
        )


def fired(session: Session, period: str) -> dict[tuple[str, str], set[str]]:
    """The thresholds that already fired in a period, per (scope, scope id)."""
    done: dict[tuple[str, str], set[str]] = {}
    query = select(col(BudgetAlert.scope), col(BudgetAlert.scope_id), col(BudgetAlert.threshold))
    for scope, scope_id, threshold in session.execute(
        query.where(col(BudgetAlert.period) == period)
    ):
        done.setdefault((scope, scope_id), set()).add(threshold)
    return done


@dataclass(frozen=True)
class Reached:
    """A threshold a scope's spend reached, with who to tell."""

    measured: Measured
    threshold: str
    contacts: tuple[str, ...]


def record_alert(session: Session, period: str, reached: Reached, now: datetime) -> bool:
    """Write the alert and its `budget.threshold_reached` event, unless this threshold of this
    scope already fired in the period (then nothing is written). True when it was written."""
    measured = reached.measured
    values = {
        "period": period,
        "scope": str(measured.scope),
        "scope_id": measured.scope_id,
        "threshold": reached.threshold,
        "currency": measured.currency,
        "budget_amount": measured.budget_amount,
        "spend": measured.spend,
        "forecast": measured.forecast,
        "fired_at": now,
        "email_to": "; ".join(reached.contacts),
        "email_status": str(
            AlertEmailStatus.PENDING if reached.contacts else AlertEmailStatus.NO_CONTACT
        ),
        "email_attempts": 0,
    }
    statement = (
        upsert_insert(session, BudgetAlert)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["period", "scope", "scope_id", "threshold"])
        .returning(col(BudgetAlert.id))
    )
    alert_id = session.execute(statement).scalar_one_or_none()
    if alert_id is None:
        return False
    event_id = record_event(
        session,
        WebhookEventType.BUDGET_THRESHOLD_REACHED,
        {
            "period": period,
            "scope": str(measured.scope),
            "scope_id": measured.scope_id,
            "threshold_percent": reached.threshold,
            "currency": measured.currency,
            "budget": money(measured.budget_amount, measured.currency),
            "spend": money(measured.spend, measured.currency),
            "forecast": money(measured.forecast, measured.currency),
        },
        now,
    )
    session.execute(
        update(BudgetAlert).where(col(BudgetAlert.id) == alert_id).values(event_id=event_id)
    )
    return True


def pending_emails(session: Session) -> list[BudgetAlert]:
    """Alerts whose email has not gone yet, oldest first."""
    query = (
        select(BudgetAlert)
        .where(col(BudgetAlert.email_status) == str(AlertEmailStatus.PENDING))
        .order_by(col(BudgetAlert.id))
    )
    return list(session.scalars(query))


def settle_email(session: Session, alert_id: int, status: AlertEmailStatus, reply: str) -> None:
    """Record one attempt to email an alert and how it went."""
    session.execute(
        update(BudgetAlert)
        .where(col(BudgetAlert.id) == alert_id)
        .values(
            email_status=str(status),
            email_reply=reply[:500],
            email_attempts=col(BudgetAlert.email_attempts) + 1,
        )
    )


def spend_rows(session: Session, period: str) -> list[BudgetSpend]:
    """The period's latest spend per scope, by scope kind and id."""
    query = (
        select(BudgetSpend)
        .where(col(BudgetSpend.period) == period)
        .order_by(col(BudgetSpend.scope), col(BudgetSpend.scope_id), col(BudgetSpend.currency))
    )
    return list(session.scalars(query))


def alert_rows(session: Session, period: str) -> list[BudgetAlert]:
    """The period's alerts, in the order they fired."""
    query = (
        select(BudgetAlert).where(col(BudgetAlert.period) == period).order_by(col(BudgetAlert.id))
    )
    return list(session.scalars(query))
