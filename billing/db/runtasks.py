"""The units of work of a distributed run (rate batches, renders, emails), as database rows:
completion is decided from them, redeliveries are counted on them, and a sweep finds what a
lost message left undone."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlmodel import Session, col

from billing.db.tables import BillingRun, RunTask
from billing.states import RunStatus, UnitStatus


def add_units(
    session: Session, run_id: int, stage: str, units: Sequence[tuple[str, object]], now: datetime
) -> None:
    """Queue units of a stage (skipping any already there), each with its JSON payload."""
    existing = set(
        session.execute(
            select(col(RunTask.unit)).where(
                col(RunTask.run_id) == run_id, col(RunTask.stage) == stage
            )
        )
        .scalars()
        .all()
    )
    rows = [
        {
            "run_id": run_id,
            "stage": stage,
            "unit": unit,
            "status": UnitStatus.QUEUED,
            "attempts": 0,
            "payload": json.dumps(payload),
            "updated_at": now,
        }
        for unit, payload in units
        if unit not in existing
    ]
    if rows:
        session.execute(insert(RunTask), rows)


def begin_unit(
    session: Session, run_id: int, stage: str, unit: str, cap: int, now: datetime
) -> RunTask | None:
    """Count a delivery of a unit and say whether to work on it.

    None when it is done already (a redelivered or duplicated message), or parked: a unit
    delivered more than `cap` times is parked and reported instead of looping forever.
    """
    task = session.execute(
        select(RunTask)
        .where(
            col(RunTask.run_id) == run_id,
            col(RunTask.stage) == stage,
            col(RunTask.unit) == unit,
        )
        .with_for_update()
    ).scalar_one_or_none()
    if task is None:
        task = RunTask(
            run_id=run_id,
            stage=stage,
            unit=unit,
            status=UnitStatus.QUEUED,
            payload="null",
            updated_at=now,
        )
        session.add(task)
    if task.status in (UnitStatus.DONE, UnitStatus.PARKED, UnitStatus.FAILED):
        return None
    task.attempts += 1
    task.updated_at = now
    if task.attempts > cap:
        task.status = UnitStatus.PARKED
        task.error = f"parked after {task.attempts - 1} deliveries (cap {cap}): a poison task?"
        session.flush()
        return None
    task.status = UnitStatus.RUNNING
    session.flush()
    return task


def finish_unit(
    session: Session,
    run_id: int,
    stage: str,
    unit: str,
    now: datetime,
    *,
    result: object = None,
    error: str | None = None,
) -> None:
    session.execute(
        update(RunTask)
        .where(
            col(RunTask.run_id) == run_id,
            col(RunTask.stage) == stage,
            col(RunTask.unit) == unit,
        )
        .values(
            status=UnitStatus.FAILED if error else UnitStatus.DONE,
            result=json.dumps(result) if result is not None else None,
            error=error,
            updated_at=now,
        )
    )


def stage_counts(session: Session, run_id: int) -> dict[str, Counter[str]]:
    """Per stage, how many units are in each state."""
    counts: dict[str, Counter[str]] = {}
    for stage, status in session.execute(
        select(col(RunTask.stage), col(RunTask.status)).where(col(RunTask.run_id) == run_id)
    ):
        counts.setdefault(stage, Counter())[status] += 1
    return counts


def undone_units(session: Session, run_id: int, stage: str) -> list[RunTask]:
    return list(
        session.execute(
            select(RunTask)
            .where(
                col(RunTask.run_id) == run_id,
                col(RunTask.stage) == stage,
                col(RunTask.status).in_((UnitStatus.QUEUED, UnitStatus.RUNNING)),
            )
            .order_by(col(RunTask.id))
        )
        .scalars()
        .all()
    )


def unit_results(session: Session, run_id: int, stage: str) -> list[object]:
    return [
        json.loads(text)
        for text in session.execute(
            select(col(RunTask.result)).where(
                col(RunTask.run_id) == run_id,
                col(RunTask.stage) == stage,
                col(RunTask.result).is_not(None),
            )
        ).scalars()
    ]


def stalled_runs(session: Session, before: datetime) -> list[int]:
    """Distributed runs still running whose last sign of life is older than `before`."""
    return list(
        session.execute(
            select(col(BillingRun.id)).where(
                col(BillingRun.status) == RunStatus.RUNNING,
                col(BillingRun.mode) == "distributed",
                col(BillingRun.heartbeat_at) < before,
            )
        )
        .scalars()
        .all()
    )
