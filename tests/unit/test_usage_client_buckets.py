"""The usage client on calendar-aligned buckets: edge buckets beyond the range, months, checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from billing.errors import UsageContractError
from billing.periods import BillingPeriod
from billing.usage.client import UsageClient, UsageQuery
from billing.usage.completeness import add_org_totals, compare_org_totals, reference_org_totals

BASE = "https://mka1.test"
DAY_START = 1_767_225_600  # 2026-01-01T00:00:00Z
WIDTHS = {"1m": 60, "1h": 3_600, "1d": 86_400}

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler) -> UsageClient:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return UsageClient(http, BASE, SecretStr("sk-test"), max_attempts=1)


def bucket(start: int, end: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "bucket", "start_time": start, "end_time": end, "results": results}


def result(org: str, key: str, duration_ms: int, sessions: int = 1) -> dict[str, Any]:
    return {
        "object": "organization.usage.sandbox.result",
        "org_id": org,
        "api_key_id": key,
        "user_id": None,
        "duration_ms": duration_ms,
        "num_sessions": sessions,
    }


def serving(buckets: list[dict[str, Any]]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"object": "page", "data": buckets, "has_more": False, "next_page": None}
        )

    return handler


@pytest.mark.parametrize("width", ["1d", "1h", "1m"])
def test_first_and_last_buckets_beyond_an_unaligned_range_are_kept_whole(width: str) -> None:
    seconds = WIDTHS[width]
    start, end = DAY_START + seconds // 4, DAY_START + 2 * seconds - seconds // 3
    query = UsageQuery(start_time=start, end_time=end, bucket_width=width)
    upstream = [
        bucket(DAY_START, DAY_START + seconds, [result("org-a", "k1", 1_000)]),
        bucket(DAY_START + seconds, DAY_START + 2 * seconds, [result("org-a", "k2", 2_500)]),
    ]

    records = list(client_for(serving(upstream)).iter_records(query))

    assert [(r.bucket_start, r.bucket_end, r.duration_ms) for r in records] == [
        (DAY_START, DAY_START + seconds, 1_000),
        (DAY_START + seconds, DAY_START + 2 * seconds, 2_500),
    ]


@pytest.mark.parametrize("width", ["1d", "1h", "1m"])
def test_a_month_is_aligned_for_every_width_so_no_bucket_may_overhang_it(width: str) -> None:
    period = BillingPeriod.parse("2028-02")
    query = UsageQuery.for_period(period)
    query = UsageQuery(query.start_time, query.end_time, bucket_width=width)
    assert query.snapped_range() == (period.start_unix, period.end_unix)
    before = period.start_unix - WIDTHS[width]
    overhanging = [bucket(before, period.start_unix + WIDTHS[width], [])]

    with pytest.raises(UsageContractError, match=r"field data\.0: bucket .* lies outside"):
        list(client_for(serving(overhanging)).iter_records(query))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (DAY_START - 86_400, DAY_START),  # before the range, touching it but not overlapping
        (DAY_START + 2 * 86_400, DAY_START + 3 * 86_400),  # after the snapped range
        (DAY_START - 86_400, DAY_START + 86_400),  # overhangs by a whole width
        (DAY_START + 86_400, DAY_START + 86_400),  # empty
    ],
)
def test_a_bucket_that_snapping_cannot_explain_is_still_refused(start: int, end: int) -> None:
    query = UsageQuery(start_time=DAY_START + 3_600, end_time=DAY_START + 86_400 + 3_600)
    assert query.snapped_range() == (DAY_START, DAY_START + 2 * 86_400)

    with pytest.raises(UsageContractError) as refused:
        list(client_for(serving([bucket(start, end, [])])).iter_records(query))

    assert str(refused.value) == (
        f"usage page 1: field data.0: bucket [{start}, {end}) lies outside the requested period "
        f"[{DAY_START + 3_600}, {DAY_START + 86_400 + 3_600}) (with 1d buckets aligned in UTC: "
        f"[{DAY_START}, {DAY_START + 2 * 86_400})); the upstream answered for another range, "
        "report it"
    )


def test_completeness_passes_when_both_fetches_carry_the_same_edge_buckets() -> None:
    query = UsageQuery(start_time=DAY_START + 7_200, end_time=DAY_START + 86_400 + 60)
    grouped = [
        bucket(
            DAY_START, DAY_START + 86_400, [result("org-a", "k1", 700), result("org-a", "k2", 5)]
        ),
        bucket(DAY_START + 86_400, DAY_START + 2 * 86_400, [result("org-b", "k3", 40, 2)]),
    ]
    org_only = [
        bucket(DAY_START, DAY_START + 86_400, [result("org-a", "", 705, 2)]),
        bucket(DAY_START + 86_400, DAY_START + 2 * 86_400, [result("org-b", "", 40, 2)]),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        by_org_only = request.url.params["group_by"] == "org_id"
        return serving(org_only if by_org_only else grouped)(request)

    client = client_for(handler)
    totals: dict[str, dict[str, int]] = {}
    add_org_totals(totals, client.iter_records(query))
    reference_query = UsageQuery(query.start_time, query.end_time, group_by=("org_id",))
    reference = reference_org_totals(client.iter_records(reference_query))

    assert compare_org_totals(totals, reference) == []
    assert totals["org-a"]["duration_ms"] == 705
    assert totals["org-b"]["num_sessions"] == 2
