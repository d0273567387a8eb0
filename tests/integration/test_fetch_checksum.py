"""The fetch stage on fixed upstream bodies: the usage checksum a run stores is the one earlier
versions stored for the same pages (runs keep it, a re-rate carries it over, the audit trail
shows it), and what is snapshotted and counted as duplicates is unchanged."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlmodel import Session

from billing.close.fetch import fetch_and_snapshot
from billing.db.engine import ledger_engine
from billing.db.repository import start_run
from billing.db.tables import UsageSnapshotRow
from billing.periods import BillingPeriod
from billing.usage.client import UsageClient, UsageQuery

PERIOD = BillingPeriod.parse("2026-10")
QUERY = UsageQuery.for_period(PERIOD, extra_group_by=("session_kind",))
DAY = 86_400
# The checksum of BODIES as the client and fetch stage computed it before issue 21's changes
# to the client (the SHA-256 of the pages' SHA-256 hex digests, in order).
CHECKSUM_OF_BODIES = "be6d2e17f290f047ae6a20e666da5574766ea939f8dae388cea71aa71f19a377"


def result(org: str, key: str, user: str | None, kind: str, **values: Any) -> dict[str, Any]:
    return {
        "object": "organization.usage.sandbox.result",
        "org_id": org,
        "api_key_id": key,
        "user_id": user,
        "session_kind": kind,
        **values,
    }


def bucket(day: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    start = PERIOD.start_unix + day * DAY
    return {"object": "bucket", "start_time": start, "end_time": start + DAY, "results": results}


FIRST = [
    bucket(
        0,
        [
            result("org-1", "k1", "u1", "standard", duration_ms=60_000, num_sessions=2),
            result("org-1", "k1", None, "browser", duration_ms=5, peak_memory_mib=1.5),
            result("org-2", "k2", "u2", "standard", duration_ms=7, reserved_memory_mib=512),
        ],
    ),
    bucket(1, [result("org-1", "k1", "u1", "standard", duration_ms=9, num_sessions=1)]),
]
SECOND = [bucket(2, [result("org-3", "k3", "u3", "standard", duration_ms=10**12)])]


def body(data: list[dict[str, Any]], next_page: str | None) -> bytes:
    page = {"object": "page", "data": data, "has_more": next_page is not None}
    page["next_page"] = next_page
    return json.dumps(page, separators=(",", ":")).encode()


# The second page replays the first one's results (a duplicated page), then comes the last.
BODIES = {
    None: body(FIRST, "p2"),
    "p2": body(FIRST, "p3"),
    "p3": body(SECOND, None),
}


def test_the_checksum_and_snapshot_of_fixed_pages_are_those_of_before(sqlite_url: str) -> None:
    engine = ledger_engine(sqlite_url, migrate=True)
    try:
        with Session(engine) as session:
            run_id = start_run(session, PERIOD, "test", "https://mka1.test", datetime.now(UTC))

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=BODIES[request.url.params.get("page")])

        with httpx.Client(transport=httpx.MockTransport(handler)) as http:
            client = UsageClient(http, "https://mka1.test", SecretStr("k"))
            fetched = fetch_and_snapshot(client, QUERY, engine, run_id, lambda _: None)
        with Session(engine) as session:
            stored = session.execute(
                select(func.count()).select_from(UsageSnapshotRow)
            ).scalar_one()
    finally:
        engine.dispose()
    pages = hashlib.sha256()
    for number in (None, "p2", "p3"):
        pages.update(hashlib.sha256(BODIES[number]).hexdigest().encode())
    assert fetched.checksum == pages.hexdigest() == CHECKSUM_OF_BODIES
    assert (fetched.pages, fetched.duplicate_results, stored) == (3, 4, 5)
    assert fetched.org_totals["org-1"] == {
        "duration_ms": 60_014,
        "workspace_bytes_in": 0,
        "workspace_bytes_out": 0,
        "num_sessions": 3,
    }
    assert fetched.org_totals["org-3"]["duration_ms"] == 10**12
