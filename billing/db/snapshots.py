"""The usage snapshot: every result a run priced, written in bulk per page, read back to re-rate."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from operator import attrgetter

from sqlalchemy import select
from sqlmodel import Session, col

from billing.db.bulk import copy_rows
from billing.db.tables import BillingRun, UsageSnapshotRow
from billing.domain import UsageRecord
from billing.states import RunStatus

_RECORD_FIELDS = tuple(field.name for field in dataclasses.fields(UsageRecord))


def store_snapshot_page(
    session: Session, run_id: int, page: int, records: Sequence[UsageRecord]
) -> None:
    """A page's results in one bulk load: COPY on PostgreSQL (the caller commits)."""
    if not records:
        return
    values = attrgetter(*_RECORD_FIELDS)
    copy_rows(
        session,
        UsageSnapshotRow,
        ("run_id", "page", *_RECORD_FIELDS),
        ((run_id, page, *values(record)) for record in records),
    )


def iter_snapshot(
    session: Session, run_id: int, batch: int = 5_000, org_ids: Sequence[str] | None = None
) -> Iterator[UsageRecord]:
    """A run's snapshot (or some orgs' part of it) as usage records, in fetch order, streamed
    in batches."""
    columns = UsageSnapshotRow.__table__.c  # type: ignore[attr-defined]
    query = (
        select(*(columns[name] for name in _RECORD_FIELDS))
        .where(columns.run_id == run_id)
        .order_by(columns.id)
        .execution_options(yield_per=batch)
    )
    if org_ids is not None:
        query = query.where(columns.org_id.in_(org_ids))
    for row in session.execute(query):
        yield UsageRecord(*row)


def latest_snapshot_run(session: Session, period: str) -> BillingRun | None:
    """The newest run of a period that fetched usage itself and finished: what a re-rate uses."""
    query = (
        select(BillingRun)
        .where(col(BillingRun.period) == period)
        .where(col(BillingRun.status) == RunStatus.SUCCEEDED)
        .where(col(BillingRun.rerated_from_run_id).is_(None))
        .where(col(BillingRun.usage_checksum).is_not(None))
        .order_by(col(BillingRun.id).desc())
        .limit(1)
    )
    return session.execute(query).scalars().first()


def iter_snapshot_orgs(
    session: Session, run_id: int, batch: int = 5_000
) -> Iterator[tuple[str, list[UsageRecord]]]:
    """A run's snapshot one org at a time, in org-id order (each org's results in fetch
    order), streamed: only the org being read is held."""
    columns = UsageSnapshotRow.__table__.c  # type: ignore[attr-defined]
    query = (
        select(*(columns[name] for name in _RECORD_FIELDS))
        .where(columns.run_id == run_id)
        .order_by(columns.org_id, columns.id)
        .execution_options(yield_per=batch)
    )
    current: str | None = None
    records: list[UsageRecord] = []
    for row in session.execute(query):
        record = UsageRecord(*row)
        if record.org_id != current:
            if current is not None:
                yield current, records
            current, records = record.org_id, []
        records.append(record)
    if current is not None:
        yield current, records
