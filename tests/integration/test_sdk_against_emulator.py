"""The official MKA1 Python SDK (meetkai-mka1) reads the emulator over real HTTP."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from meetkai_mka1 import SDK, errors, models
from pydantic import SecretStr

from billing.periods import BillingPeriod
from billing.usage.client import UsageClient, UsageQuery
from billing.usage.emulator import running_emulator

API_KEY = "sk-sdk-check-7731"
MONTH = BillingPeriod.parse("2026-02")
WIDTHS: dict[models.SandboxUsageBucketWidth, int] = {"1m": 60, "1h": 3_600, "1d": 86_400}
BILLING_GROUP_BY = ("org_id", "api_key_id", "user_id")
ORGS, SEED, PAGE_SIZE = 3, 1, 400
QUIET_ORGS = ["org-0009", "org-0010"]  # of 12 orgs of seed 1 the least active: fewest minutes
Totals = Counter[tuple[str, str]]


class PagedSDK:
    """The SDK's `usage.sandbox`, following `next_page` to the last page.

    The SDK's sandbox usage call has no cursor argument (its LLM usage calls take `page`), so
    the cursor goes in the `page` query parameter through the SDK's own httpx client.
    """

    def __init__(self, base_url: str, api_key: str) -> None:
        self._cursor: str | None = None
        self.http = httpx.Client(event_hooks={"request": [self._add_cursor]})
        self.sdk = SDK(
            bearer_auth=api_key, server_url=base_url, client=self.http, timeout_ms=120_000
        )

    def _add_cursor(self, request: httpx.Request) -> None:
        if self._cursor is not None:
            request.url = request.url.copy_add_param("page", self._cursor)

    def pages(
        self, start: int, end: int, width: models.SandboxUsageBucketWidth, **options: Any
    ) -> Iterator[models.SandboxUsagePage]:
        self._cursor = None
        try:
            while True:
                page = self.sdk.usage.sandbox(
                    start_time=start,
                    end_time=end,
                    bucket_width=width,
                    group_by=list(BILLING_GROUP_BY),
                    all_orgs=True,
                    **options,
                )
                yield page
                if not page.has_more:
                    return
                assert page.next_page, "has_more without next_page"
                self._cursor = page.next_page
        finally:
            self._cursor = None


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    with running_emulator(orgs=ORGS, seed=SEED, page_size=PAGE_SIZE, api_key=API_KEY) as url:
        yield url


@pytest.fixture(scope="module")
def twelve_orgs_url() -> Iterator[str]:
    with running_emulator(orgs=12, seed=SEED, page_size=5 * PAGE_SIZE, api_key=API_KEY) as url:
        yield url


@pytest.fixture
def paged_sdk(emulator_url: str) -> Iterator[PagedSDK]:
    paged = PagedSDK(emulator_url, API_KEY)
    try:
        yield paged
    finally:
        paged.http.close()


def buckets_of(pages: list[models.SandboxUsagePage]) -> list[models.SandboxUsageBucket]:
    """The buckets of all pages, a bucket split over pages joined into one."""
    joined: list[models.SandboxUsageBucket] = []
    for page in pages:
        for bucket in page.data or []:
            if joined and joined[-1].start_time == bucket.start_time:
                assert joined[-1].end_time == bucket.end_time
                joined[-1].results = [*(joined[-1].results or []), *(bucket.results or [])]
            else:
                joined.append(bucket.model_copy(update={"results": list(bucket.results or [])}))
    return joined


def sdk_totals(buckets: list[models.SandboxUsageBucket]) -> Totals:
    totals: Totals = Counter()
    for bucket in buckets:
        for result in bucket.results or []:
            assert isinstance(result.org_id, str)
            totals[result.org_id, "duration_ms"] += result.duration_ms or 0
            totals[result.org_id, "num_sessions"] += result.num_sessions or 0
            totals[result.org_id, "workspace_bytes_out"] += result.workspace_bytes_out or 0
    return totals


def billing_client_totals(base_url: str, query: UsageQuery) -> Totals:
    """The same month read by this service's own client, for comparison."""
    totals: Totals = Counter()
    with httpx.Client() as http:
        for record in UsageClient(http, base_url, SecretStr(API_KEY)).iter_records(query):
            totals[record.org_id, "duration_ms"] += record.duration_ms
            totals[record.org_id, "num_sessions"] += record.num_sessions
            totals[record.org_id, "workspace_bytes_out"] += record.workspace_bytes_out
    return totals


def assert_whole_month_of_aligned_buckets(
    buckets: list[models.SandboxUsageBucket], width: models.SandboxUsageBucketWidth
) -> None:
    seconds = WIDTHS[width]
    assert len(buckets) == (MONTH.end_unix - MONTH.start_unix) // seconds
    assert buckets[0].start_time == MONTH.start_unix
    assert buckets[-1].end_time == MONTH.end_unix
    for bucket, following in itertools.pairwise(buckets):
        assert bucket.end_time == following.start_time
    assert all(
        b.start_time % seconds == 0 and b.end_time - b.start_time == seconds for b in buckets
    )


@pytest.mark.parametrize("width", ["1d", "1h"])
def test_the_sdk_parses_every_page_of_a_month_of_all_orgs(
    paged_sdk: PagedSDK, emulator_url: str, width: models.SandboxUsageBucketWidth
) -> None:
    pages = list(paged_sdk.pages(MONTH.start_unix, MONTH.end_unix, width))

    assert len(pages) > 1
    assert all(page.object == "page" for page in pages)
    buckets = buckets_of(pages)
    assert_whole_month_of_aligned_buckets(buckets, width)
    results = [result for bucket in buckets for result in bucket.results or []]
    assert {result.org_id for result in results} == {f"org-{n:04d}" for n in range(1, ORGS + 1)}
    assert all(result.api_key_id for result in results)
    assert all(result.object == "organization.usage.sandbox.result" for result in results)
    query = UsageQuery(MONTH.start_unix, MONTH.end_unix, bucket_width=width)
    assert sdk_totals(buckets) == billing_client_totals(emulator_url, query)


@pytest.mark.parametrize("width", ["1d", "1h", "1m"])
def test_the_sdk_parses_every_page_of_a_month_filtered_by_org_ids(
    twelve_orgs_url: str, width: models.SandboxUsageBucketWidth
) -> None:
    paged = PagedSDK(twelve_orgs_url, API_KEY)
    try:
        pages = list(paged.pages(MONTH.start_unix, MONTH.end_unix, width, org_ids=QUIET_ORGS))
        days = list(paged.pages(MONTH.start_unix, MONTH.end_unix, "1d", org_ids=QUIET_ORGS))
    finally:
        paged.http.close()

    buckets = buckets_of(pages)
    assert_whole_month_of_aligned_buckets(buckets, width)
    totals = sdk_totals(buckets)
    assert {org for org, _ in totals} == set(QUIET_ORGS)
    assert totals == sdk_totals(buckets_of(days))  # minutes and hours add up to the days
    assert all(totals[org, "duration_ms"] > 0 for org in QUIET_ORGS)


@pytest.mark.parametrize("width", ["1d", "1h", "1m"])
def test_the_sdk_sees_first_and_last_buckets_snapped_to_utc_as_it_documents(
    paged_sdk: PagedSDK, emulator_url: str, width: models.SandboxUsageBucketWidth
) -> None:
    seconds = WIDTHS[width]
    start = MONTH.start_unix + 3 * seconds + seconds // 3
    end = MONTH.start_unix + 7 * seconds - seconds // 4

    buckets = buckets_of(list(paged_sdk.pages(start, end, width)))

    assert [(b.start_time, b.end_time) for b in buckets] == [
        (MONTH.start_unix + n * seconds, MONTH.start_unix + (n + 1) * seconds) for n in range(3, 7)
    ]
    query = UsageQuery(start, end, bucket_width=width)
    assert billing_client_totals(emulator_url, query) == sdk_totals(buckets)


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        (
            {"start_time": MONTH.end_unix, "end_time": MONTH.start_unix},
            "end_time",
            "Value error, end_time must be greater than start_time",
        ),
        (
            {"start_time": MONTH.start_unix, "group_by": ["org_id", "model"]},
            "group_by",
            "Value error, unknown group_by dimension 'model'; expected any of org_id, "
            "api_key_id, user_id, session_kind, operation, provider",
        ),
        (
            {
                "start_time": MONTH.start_unix,
                "end_time": MONTH.start_unix + 70 * 86_400,
                "bucket_width": "1m",
            },
            "bucket_width",
            "Value error, the window holds more than 100000 buckets",
        ),
    ],
)
def test_the_sdk_parses_the_emulators_422_as_its_http_validation_error(
    paged_sdk: PagedSDK, options: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(errors.HTTPValidationError) as rejected:
        paged_sdk.sdk.usage.sandbox(all_orgs=True, **options)

    assert rejected.value.raw_response.status_code == 422
    detail = rejected.value.data.detail
    assert detail is not None
    assert [(item.loc, item.msg, item.type) for item in detail] == [
        (["query", field], message, "value_error")
    ]


def test_the_sdk_with_a_wrong_key_gets_a_401_it_can_read(emulator_url: str) -> None:
    paged = PagedSDK(emulator_url, "sk-wrong")
    try:
        with pytest.raises(errors.SDKDefaultError) as refused:
            paged.sdk.usage.sandbox(start_time=MONTH.start_unix, end_time=MONTH.end_unix)
    finally:
        paged.http.close()

    assert refused.value.raw_response.status_code == 401
    assert refused.value.body == '{"detail":"Invalid API key"}'
