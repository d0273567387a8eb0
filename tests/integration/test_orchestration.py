"""The distributed close's steps without Celery: any order, duplicated and redelivered
messages, a stalled run found by the sweep, a poison step parked; and the beat schedule."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from billing.close import distributed
from billing.close.distributed import Work
from billing.close.inline import close_period
from billing.close.steps import in_batches
from billing.config import Settings
from billing.errors import OutputError, PeriodBusy
from billing.periods import BillingPeriod
from billing.usage.emulator import running_emulator
from tests.support.agreement import assert_period_agrees, database_totals, rows
from workers.celery_app import beat_schedule

OCTOBER = BillingPeriod.parse("2026-10")

Step = tuple[str, int, object]


def steps_of(work: Work) -> list[Step]:
    found: list[Step] = []
    if work.fetch:
        found.append(("fetch", work.run_id, None))
    found += [("rate", work.run_id, unit) for unit in work.rate]
    # Batches of 3 invoices, as the workers get them (in batches of BILLING_PUBLISH_BATCH).
    found += [("render", work.run_id, tuple(batch)) for batch in in_batches(work.render, 3)]
    found += [("email", work.run_id, tuple(batch)) for batch in in_batches(work.email, 3)]
    if work.report:
        found.append(("report", work.run_id, None))
    return found


def _ids(unit: object) -> list[int]:
    assert isinstance(unit, tuple)
    return [int(invoice_id) for invoice_id in unit]


def run_step(settings: Settings, step: Step) -> Work:
    name, run_id, unit = step
    if name == "fetch":
        return distributed.fetch(settings, run_id)
    if name == "rate":
        return distributed.rate_batch(settings, run_id, str(unit))
    if name == "render":
        return distributed.render_invoices(settings, run_id, _ids(unit))
    if name == "email":
        return distributed.email_invoices(settings, run_id, _ids(unit))
    return distributed.report(settings, run_id)


def drain(
    settings: Settings, queue: deque[Step], chooser: random.Random, duplicate_every: int = 0
) -> int:
    """Run queued steps in a random order; every n-th step is delivered twice."""
    ran = 0
    while queue:
        queue.rotate(chooser.randrange(len(queue)))
        step = queue.popleft()
        ran += 1
        if duplicate_every and ran % duplicate_every == 0:
            queue.append(step)
        queue.extend(steps_of(run_step(settings, step)))
    return ran


def test_steps_in_any_order_with_duplicates_give_the_in_process_totals(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    with running_emulator(orgs=7, seed=3, page_size=150) as base_url:
        local = make_settings(
            database_url=f"sqlite:///{tmp_path / 'local.db'}",
            output_dir=tmp_path / "local",
            mka1_base_url=base_url,
            mka1_api_key=SecretStr("t"),
        )
        close_period(local, OCTOBER)
        expected = {
            org: values[1] for org, values in database_totals(local.database_url, "2026-10").items()
        }
        settings = make_settings(
            database_url=database_url,
            mka1_base_url=base_url,
            mka1_api_key=SecretStr("t"),
            rate_batch_orgs=2,
        )
        run_id = distributed.begin_close(settings, OCTOBER, trigger="test")
        with pytest.raises(PeriodBusy, match="under way"):
            distributed.begin_close(settings, OCTOBER, trigger="test")
        drain(settings, deque([("fetch", run_id, None)]), random.Random(5), duplicate_every=3)
    totals = assert_period_agrees(database_url, settings.output_dir / "2026-10", str(OCTOBER))
    assert totals == expected
    progress = distributed.run_progress(settings, run_id)
    assert progress.status == "succeeded"
    assert progress.total == progress.done
    assert progress.total["rate"] == 4  # 7 orgs in batches of 2
    assert progress.total["render"] == progress.total["email"] == len(expected)
    assert rows(database_url, "SELECT count(*) FROM invoice") == [(len(expected),)]
    assert rows(database_url, "SELECT finalized_count, invoice_count FROM billing_run") == [
        (len(expected), len(expected))
    ]


def test_lost_messages_are_found_by_the_sweep_and_the_run_completes(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    with running_emulator(orgs=4, seed=3, page_size=150) as base_url:
        settings = make_settings(
            mka1_base_url=base_url, mka1_api_key=SecretStr("t"), rate_batch_orgs=1
        )
        run_id = distributed.begin_close(settings, OCTOBER, trigger="test")
        after_fetch = distributed.fetch(settings, run_id)
        assert len(after_fetch.rate) == 4
        distributed.rate_batch(settings, run_id, after_fetch.rate[0])  # the rest are lost
        assert distributed.sweep(settings, stalled_after=timedelta(hours=1)) == []
        later = lambda: datetime.now(UTC) + timedelta(hours=2)  # noqa: E731
        (found,) = distributed.sweep(settings, stalled_after=timedelta(hours=1), now=later)
        assert found.rate == after_fetch.rate[1:]
        queue = deque(steps_of(found))
        drain(settings, queue, random.Random(1))
    assert distributed.run_progress(settings, run_id).status == "succeeded"
    assert_period_agrees(sqlite_url, settings.output_dir / "2026-10", str(OCTOBER))


def test_a_step_delivered_too_often_is_parked_and_fails_the_run(
    make_settings: Callable[..., Settings],
) -> None:
    with running_emulator(orgs=2, seed=3, page_size=150) as base_url:
        settings = make_settings(
            mka1_base_url=base_url, mka1_api_key=SecretStr("t"), rate_batch_orgs=5
        )
        run_id = distributed.begin_close(settings, OCTOBER, trigger="test")
        work = distributed.fetch(settings, run_id)
        # Three deliveries that each died before finishing: the fourth is past the cap.
        engine = create_engine(settings.database_url)
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE run_task SET attempts = 3, status = 'running' WHERE stage = 'rate'")
            )
        engine.dispose()
        assert distributed.rate_batch(settings, run_id, work.rate[0], cap=3) == Work(run_id)
        assert not distributed.advance(settings, run_id)
    progress = distributed.run_progress(settings, run_id)
    assert progress.status == "failed"
    assert progress.problems == 1
    assert "parked" in (progress.error or "")


def test_a_batch_stops_at_an_invoice_that_fails_for_good_and_keeps_the_rest_done(
    make_settings: Callable[..., Settings], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_emulator(orgs=4, seed=3, page_size=150) as base_url:
        settings = make_settings(mka1_base_url=base_url, mka1_api_key=SecretStr("t"))
        run_id = distributed.begin_close(settings, OCTOBER, trigger="test")
        rate = distributed.fetch(settings, run_id)
        published = Work(run_id)
        for unit in rate.rate:
            published = published | distributed.rate_batch(settings, run_id, unit)
    batch = list(published.render)
    assert len(batch) == 4  # one batch for the four invoices
    real_write = distributed.write_documents

    def write_but_the_third(folder: Path, documents: object, *more: object) -> None:
        if getattr(documents, "statement").invoice_id == batch[2]:  # noqa: B009
            raise OutputError("disk full")
        real_write(folder, documents, *more)  # type: ignore[arg-type]

    monkeypatch.setattr(distributed, "write_documents", write_but_the_third)
    with pytest.raises(distributed.UnitFailed) as failed:
        distributed.render_invoices(settings, run_id, batch)
    assert failed.value.unit == str(batch[2])
    assert failed.value.detail == "disk full"
    states = dict(
        rows(
            sqlite_url,
            "SELECT unit, status FROM run_task WHERE stage = 'render' ORDER BY id",
        )
    )
    # Every unit of the batch was counted as delivered; the two before the failure are done.
    assert [states[str(i)] for i in batch] == ["done", "done", "running", "running"]
    # The batch delivered again skips the two done and works on the rest.
    monkeypatch.setattr(distributed, "write_documents", real_write)
    again = distributed.render_invoices(settings, run_id, batch)
    assert again.email == tuple(batch[2:])
    assert distributed.run_progress(settings, run_id).done["render"] == 4


def next_run(schedule: object, after: datetime) -> datetime:
    """When a beat entry fires next after `after`."""
    from celery.schedules import crontab

    assert isinstance(schedule, crontab)
    fixed = crontab(
        minute=schedule._orig_minute,
        hour=schedule._orig_hour,
        day_of_month=schedule._orig_day_of_month,
        nowfun=lambda: after,
    )
    return after + fixed.remaining_estimate(after)


def test_beat_closes_the_previous_month_on_the_configured_day_and_hour(
    make_settings: Callable[..., Settings],
) -> None:
    entries = beat_schedule(make_settings(close_day=3, close_hour=7, close_expires_hours=10))
    close = entries["close-previous-month"]
    assert close["task"] == "workers.tasks.close_previous_month"
    assert close["options"]["expires"] == 10 * 3600
    moments = [
        datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
        datetime(2026, 12, 3, 7, 0, 1, tzinfo=UTC),
        datetime(2027, 1, 31, 23, 0, tzinfo=UTC),
    ]
    fired = [next_run(close["schedule"], moment) for moment in moments]
    assert fired == [
        datetime(2026, 12, 3, 7, 0, tzinfo=UTC),
        datetime(2027, 1, 3, 7, 0, tzinfo=UTC),
        datetime(2027, 2, 3, 7, 0, tzinfo=UTC),
    ]
    assert entries["sweep-stalled-runs"]["task"] == "workers.tasks.sweep"
