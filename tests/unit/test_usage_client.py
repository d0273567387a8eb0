"""The usage client over httpx.MockTransport: pagination, errors, retries, exact decimals."""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from billing.config import Settings
from billing.errors import (
    UpstreamAuthError,
    UpstreamRejected,
    UpstreamUnavailable,
    UsageContractError,
)
from billing.periods import BillingPeriod
from billing.usage.client import FetchStats, UsageClient, UsageQuery

QUERY = UsageQuery(start_time=1_790_812_800, end_time=1_793_491_200)
BASE = "https://mka1.test"


def page(
    results: list[dict[str, Any]], *, has_more: bool = False, next_page: str | None = None
) -> dict[str, Any]:
    return {
        "object": "page",
        "data": [
            {
                "object": "bucket",
                "start_time": QUERY.start_time,
                "end_time": QUERY.start_time + 86400,
                "results": results,
            }
        ],
        "has_more": has_more,
        "next_page": next_page,
    }


def result(org: str = "org-1", **values: Any) -> dict[str, Any]:
    return {
        "object": "organization.usage.sandbox.result",
        "org_id": org,
        "api_key_id": "k",
        "user_id": None,
        **values,
    }


def client_for(
    handler: Callable[[httpx.Request], httpx.Response], attempts: int = 3
) -> UsageClient:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return UsageClient(
        http, BASE, SecretStr("sk-secret-value"), max_attempts=attempts, max_wait_seconds=0.01
    )


def test_follows_cursor_pages_with_the_query_and_bearer_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        cursor = request.url.params.get("page")
        if cursor is None:
            return httpx.Response(
                200, json=page([result(duration_ms=1)], has_more=True, next_page="c2")
            )
        return httpx.Response(200, json=page([result("org-2", duration_ms=2)]))

    records = list(client_for(handler).iter_records(QUERY))
    assert [r.duration_ms for r in records] == [1, 2]
    first = seen[0].url.params
    assert first["group_by"] == "org_id,api_key_id,user_id"
    assert first["all_orgs"] == "true"
    assert first["bucket_width"] == "1d"
    assert seen[1].url.params["page"] == "c2"
    assert seen[1].url.params["start_time"] == str(QUERY.start_time)
    assert all(r.headers["Authorization"] == "Bearer sk-secret-value" for r in seen)


def test_follows_a_url_cursor_on_the_same_host_and_refuses_another() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("p") == "2":
            return httpx.Response(200, json=page([result(duration_ms=5)]))
        return httpx.Response(
            200, json=page([], has_more=True, next_page=f"{BASE}/api/v1/sandbox/usage?p=2")
        )

    assert [r.duration_ms for r in client_for(handler).iter_records(QUERY)] == [5]

    def evil(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json=page([], has_more=True, next_page="https://evil.test/steal")
        )

    with pytest.raises(UsageContractError, match="another host"):
        list(client_for(evil).iter_records(QUERY))


def test_peak_memory_is_parsed_exactly() -> None:
    body = json.dumps(page([result()])).replace(
        '"user_id": null', '"user_id": null, "peak_memory_mib": 1234.567890123456789'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=body.encode(), headers={"content-type": "application/json"}
        )

    (record,) = client_for(handler).iter_records(QUERY)
    assert record.peak_memory_mib == Decimal("1234.567890123456789")


def test_unauthorised_is_a_clear_error_without_the_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "Invalid API key"})

    with pytest.raises(UpstreamAuthError) as raised:
        list(client_for(handler).iter_records(QUERY))
    assert "MKA1_API_KEY" in str(raised.value)
    assert "sk-secret-value" not in str(raised.value)
    assert "sk-secret-value" not in repr(client_for(handler))


def test_422_shows_the_upstream_detail() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            422,
            json={
                "detail": [
                    {"loc": ["query", "start_time"], "msg": "Field required", "type": "missing"}
                ]
            },
        )

    with pytest.raises(
        UpstreamRejected, match=r"page 1: HTTP 422: query.start_time: Field required"
    ):
        list(client_for(handler).iter_records(QUERY))


def test_transient_failures_are_retried_then_reported() -> None:
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] <= 2:
            return httpx.Response(503)
        return httpx.Response(200, json=page([result(duration_ms=9)]))

    assert [r.duration_ms for r in client_for(flaky).iter_records(QUERY)] == [9]
    assert calls["n"] == 3

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(
        UpstreamUnavailable, match=r"page 1: .* failed 3 times \(last: ConnectError"
    ):
        list(client_for(down).iter_records(QUERY))


@pytest.mark.parametrize(
    ("results", "message"),
    [
        (
            [result(duration_ms=-5)],
            r"page 1: field data.0.results.0.duration_ms: Input should be greater than or equal",
        ),
        ([result(session_kind="gpu")], r"page 1: field data.0.results.0.session_kind"),
        ([result(num_sessions=1.5)], r"page 1: field data.0.results.0.num_sessions"),
        ([result(org=None)], r"page 1: field data.0.results.0.org_id: missing"),
    ],
)
def test_contract_violations_name_page_and_field(
    results: list[dict[str, Any]], message: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=page(results))

    with pytest.raises(UsageContractError, match=message):
        list(client_for(handler).iter_records(QUERY))


def test_broken_pagination_and_bodies_are_errors() -> None:
    def no_cursor(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=page([], has_more=True, next_page=None))

    with pytest.raises(UsageContractError, match="has_more is true but next_page is empty"):
        list(client_for(no_cursor).iter_records(QUERY))

    def truncated(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"object": "page", "data": [')

    with pytest.raises(UsageContractError, match="page 1: the body is not valid JSON"):
        list(client_for(truncated).iter_records(QUERY))

    def outside(request: httpx.Request) -> httpx.Response:
        body = page([result()])
        body["data"][0]["start_time"] = QUERY.start_time - 86400
        return httpx.Response(200, json=body)

    with pytest.raises(UsageContractError, match="outside the requested period"):
        list(client_for(outside).iter_records(QUERY))


# --------------------------------------------------------------------------- retry timing


class FakeTime:
    """A clock that only moves when the client sleeps, so waits are measured, never spent."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def timed_client(
    handler: Callable[[httpx.Request], httpx.Response], fake: FakeTime, **options: Any
) -> UsageClient:
    http = httpx.Client(transport=httpx.MockTransport(handler), timeout=30.0)
    settings: dict[str, Any] = {"max_attempts": 3, "max_wait_seconds": 0.01, **options}
    return UsageClient(
        http, BASE, SecretStr("sk-secret-value"), clock=fake.clock, sleep=fake.sleep, **settings
    )


def failing_then_ok(*failures: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    remaining = list(failures)

    def handler(request: httpx.Request) -> httpx.Response:
        if remaining:
            return remaining.pop(0)
        return httpx.Response(200, json=page([result(duration_ms=1)]))

    return handler


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_in_seconds_is_waited_for(status: int) -> None:
    fake = FakeTime()
    handler = failing_then_ok(httpx.Response(status, headers={"Retry-After": "7"}))
    assert [r.duration_ms for r in timed_client(handler, fake).iter_records(QUERY)] == [1]
    assert fake.sleeps == [7.0]


def test_retry_after_as_an_http_date_is_waited_for() -> None:
    fake = FakeTime()
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    handler = failing_then_ok(httpx.Response(429, headers={"Retry-After": when}))
    list(timed_client(handler, fake).iter_records(QUERY))
    (slept,) = fake.sleeps
    assert 28.0 <= slept <= 30.0


def test_retry_after_is_capped_and_ignored_on_500() -> None:
    fake = FakeTime()
    handler = failing_then_ok(
        httpx.Response(503, headers={"Retry-After": "3600"}),
        httpx.Response(500, headers={"Retry-After": "3600"}),
    )
    client = timed_client(handler, fake, max_retry_after_seconds=5.0)
    list(client.iter_records(QUERY))
    assert fake.sleeps[0] == 5.0
    assert fake.sleeps[1] <= 0.01
    assert client.stats.retries == 2


def test_backoff_grows_exponentially_with_jitter_up_to_the_maximum() -> None:
    fake = FakeTime()
    handler = failing_then_ok(*(httpx.Response(502) for _ in range(5)))
    client = timed_client(
        handler, fake, max_attempts=6, initial_wait_seconds=1.0, max_wait_seconds=5.0
    )
    list(client.iter_records(QUERY))
    first, second, third, *capped = fake.sleeps
    assert 1.0 <= first <= 2.0
    assert 2.0 <= second <= 3.0
    assert 4.0 <= third <= 5.0
    assert capped == [5.0, 5.0]


def test_the_page_deadline_stops_retries_and_bounds_request_timeouts() -> None:
    fake = FakeTime()
    timeouts: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"]["read"])
        return httpx.Response(503, headers={"Retry-After": "4"})

    client = timed_client(handler, fake, max_attempts=10, page_deadline_seconds=10.0)
    with pytest.raises(UpstreamUnavailable) as raised:
        list(client.iter_records(QUERY))
    assert str(raised.value) == (
        "usage page 1: the MKA1 API failed 3 times (last: HTTP 503) and the page deadline of "
        "10 s ran out; check MKA1_BASE_URL and retry later"
    )
    assert fake.sleeps == [4.0, 4.0]
    assert timeouts == [10.0, 6.0, 2.0]


# --------------------------------------------------------------------------- pagination safety


def test_a_cursor_cycle_is_an_error_naming_the_page() -> None:
    cycle = {None: "A", "A": "B", "B": "A"}

    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("page")
        return httpx.Response(200, json=page([], has_more=True, next_page=cycle[cursor]))

    with pytest.raises(
        UsageContractError, match=r"^usage page 3: next_page repeats a cursor already followed"
    ):
        list(client_for(handler).iter_records(QUERY))


def test_the_page_cap_stops_an_endless_pagination() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        cursor = int(request.url.params.get("page", "0"))
        return httpx.Response(200, json=page([], has_more=True, next_page=str(cursor + 1)))

    http = httpx.Client(transport=httpx.MockTransport(handler))
    client = UsageClient(http, BASE, SecretStr("k"), max_pages=5)
    with pytest.raises(UsageContractError, match=r"^usage page 5: .*after 5 pages"):
        list(client.iter_records(QUERY))
    assert client.stats.pages == 5


def test_a_replayed_page_is_dropped_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    first = [result(duration_ms=1), result("org-2", duration_ms=2)]
    bodies = {
        None: page(first, has_more=True, next_page="again"),
        "again": page(first, has_more=True, next_page="last"),
        "last": page([result("org-3", duration_ms=3)]),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=bodies[request.url.params.get("page")])

    client = client_for(handler)
    with caplog.at_level(logging.WARNING, logger="billing.usage.client"):
        pages = list(client.iter_pages(QUERY))
    assert [[r.duration_ms for r in p.records] for p in pages] == [[1, 2], [], [3]]
    assert client.stats == FetchStats(pages=3, results=3, duplicate_results=2)
    assert "usage page 2: dropped 2 results identical" in caplog.text


def test_the_same_key_with_other_values_stops_the_fetch() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=page([result(duration_ms=1), result(duration_ms=2)]))

    with pytest.raises(
        UsageContractError, match=r"page 1: the usage of org org-1, API key k, user None .* twice"
    ):
        list(client_for(handler).iter_records(QUERY))


def test_results_that_differ_by_session_kind_are_not_duplicates() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        both = [result(session_kind=kind, duration_ms=5) for kind in ("standard", "browser")]
        return httpx.Response(200, json=page(both))

    client = client_for(handler)
    records = list(client.iter_records(QUERY))
    assert [r.session_kind for r in records] == ["standard", "browser"]
    assert client.stats.duplicate_results == 0


# --------------------------------------------------------------------------- messages


def test_an_echoed_invalid_input_is_shortened() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=page([result(duration_ms="9" * 500)]))

    with pytest.raises(UsageContractError) as raised:
        list(client_for(handler).iter_records(QUERY))
    message = str(raised.value)
    assert message.startswith("usage page 1: field data.0.results.0.duration_ms:")
    echoed = message[message.index("(got ") + len("(got ") : -1]
    assert len(echoed) <= 80
    assert echoed.endswith("…")


def test_an_upstream_echo_of_the_api_key_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        token = request.headers["Authorization"]
        return httpx.Response(400, json={"detail": f"bad header {token}"})

    with pytest.raises(UpstreamRejected) as raised:
        list(client_for(handler).iter_records(QUERY))
    assert "sk-secret-value" not in str(raised.value)
    assert "Bearer ***" in str(raised.value)


# --------------------------------------------------------------------------- the query


def test_for_period_appends_extra_dimensions_to_the_billing_grouping() -> None:
    period = BillingPeriod.parse("2026-10")
    query = UsageQuery.for_period(period, extra_group_by=("session_kind", "org_id"))
    assert query.group_by == ("org_id", "api_key_id", "user_id", "session_kind")
    assert query.params()["group_by"] == "org_id,api_key_id,user_id,session_kind"
    assert UsageQuery.for_period(period).group_by == ("org_id", "api_key_id", "user_id")


def test_the_query_rejects_unknown_dimensions_and_bucket_widths() -> None:
    period = BillingPeriod.parse("2026-10")
    with pytest.raises(ValueError, match="group_by dimension 'model'"):
        UsageQuery.for_period(period, extra_group_by=("model",))
    with pytest.raises(ValueError, match="bucket_width '1w'"):
        UsageQuery(start_time=0, end_time=1, bucket_width="1w")


def test_on_behalf_of_is_sent_when_configured() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=page([result()]))

    http = httpx.Client(transport=httpx.MockTransport(handler))
    client = UsageClient(http, BASE, SecretStr("k"), on_behalf_of="finance-bot")
    list(client.iter_records(QUERY))
    assert seen[0].headers["X-On-Behalf-Of"] == "finance-bot"
    list(client_for(handler).iter_records(QUERY))
    assert "X-On-Behalf-Of" not in seen[1].headers


def test_every_client_shares_one_tls_context_that_still_verifies() -> None:
    from billing.close.fetch import http_client
    from billing.hooks.sender import WebhookSender
    from billing.usage.client import tls_context

    context = tls_context()
    assert context is tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # a CA bundle is loaded
    settings = Settings(_env_file=None, mka1_api_key=SecretStr("k"))  # type: ignore[call-arg]
    with http_client(settings) as fetching, WebhookSender(5) as sending:
        for client in (fetching, sending._client):
            pool = client._transport._pool  # type: ignore[attr-defined]
            assert pool._ssl_context is context
