"""The Celery app, configured from the one Settings: queues and routes, the delivery policy in
one place, and the beat schedule (the monthly close and the sweep of stalled runs)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery
from celery.schedules import crontab
from celery.signals import worker_init, worker_process_init
from kombu import Exchange, Queue  # type: ignore[attr-defined]

from billing.config import Settings, get_settings
from billing.db.engine import keep_engines

FETCH_QUEUE = "billing.fetch"  # begin, fetch, rate batches, report, sweep, review finalize
RENDER_QUEUE = "billing.render"  # a batch of invoices per task: PDFs and CSVs
EMAIL_QUEUE = "billing.email"  # a batch of invoices per task: their pending deliveries
QUEUES = (FETCH_QUEUE, RENDER_QUEUE, EMAIL_QUEUE)

ROUTES = {
    "workers.tasks.close_period": FETCH_QUEUE,
    "workers.tasks.close_previous_month": FETCH_QUEUE,
    "workers.tasks.fetch_usage": FETCH_QUEUE,
    "workers.tasks.rate_batch": FETCH_QUEUE,
    "workers.tasks.report": FETCH_QUEUE,
    "workers.tasks.sweep": FETCH_QUEUE,
    "workers.tasks.finalize_due_reviews": FETCH_QUEUE,
    "workers.tasks.render_invoices": RENDER_QUEUE,
    "workers.tasks.email_invoices": EMAIL_QUEUE,
    "workers.tasks.render_invoice": RENDER_QUEUE,
    "workers.tasks.email_invoice": EMAIL_QUEUE,
    "workers.tasks.deliver_webhooks": EMAIL_QUEUE,
    "workers.tasks.check_budgets": FETCH_QUEUE,
}


def delivery_policy(settings: Settings) -> dict[str, Any]:
    """How messages are delivered and acknowledged; every setting of it is here.

    A task is acknowledged after it ran (acks_late) and handed back when its worker died
    (reject_on_worker_lost); a worker takes one message at a time. Redis hands an
    unacknowledged message out again after the visibility timeout, so that timeout is longer
    than the longest task, whose hard time limit is below it.
    """
    visibility = settings.celery_visibility_timeout_seconds
    hard_limit = settings.celery_task_time_limit_seconds
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": hard_limit,
        "task_soft_time_limit": max(1, hard_limit - 30),
        "broker_transport_options": {"visibility_timeout": visibility},
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "broker_connection_retry_on_startup": True,
        # On a lost broker connection, stop the running tasks: their messages cannot be
        # acknowledged any more and come back; the steps are idempotent.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Progress and completion live in the database; only the start of a close answers.
        "task_ignore_result": True,
    }


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The close of the previous month on the configured day and hour (UTC), expiring so a
    late beat never runs a stale close, the sweep of stalled runs, and the finalize of the
    periods whose review window (BILLING_REVIEW_DAYS) has ended, webhook delivery and the daily
    budget check (BILLING_BUDGET_CHECK_HOUR)."""
    return {
        "close-previous-month": {
            "task": "workers.tasks.close_previous_month",
            "schedule": crontab(
                minute="0",
                hour=str(settings.close_hour),
                day_of_month=str(settings.close_day),
            ),
            "options": {"expires": settings.close_expires_hours * 3600},
        },
        "sweep-stalled-runs": {
            "task": "workers.tasks.sweep",
            "schedule": timedelta(minutes=settings.sweep_minutes),
            "options": {"expires": settings.sweep_minutes * 60},
        },
        "finalize-review-windows": {
            "task": "workers.tasks.finalize_due_reviews",
            "schedule": timedelta(minutes=settings.sweep_minutes),
            "options": {"expires": settings.sweep_minutes * 60},
        },
        # Webhooks due now (a no-op without BILLING_WEBHOOKS); a missed minute is not kept.
        "deliver-webhooks": {
            "task": "workers.tasks.deliver_webhooks",
            "schedule": timedelta(minutes=1),
            "options": {"expires": 60},
        },
        # The month-to-date budget check (a no-op without BILLING_BUDGETS); a missed day is
        # caught up by the next, and an alert never fires twice (the ledger decides).
        "check-budgets": {
            "task": "workers.tasks.check_budgets",
            "schedule": crontab(minute="30", hour=str(settings.budget_check_hour)),
            "options": {"expires": 12 * 3600},
        },
    }


def _queue(name: str) -> Queue:
    """A queue on its own direct exchange and routing key, so a message lands in one queue."""
    return Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]


def create_app(settings: Settings) -> Celery:
    """A Celery app for these settings; with no broker configured tasks run eagerly in-process."""
    celery = Celery(
        "billing",
        broker=settings.broker_url or "memory://",
        backend=settings.broker_url or "cache+memory://",
        include=["workers.tasks"],
    )
    celery.conf.update(
        task_always_eager=settings.broker_url is None,
        task_eager_propagates=True,
        task_queues=[_queue(name) for name in QUEUES],
        task_default_queue=FETCH_QUEUE,
        task_routes=ROUTES,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        result_expires=7 * 24 * 3600,
        beat_schedule=beat_schedule(settings),
        **delivery_policy(settings),
    )
    return celery


app = create_app(get_settings())


def _keep_engines(**_: Any) -> None:
    """A worker process keeps one ledger engine per database across its tasks (an engine, its
    pool and a migration check per task cost more than many a step's own work)."""
    keep_engines()


worker_init.connect(_keep_engines, weak=False)  # the pool's parent (and a solo pool)
worker_process_init.connect(_keep_engines, weak=False)  # each prefork child
