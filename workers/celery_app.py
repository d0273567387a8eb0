"""The Celery app: broker and backend from the one Settings, delivery policy, beat schedule."""

from __future__ import annotations

from celery import Celery
from celery.schedules import crontab

from billing.config import Settings, get_settings

CLOSE_QUEUE = "close"


def create_app(settings: Settings) -> Celery:
    """A Celery app for these settings; with no broker configured tasks run eagerly in-process."""
    broker = settings.broker_url or "memory://"
    celery = Celery(
        "billing",
        broker=broker,
        backend=settings.broker_url or "cache+memory://",
        include=["workers.tasks"],
    )
    celery.conf.update(
        task_always_eager=settings.broker_url is None,
        task_eager_propagates=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=CLOSE_QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 4 * 3600},
        result_backend_transport_options={"visibility_timeout": 4 * 3600},
        result_expires=7 * 24 * 3600,
        beat_schedule={
            "close-previous-month": {
                "task": "workers.tasks.close_previous_month",
                "schedule": crontab(minute="0", hour="6", day_of_month="2"),
                "options": {"expires": 12 * 3600},
            }
        },
    )
    return celery


app = create_app(get_settings())
