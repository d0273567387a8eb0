"""Sending a close to the Celery workers from the command line, and following it to the end."""

from __future__ import annotations

import time
from collections.abc import Callable

from billing.close.distributed import RunProgress, run_progress
from billing.config import Settings
from billing.errors import BillingError
from billing.periods import BillingPeriod
from billing.states import RunStatus


def close_on_workers(
    settings: Settings,
    period: BillingPeriod,
    trigger: str,
    org_ids: tuple[str, ...] = (),
    *,
    draft: bool = False,
    reissue: bool = False,
    review: bool = False,
    timeout: float = 3600,  # float-ok: seconds
    on_progress: Callable[[RunProgress], None] = lambda _progress: None,
) -> RunProgress:
    """Enqueue the close of a period, then follow its run in the database until it ends.

    Completion is read from the database (not from a result message), so the CLI sees the
    same truth as `billing runs show`.
    """
    from celery.exceptions import TimeoutError as CeleryTimeout

    from workers.tasks import close_period

    sent = close_period.apply_async(
        args=[str(period), trigger, list(org_ids)],
        kwargs={"draft": draft, "reissue": reissue, "review": review},
    )
    try:
        answer = sent.get(timeout=min(timeout, 120), propagate=False)
    except CeleryTimeout:
        raise BillingError(
            f"close of {period} was queued as task {sent.id} but no worker took it in 120 s; "
            "is a worker running (celery -A workers.celery_app worker -Q billing.fetch)?"
        ) from None
    if sent.failed() or not isinstance(answer, dict):
        raise BillingError(f"close of {period} failed on the worker: {answer}")
    if "skipped" in answer:
        raise BillingError(f"close of {period} did not start: {answer['skipped']}")
    run_id = int(answer["run_id"])
    deadline = time.monotonic() + timeout
    while True:
        progress = run_progress(settings, run_id)
        on_progress(progress)
        if progress.status != RunStatus.RUNNING:
            break
        if time.monotonic() > deadline:
            raise BillingError(
                f"run {run_id} of {period} is still {progress.stage} after {timeout:.0f} s; "
                f"it goes on without this command: billing runs show {run_id}"
            )
        time.sleep(1)
    if progress.status != RunStatus.SUCCEEDED:
        raise BillingError(f"run {run_id} of {period} {progress.status}: {progress.error}")
    return progress
