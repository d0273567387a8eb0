"""The fetch stage of a close: stream usage into exact totals and the snapshot, then check it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session

from billing.db.snapshots import store_snapshot_page
from billing.errors import IncompleteUsage
from billing.rating import UsageAggregate
from billing.usage.client import UsageClient, UsageQuery
from billing.usage.completeness import (
    compare_org_totals,
    grouped_org_totals,
    reference_org_totals,
)

Progress = Callable[[str], None]


@dataclass
class FetchedUsage:
    """What the fetch stage hands to rating, and the evidence it leaves on the run."""

    aggregate: UsageAggregate
    pages: int = 0
    checksum: str = ""
    duplicate_results: int = 0
    completeness: str = "skipped"


def describe_query(base_url: str, query: UsageQuery) -> str:
    """The upstream request of a run as JSON, for the audit trail (never the API key)."""
    return json.dumps({"base_url": base_url, **query.params()}, sort_keys=True)


def fetch_and_snapshot(
    client: UsageClient, query: UsageQuery, engine: Engine, run_id: int, progress: Progress
) -> FetchedUsage:
    """Stream every page into exact totals and store it in the snapshot, one insert per page.

    The checksum is the SHA-256 of the pages' own SHA-256 digests, in order.
    """
    fetched = FetchedUsage(UsageAggregate())
    pages_digest = hashlib.sha256()
    for page in client.iter_pages(query):
        fetched.aggregate.add_all(page.records)
        with Session(engine) as session, session.begin():
            store_snapshot_page(session, run_id, page.number, page.records)
        pages_digest.update(page.body_sha256.encode())
        fetched.pages = page.number
        progress(f"fetched usage page {page.number} ({len(page.records)} results)")
    fetched.checksum = pages_digest.hexdigest()
    fetched.duplicate_results = client.stats.duplicate_results
    return fetched


def check_completeness(
    client: UsageClient, query: UsageQuery, fetched: FetchedUsage, progress: Progress
) -> None:
    """Fetch the period by org only and require the grouped usage to add up to it, org by org."""
    reference_query = dataclasses.replace(query, group_by=("org_id",))
    reference = reference_org_totals(client.iter_records(reference_query))
    differences = compare_org_totals(grouped_org_totals(fetched.aggregate), reference)
    if differences:
        fetched.completeness = "failed"
        orgs = sorted({difference.org_id for difference in differences})
        shown = "; ".join(str(difference) for difference in differences[:4])
        more = f" and {len(differences) - 4} more" if len(differences) > 4 else ""
        raise IncompleteUsage(
            f"usage of {len(orgs)} org(s) does not add up to the per-org totals "
            f"({shown}{more}); nothing was billed, retry the close later or report it upstream"
        )
    fetched.completeness = "passed"
    progress(f"completeness check passed for {len(reference)} orgs")
