"""The fetch stage of a close: usage streamed into the snapshot, checked against org totals."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from billing.close.pricing import Pricing
from billing.config import Settings
from billing.db.snapshots import store_snapshot_page
from billing.domain import RatingReport
from billing.errors import IncompleteUsage
from billing.usage.client import UsageClient, UsageQuery, tls_context
from billing.usage.completeness import (
    add_org_totals,
    compare_org_totals,
    reference_org_totals,
)
from billing.wording import plural

Progress = Callable[[str], None]

# Snapshot pages written per transaction on PostgreSQL: a commit per page cost a third of the
# load's time.
PAGES_PER_COMMIT = 25


@dataclass
class FetchedUsage:
    """What the fetch stage leaves on the run: the snapshot's counts and evidence, and the per-org
    sums the completeness check compares (a few integers per org; rating reads the snapshot)."""

    report: RatingReport = field(default_factory=RatingReport)
    org_totals: dict[str, dict[str, int]] = field(default_factory=dict)
    pages: int = 0
    checksum: str = ""
    duplicate_results: int = 0
    completeness: str = "skipped"


class FetchFacts(Protocol):
    """Where a run keeps what its fetch found: its outcome in memory, or its row."""

    pages_fetched: int
    usage_checksum: str | None
    duplicate_results: int
    completeness: str | None


def record_fetch(facts: FetchFacts, fetched: FetchedUsage) -> None:
    """Note the pages, checksum, duplicates and completeness a fetch found."""
    facts.pages_fetched = fetched.pages
    facts.usage_checksum = fetched.checksum
    facts.duplicate_results = fetched.duplicate_results
    facts.completeness = fetched.completeness


def close_query(settings: Settings, pricing: Pricing, org_ids: Sequence[str]) -> UsageQuery:
    """The usage fetch of a close of the pricing's period (only `org_ids` when given), bucketed
    and grouped as the settings say."""
    return pricing.usage_query(
        tuple(org_ids), settings.mka1_bucket_width, settings.mka1_group_by_extra
    )


def fetch_checked(
    settings: Settings,
    http: httpx.Client,
    query: UsageQuery,
    engine: Engine,
    run_id: int,
    progress: Progress,
    facts: FetchFacts | None = None,
) -> FetchedUsage:
    """Fetch the usage into the run's snapshot, then check it adds up to the per-org totals
    (when BILLING_COMPLETENESS_CHECK is on); `facts` gets what the fetch found, also when the
    check fails."""
    client = usage_client(settings, http)
    fetched = fetch_and_snapshot(client, query, engine, run_id, progress)
    try:
        if settings.completeness_check:
            check_completeness(client, query, fetched, progress)
    finally:
        if facts is not None:
            record_fetch(facts, fetched)
    return fetched


def describe_query(base_url: str, query: UsageQuery) -> str:
    """The upstream request of a run as JSON, for the audit trail (never the API key)."""
    return json.dumps({"base_url": base_url, **query.params()}, sort_keys=True)


def fetch_and_snapshot(
    client: UsageClient, query: UsageQuery, engine: Engine, run_id: int, progress: Progress
) -> FetchedUsage:
    """Stream every page into the snapshot, one COPY per page, keeping only counts and
    per-org sums (rating reads the snapshot back org by org).

    The checksum is the SHA-256 of the pages' own SHA-256 digests, in order.
    """
    fetched = FetchedUsage()
    pages_digest = hashlib.sha256()
    # SQLite has one writer for the whole file: free it between pages.
    pages_per_commit = 1 if engine.dialect.name == "sqlite" else PAGES_PER_COMMIT
    with Session(engine) as session:
        for page in client.iter_pages(query):
            for record in page.records:
                fetched.report.tally(record)
            add_org_totals(fetched.org_totals, page.records)
            store_snapshot_page(session, run_id, page.number, page.records)
            if page.number % pages_per_commit == 0:
                session.commit()
            pages_digest.update(page.body_sha256.encode())
            fetched.pages = page.number
            progress(f"fetched usage page {page.number} ({len(page.records)} results)")
        session.commit()
    fetched.checksum = pages_digest.hexdigest()
    fetched.duplicate_results = client.stats.duplicate_results
    return fetched


def check_completeness(
    client: UsageClient, query: UsageQuery, fetched: FetchedUsage, progress: Progress
) -> None:
    """Fetch the period by org only and require the grouped usage to add up to it, org by org."""
    reference_query = dataclasses.replace(query, group_by=("org_id",))
    reference = reference_org_totals(client.iter_records(reference_query))
    differences = compare_org_totals(fetched.org_totals, reference)
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
    progress(f"completeness check passed for {plural(len(reference), 'org')}")


def usage_client(settings: Settings, http: httpx.Client) -> UsageClient:
    return UsageClient(
        http,
        settings.mka1_base_url,
        settings.mka1_api_key,
        on_behalf_of=settings.mka1_on_behalf_of,
        max_attempts=settings.mka1_max_attempts,
        page_deadline_seconds=settings.mka1_page_deadline_seconds,
    )


def http_client(settings: Settings) -> httpx.Client:
    timeout = httpx.Timeout(
        settings.mka1_timeout_seconds, connect=min(10.0, settings.mka1_timeout_seconds)
    )
    return httpx.Client(timeout=timeout, follow_redirects=False, verify=tls_context())
