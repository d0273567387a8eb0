"""Beat finalizes ended review windows every sweep interval, on the fetch queue; a review
close needs BILLING_REVIEW_DAYS above 0; a daemonic process renders in-process."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from datetime import timedelta

import pytest

from billing.close.review import rendering_here
from billing.close.steps import CloseOptions
from billing.close.window import check_review_setting
from billing.config import Settings
from billing.errors import ConfigError
from workers import tasks
from workers.celery_app import FETCH_QUEUE, ROUTES, beat_schedule, create_app


def test_beat_finalizes_ended_review_windows_every_sweep_interval_on_the_fetch_queue(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(sweep_minutes=7)
    entry = beat_schedule(settings)["finalize-review-windows"]
    assert entry["task"] == "workers.tasks.finalize_due_reviews"
    assert entry["schedule"] == timedelta(minutes=7)
    assert entry["options"] == {"expires": 7 * 60}
    assert ROUTES["workers.tasks.finalize_due_reviews"] == FETCH_QUEUE
    app = create_app(settings)
    assert app.conf.beat_schedule["finalize-review-windows"]["task"] == entry["task"]
    assert app.amqp.router.route({}, entry["task"])["queue"].name == FETCH_QUEUE
    assert tasks.finalize_due_reviews.name == entry["task"]  # registered under that name


def test_review_days_is_read_from_the_environment_and_never_negative(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BILLING_REVIEW_DAYS", "3")
    assert Settings(_env_file=None).review_days == 3
    assert Settings(_env_file=None, review_days=0).review_days == 0
    monkeypatch.setenv("BILLING_REVIEW_DAYS", "-1")
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        Settings(_env_file=None)


def test_a_review_close_is_refused_without_a_review_window(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ConfigError, match=r"^--review needs a review window: set BILLING_REVIEW"):
        check_review_setting(make_settings(review_days=0), CloseOptions(review=True))
    check_review_setting(make_settings(review_days=2), CloseOptions(review=True))
    check_review_setting(make_settings(review_days=0), CloseOptions())


def _render_processes_seen(settings: Settings, answer: multiprocessing.SimpleQueue[int]) -> None:
    answer.put(rendering_here(settings).render_processes)


def test_a_daemonic_process_renders_in_process(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(render_processes=4)
    assert rendering_here(settings).render_processes == 4
    context = multiprocessing.get_context("fork")
    answer: multiprocessing.SimpleQueue[int] = context.SimpleQueue()
    child = context.Process(target=_render_processes_seen, args=(settings, answer), daemon=True)
    child.start()
    child.join(timeout=30)
    assert answer.get() == 1
