"""The usage client over httpx.MockTransport: pagination, errors, retries, exact decimals."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from billing.errors import (
    UpstreamAuthError,
    UpstreamRejected,
    UpstreamUnavailable,
    UsageContractError,
)
from billing.usage.client import UsageClient, UsageQuery

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
        return httpx.Response(200, json=page([result(duration_ms=2)]))

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
